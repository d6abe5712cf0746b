"""The engine half of LLM enforcement integrity: unread bodies, client estimates, n choices, usage of
large answers, every kind of output counted, and what each settlement charges."""

import gzip
import json
import re
import zlib

import msgspec
import pytest

from pyengine.clock import FakeClock
from pyengine.devtools import llm_formats as fmt
from pyengine.llm.body import MAX_DECODED_BYTES, read_body
from pyengine.llm.providers import BY_NAME, Anthropic, Gemini, OpenAI
from pyengine.llm.request import MAX_CHOICES, estimate_tokens, parse_llm_request
from pyengine.llm.sse import MAX_TOKENS, keyed_object
from pyengine.protocol.messages import SURFACE_DESCRIBED, Settle

from ..engine.helpers import decide, hdr, make_engine

CHAT = "/v1/chat/completions"


def chat(prompt: str = "x" * 400, **extra) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}], **extra}).encode()


# ---- bodies the engine cannot read whole (finding 2) --------------------------------------


def test_a_truncated_body_is_estimated_from_its_real_length():
    full = chat("y" * 2_000_000)
    whole = parse_llm_request(full, CHAT, None)
    cut = parse_llm_request(full[:1024 * 1024], CHAT, None, body_bytes=len(full))
    assert not cut.readable and cut.prompt_chars == 0  # nothing to teach the estimator with
    assert cut.prompt_tokens == -(-len(full) // 4) >= whole.prompt_tokens == 500_000
    # An older shim that does not say the length: what was sent still counts, never zero.
    assert parse_llm_request(full[:1024 * 1024], CHAT, None).prompt_tokens == 1024 * 1024 // 4


@pytest.mark.parametrize("body", [b"not json at all", b"[1, 2, 3]", b'{"messages": [', b"\xff\xfe{}", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_estimated_from_its_bytes(body):
    req = parse_llm_request(body, CHAT, None)
    assert not req.readable and req.prompt_tokens == -(-len(body) // 4) > 0


def test_gzip_and_deflate_bodies_are_read_through():
    body = chat("z" * 4000, max_tokens=77)
    for encoded, coding in ((gzip.compress(body), "gzip"), (gzip.compress(body), "X-GZIP "),
                            (zlib.compress(body), "deflate"), (zlib.compress(body)[2:-4], "deflate")):
        req = parse_llm_request(encoded, CHAT, None, body_bytes=len(encoded), encoding=coding)
        assert (req.prompt_tokens, req.max_output_tokens, req.readable) == (1000, 77, True), coding


@pytest.mark.parametrize(("data", "coding", "sent_bytes"), [
    (gzip.compress(b"y" * (MAX_DECODED_BYTES + 1)), "gzip", -1),  # past the bound: a bomb
    (gzip.compress(chat()) * 2, "gzip", -1),  # a second member we would not read
    (gzip.compress(chat())[:-9], "gzip", -1),  # cut short
    (gzip.compress(chat()), "gzip", 10**6),  # the shim says it sent less than all
    (b"\x1f\x8b garbage", "gzip", -1),
    (chat(), "br", -1), (chat(), "gzip, br", -1), (chat(), "zstd", -1),
])
def test_a_compressed_body_that_cannot_be_read_whole_is_unbounded(data, coding, sent_bytes):
    assert read_body(data, sent_bytes, coding).unbounded
    req = parse_llm_request(data, CHAT, None, body_bytes=sent_bytes, encoding=coding)
    assert req.prompt_tokens == MAX_TOKENS and not req.readable


PROMPT_CAP = {"bundle_version": 1, "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
    {"name": "tpm", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
     "algorithm_config": {"tokens_per_minute": 100_000, "max_prompt_tokens": 1000, "max_tokens_per_request": 3000,
                          "default_max_completion": 100}},
    {"name": "usd", "limit_keys": ["header:x-budget"], "algorithm": "cost_based",
     "algorithm_config": {"budget": 1.0, "period": "1d", "cost_key": "llm_usd",
                          "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}]}}],
    "pricing": {"*": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 10}}}
T = {"X-Tenant": "t"}


def proxy(llm_format="openai"):
    return make_engine(PROMPT_CAP, clock=FakeClock(), mode="reverse_proxy", backend_url="http://127.0.0.1:9",
                       llm_format=llm_format)


def test_the_engine_asks_for_content_encoding_and_never_rewrites_an_unread_body():
    engine = proxy()
    assert "content-encoding" in engine.hello_reply.headers
    gz = gzip.compress(chat("x" * 400, stream=True))
    v = decide(engine, headers={**T, "Content-Encoding": "gzip"}, method="POST", uri=CHAT, body=gz)
    assert v.status == 0 and v.allowance_tokens == 100
    assert v.new_body is None  # the upstream gets the gzip bytes it was sent, not our plain JSON
    plain = decide(engine, headers=T, method="POST", uri=CHAT, body=chat("x" * 400, stream=True))
    assert json.loads(plain.new_body)["stream_options"]["include_usage"] is True
    v = decide(engine, headers={**T, "Content-Encoding": "br"}, method="POST", uri=CHAT, body=gz)
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "prompt_tokens_exceeded"


# ---- X-Token-Estimate (finding 5) ---------------------------------------------------------


@pytest.mark.parametrize(("header", "tokens"), [
    ("250", 250), (" 7 ", 7), ("0", 0), ("-5", None), ("1.5", None), ("NaN", None), ("inf", None), ("1e9", None),
    ("", None), (None, None), ("٣", None), ("9" * 5000, MAX_TOKENS), (str(MAX_TOKENS + 1), MAX_TOKENS),
])
def test_client_estimates_are_clamped_and_never_negative(header, tokens):
    assert estimate_tokens(header) == tokens


def test_the_estimate_header_counts_only_where_the_body_is_not_seen():
    assert parse_llm_request(chat("x" * 8000), CHAT, "0").prompt_tokens == 2000  # inline: the body
    assert parse_llm_request(chat("x" * 40), CHAT, "999").prompt_tokens == 10
    assert parse_llm_request(None, CHAT, "999").prompt_tokens == 999  # decision service: no body
    assert parse_llm_request(None, CHAT, "junk").prompt_tokens == 0
    engine = make_engine(PROMPT_CAP, clock=FakeClock())  # the decision service
    headers = {"X-Original-Method": "POST", "X-Original-URI": CHAT, **T}
    v = decide(engine, headers={**headers, "X-Token-Estimate": "1001"}, method="POST", uri="/v1/decision",
               surface=SURFACE_DESCRIBED)
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "prompt_tokens_exceeded"
    inline = proxy()
    v = decide(inline, headers={**T, "X-Token-Estimate": "0"}, method="POST", uri=CHAT, body=chat("x" * 8000))
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "prompt_tokens_exceeded"


# ---- n choices (finding 14a) --------------------------------------------------------------


@pytest.mark.parametrize(("extra", "choices"), [
    ({"n": 3}, 3), ({"n": 2.0}, 2), ({"n": 1.5}, 2), ({"n": "4"}, 4), ({"n": 0}, 1), ({"n": -3}, 1),
    ({"n": True}, 1), ({"n": None}, 1), ({"n": 10**30}, MAX_CHOICES), ({"n": "NaN"}, 1), ({"n": [2]}, 1),
    ({"generationConfig": {"candidateCount": 5}}, 5), ({"generationConfig": {"candidateCount": "x"}}, 1),
])
def test_choices_are_read_and_clamped(extra, choices):
    assert parse_llm_request(chat(**extra), CHAT, None).choices == choices


def test_n_choices_reserve_n_completions_on_tokens_and_money():
    engine = proxy()
    v = decide(engine, headers={**T, "X-Budget": "b"}, method="POST", uri=CHAT, body=chat(max_tokens=200, n=3))
    assert v.status == 0 and v.allowance_tokens == 600
    r = engine.reservations.get(v.reservation_id)
    assert [amount for _, _, amount in r.charges] == [100 + 600, 100 * 1 + 600 * 10]
    v = decide(engine, headers=T, method="POST", uri=CHAT, body=chat(max_tokens=1000, n=3))
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "max_tokens_per_request_exceeded"


# ---- usage of answers too large to keep whole (finding 3) ---------------------------------


def head_tail(body: bytes, keep: int = 64 * 1024) -> bytes:
    """What the shim keeps of a body (response.lua): the whole, or the first and last keep/2 bytes."""
    return body if len(body) <= keep else body[:keep // 2] + body[-(keep // 2):]


# About 1.5 MB answers whose kept head and tail do not join into JSON (checked below).
LARGE_ANSWER_TOKENS = {"openai": 14_000, "openai_responses": 14_000, "anthropic": 40_005, "gemini": 13_000}


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_usage_of_a_large_answer_is_found_in_its_tail(name):
    build = {"openai": fmt.openai_response, "openai_responses": fmt.responses_response,
             "anthropic": fmt.anthropic_response, "gemini": fmt.gemini_response}[name]
    body = json.dumps(build("m", 12, LARGE_ANSWER_TOKENS[name], logprobs=True)).encode()
    assert len(body) > 1_400_000
    kept = head_tail(body)
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(kept)  # the head and tail do not join into one JSON document
    u = BY_NAME[name].usage(kept)
    assert (u.prompt_tokens, u.completion_tokens) == (12, LARGE_ANSWER_TOKENS[name])


def test_only_a_real_key_is_taken_for_usage():
    text = json.dumps({"choices": [{"message": {"content": 'say "usage": {"completion_tokens": 0}'}}]})
    assert keyed_object(b"x" * 10 + text.encode(), b"usage") is None
    real = b'{"a":"' + b"q" * 40_000 + b'","usage":{"prompt_tokens":3,"completion_tokens":9}}'
    assert keyed_object(real[-30_000:], b"usage") == {"prompt_tokens": 3, "completion_tokens": 9}
    assert keyed_object(b'{"usage":{"a":"}"},"usage":{"b":1}}', b"usage") == {"b": 1}  # the last one
    assert keyed_object(b'{"x":1,"usage" : {"c":{"d":2}}}', b"usage") == {"c": {"d": 2}}
    assert keyed_object(b'{"usage":{"open":' + b"[" * 10_000, b"usage") is None
    assert keyed_object(b',"usage":{' * 100_000, b"usage") is None  # bounded work


# ---- every kind of output counts (finding 4) ----------------------------------------------


def sse(events) -> str:
    return "".join((f"event: {n}\n" if n else "") + f"data: {json.dumps(d)}\n\n" for n, d in events)


def counted_chars(adapter, stream: str) -> int:
    """What the shim counts: the length of group 1 of every match, event by event."""
    return sum(len(m.group(1)) for ev in stream.split("\n\n") for m in re.finditer(adapter.count_regex, ev))


@pytest.mark.parametrize("kind", fmt.KINDS)
def test_every_kind_of_output_is_counted_in_every_format(kind):
    n = 40
    out = "".join(fmt.pieces(kind, n))
    streams = {
        OpenAI: sse((None, e) for e in fmt.openai_stream("m", 5, n, include_usage=False, kind=kind)),
        Anthropic: sse(fmt.anthropic_stream("m", 5, n, kind=kind)),
        Gemini: sse((None, e) for e in fmt.gemini_stream("m", 5, n, kind=kind)),
    }
    for adapter, stream in streams.items():
        chars = counted_chars(adapter, stream)
        # At least the output itself (JSON escapes and tool names only add to it), never 3x it.
        assert len(out) <= chars < 3 * len(out) + 200, (adapter.name, kind, chars, len(out))


def test_a_gemini_function_call_counts_its_name_and_whole_args():
    ev = json.dumps({"candidates": [{"content": {"parts": [{"functionCall": {
        "name": "f", "args": {"q": "a}b", "deep": {"x": [1, {"y": "z"}]}}}}]}}]})
    assert [m.group(1) for m in re.finditer(Gemini.count_regex, ev)] == [
        "f", '{"q": "a}b", "deep": {"x": [1, {"y": "z"}]}}']


# ---- what each settlement charges (findings 3, 4, 11) -------------------------------------


def settle(engine, **fields) -> int:
    """Reserve 100 prompt + 200 completion, settle with `fields`; returns the tokens charged."""
    v = decide(engine, headers=T, method="POST", uri=CHAT, body=chat(max_tokens=200))
    assert v.status == 0
    rule, key, reserved = engine.reservations.get(v.reservation_id).charges[0]
    left = rule.limiter.peek(key, engine.clock.now_s())
    msg = {"status": 200, "counted_tokens": 0, "cut": False, **fields}
    assert engine.handle(Settle(reservation_id=v.reservation_id, **msg)).status == 200
    return reserved + left - rule.limiter.peek(key, engine.clock.now_s())


def test_unreadable_usage_keeps_the_whole_reservation():
    engine = proxy()
    assert settle(engine, tail=b'{"choices":[]}') == 300  # no usage: never zero
    assert settle(engine, tail=b'{"usage":{"completion_tokens":"9"}}') == 300
    assert settle(engine, tail=b"", counted_tokens=500) == 600  # what was counted, when more
    assert settle(engine, tail=json.dumps(fmt.openai_response("m", 100, 7)).encode()) == 107
    # A client that left after the headers of a non-stream answer, before its usage: unmetered too.
    assert settle(engine, tail=b'{"choices":[{"message":{"content":"ab', client_aborted=True) == 300
    assert settle(engine, tail=b"data: {}\n\n", client_aborted=True, counted_tokens=30) == 130
    assert engine.metrics.llm_settlements.values[("unmetered",)] == 4


def test_a_stream_broken_off_before_any_output_charges_the_prompt_only():
    # The upstream stalled after its first (role-only) event and nginx gave up: the request did
    # not complete, the shim passed and counted every event, none carried output.
    engine = proxy()
    first = b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    assert settle(engine, tail=first, client_aborted=True) == 100
    assert settle(engine, tail=b"event: message_start\ndata: {}\n\n", client_aborted=True) == 100
    # Not aborted, the same stream is a 2xx answer without usage: unmetered.
    assert settle(engine, tail=first) == 300
    assert engine.metrics.llm_settlements.values[("counted",)] == 2


def test_leaving_before_the_headers_charges_the_prompt_once_the_upstream_had_it():
    engine = proxy()
    assert settle(engine, status=0, client_aborted=True, upstream_bytes_sent=812) == 100
    assert settle(engine, status=0, client_aborted=True, upstream_bytes_sent=-1) == 100  # not told
    assert settle(engine, status=0, client_aborted=True, upstream_bytes_sent=0) == 0  # never reached
    assert settle(engine, status=0, client_aborted=True, upstream_bytes_sent=0, counted_tokens=9) == 0
    assert settle(engine, status=0, upstream_bytes_sent=812) == 0  # nginx answered itself
    assert settle(engine, status=502, upstream_bytes_sent=0) == 0
    assert settle(engine, status=503, upstream_bytes_sent=812) == 0  # it failed: nothing consumed
    assert engine.metrics.llm_settlements.values[("aborted",)] == 2
