"""Properties of LLM charging: no request body reads as a free prompt, and no upstream answer settles
below what contract §3 says (docs/security.md, "LLM reverse proxy"), whatever the bytes."""

import gzip
import itertools
import json
import zlib

import msgspec
from hypothesis import event, given
from hypothesis import strategies as st

from pyengine.clock import FakeClock
from pyengine.devtools import llm_formats as fmt
from pyengine.llm.providers import ADAPTERS
from pyengine.llm.request import parse_llm_request
from pyengine.protocol.messages import Decide, HelloReply, Settle

from ..engine.helpers import make_engine
from .budget import fuzz
from .test_bodies_fuzz import check_request, llm_shaped

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "gemini": "/v1/models/m:generateContent"}
# One LLM rule; a bucket small enough that its float state counts single tokens exactly.
POLICY = {"bundle_version": 1, "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
    {"name": "tpm", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
     "algorithm_config": {"tokens_per_minute": 10_000_000, "max_completion_tokens": 4000}}]}}]}
ENGINES = {name: make_engine(POLICY, clock=FakeClock(), mode="reverse_proxy", backend_url="http://127.0.0.1:9",
                             llm_format=name) for name in ADAPTERS}
_nonce = itertools.count()

ENCODINGS = {
    None: lambda b: b,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": lambda b: b,  # not decoded by the engine: its size cannot be bounded
    "gzip ": lambda b: b[::-1],  # says gzip, is not
}
prompts = st.text(max_size=3000) | st.builds(lambda c, n: c * n, st.characters(), st.integers(0, 300_000))
llm_bodies = st.one_of(
    st.builds(lambda p, extra: json.dumps({"model": "m", "messages": [{"role": "user", "content": p}], **extra}).encode(),
              prompts, st.dictionaries(st.sampled_from(["n", "max_tokens", "stream", "system"]), llm_shaped, max_size=2)),
    st.builds(lambda p: json.dumps({"contents": [{"parts": [{"text": p}]}]}).encode(), prompts),
    llm_shaped.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=2000),
)


def ceil_div(a: int, b: float) -> int:
    return int(a / b + 0.999)


@fuzz(200)
@given(llm_bodies, st.sampled_from(sorted(ENCODINGS, key=str)), st.floats(0, 1), st.sampled_from([1.0, 4.0, 12.0]),
       st.one_of(st.none(), st.text(max_size=30), st.just("0"), st.just("-1"), st.just("9" * 400)))
def test_no_body_reads_as_a_free_prompt(plain, encoding, kept, ratio, estimate):
    """Cut anywhere, compressed or not, lying about its encoding: the estimate is never below
    the whole plain body's own, and a body not read whole costs at least its bytes."""
    wire = ENCODINGS[encoding](plain)
    sent = wire[:int(len(wire) * kept)] if kept < 1 else wire
    req = parse_llm_request(sent, PATHS["openai"], estimate, lambda _m: ratio, body_bytes=len(wire),
                            encoding=encoding)
    check_request(req)
    whole = parse_llm_request(plain, PATHS["openai"], None, lambda _m: ratio)
    if whole.readable:
        assert req.prompt_tokens >= whole.prompt_tokens
        assert req.choices >= 1 and (not req.readable or req.choices == whole.choices)
    if req.readable:
        assert sent == wire  # a body cut short is never parsed as if it were whole
    else:
        assert req.prompt_tokens >= ceil_div(len(wire), ratio)
    # Inline (a body was sent) the client's header changes nothing.
    assert req.prompt_tokens == parse_llm_request(sent, PATHS["openai"], None, lambda _m: ratio,
                                                  body_bytes=len(wire), encoding=encoding).prompt_tokens


def decide_with(engine, name: str, body: bytes, body_bytes: int, encoding: str | None = None):
    """Decide for a new tenant, as the shim sends it (through msgpack), with the body's real length."""
    hello = engine.hello_reply
    values = {"x-tenant": f"t{next(_nonce)}".encode(), "content-encoding": encoding.encode() if encoding else None}
    msg = Decide(generation=hello.generation, surface=1, method=b"POST", uri=PATHS[name].encode(), host=b"h",
                 remote_addr=b"127.0.0.1", headers=[values.get(h) for h in hello.headers], body=body,
                 body_bytes=body_bytes)
    reply = engine.decide(msgspec.msgpack.decode(msgspec.msgpack.encode(msg), type=Decide))
    assert not isinstance(reply, HelloReply)
    return reply


@fuzz(100)
@given(llm_bodies, st.sampled_from(sorted(ENCODINGS, key=str)), st.integers(0, 4096))
def test_an_allowed_request_reserves_at_least_its_body_estimate(plain, encoding, max_body_bytes):
    engine = ENGINES["openai"]
    wire = ENCODINGS[encoding](plain)
    v = decide_with(engine, "openai", wire[:max_body_bytes], len(wire), encoding)
    whole = parse_llm_request(plain, PATHS["openai"], None, engine.llm_proxy.estimator.prompt.get)
    if v.status == 0 and v.reservation_id:
        r = engine.reservations.take(v.reservation_id)
        assert r.charges[0].amount >= whole.prompt_tokens + 1  # the prompt, plus at least one completion token
        assert v.new_body is None or (max_body_bytes >= len(wire) and encoding is None)


# ---- upstream answers ---------------------------------------------------------------------

GARBAGE = st.sampled_from(["5", -1, True, None, 1.5, 2**70, [], {}])


def with_usage(doc: dict, mode: str, garbage) -> dict:
    """The provider's usage kept, removed, or with every count replaced by `garbage`."""
    doc = dict(doc)
    for holder in (doc, doc.get("message")):
        if not isinstance(holder, dict):
            continue
        for key in ("usage", "usageMetadata"):
            if key in holder:
                if mode == "missing":
                    del holder[key]
                elif mode == "garbage":
                    holder[key] = {k: garbage for k in holder[key]}
    return doc


def answer(name: str, stream: bool, kind: str, n: int, logprobs: bool, mode: str, garbage) -> bytes:
    if not stream:
        build = {"openai": fmt.openai_response, "anthropic": fmt.anthropic_response, "gemini": fmt.gemini_response}
        return json.dumps(with_usage(build[name]("m", 40, n, kind=kind, logprobs=logprobs), mode, garbage)).encode()
    if name == "openai":
        events = ((None, e) for e in fmt.openai_stream("m", 40, n, include_usage=True, kind=kind))
    elif name == "anthropic":
        events = fmt.anthropic_stream("m", 40, n, kind=kind)
    else:
        events = ((None, e) for e in fmt.gemini_stream("m", 40, n, kind=kind))
    out = "".join((f"event: {ev}\n" if ev else "") + f"data: {json.dumps(with_usage(d, mode, garbage))}\n\n"
                  for ev, d in events)
    return (out + ("data: [DONE]\n\n" if name == "openai" else "")).encode()


def kept(body: bytes, settle_bytes: int = 64 * 1024) -> bytes:
    """What response.lua keeps for Settle: the whole body, or its first and last settle_bytes/2."""
    half = settle_bytes // 2
    return body if len(body) <= settle_bytes else body[:half] + body[-half:]


@fuzz(200)
@given(st.sampled_from(sorted(ADAPTERS)), st.booleans(), st.sampled_from(fmt.KINDS), st.integers(0, 2500),
       st.booleans(), st.sampled_from(["intact", "missing", "garbage"]), GARBAGE,
       st.sampled_from([200, 200, 200, 201, 0, 302, 400, 429, 500, 503]), st.booleans(), st.booleans(),
       st.integers(0, 6000), st.sampled_from([-1, 0, 1, 5000]), st.floats(0, 1), st.integers(1, 5000))
def test_no_answer_settles_below_the_contract(name, stream, kind, n, logprobs, mode, garbage, status, cut, aborted,
                                              counted, sent, end, max_tokens):
    """Large, odd, cut, aborted, usage missing or garbage: settlement never raises and charges
    exactly the provider's usage when it is readable, else never less than contract §3 says."""
    engine, adapter = ENGINES[name], ADAPTERS[name]
    body = json.dumps({"model": "m", "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": f"{next(_nonce):0160d}"}]}).encode()
    v = decide_with(engine, name, body, len(body))
    assert v.status == 0 and v.reservation_id
    r = engine.reservations.get(v.reservation_id)
    rule, key, reserved = r.charges[0]
    prompt_estimate = r.prompt_estimate_tokens
    left = rule.limiter.peek(key, engine.clock.now_s())
    raw = answer(name, stream, kind, n, logprobs, mode, garbage)
    whole = end == 1 or not aborted  # an aborted answer may stop anywhere
    shown = raw if whole else raw[:int(len(raw) * end)]
    reply = engine.handle(Settle(reservation_id=v.reservation_id, status=status, counted_tokens=counted, cut=cut,
                                 tail=kept(shown), client_aborted=aborted, counted_chars=counted * 4,
                                 upstream_bytes_sent=sent))
    assert reply.status == 200
    charged = reserved + left - rule.limiter.peek(key, engine.clock.now_s())
    ok = 200 <= status < 400
    if status == 0:
        event("no response")
        assert charged == (prompt_estimate + counted if aborted and sent != 0 else 0)
    elif not ok and not (aborted and counted):
        event("refunded")
        assert charged == 0  # not reached or failed: nothing consumed
    elif ok and mode == "intact" and whole and (not cut or adapter.running_totals):
        event("exact, large" if len(raw) > 64 * 1024 else "exact")
        assert charged == 40 + n  # the provider's own usage, exactly
    elif ok and (cut or (aborted and (counted or (stream and shown)))):
        event("sent")
        # What was sent; or, when the provider's count arrived in what was kept, that count.
        assert charged >= counted or mode == "intact"
    elif ok and mode != "intact" and whole:
        event("unmetered")
        assert charged >= max(reserved, prompt_estimate + counted)  # unmetered: never below the reservation
    else:
        event("other")
        assert charged >= 0

