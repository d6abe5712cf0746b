"""No LLM request passes uncharged: real nginx + shim, real engine, the mock provider (or a plain upstream).

Each test is one way a client or an upstream answer tried to get past a token limit (issue
"Enforcement integrity", docs/security.md "LLM reverse proxy"): bodies over max_body_bytes or
compressed, a client's own X-Token-Estimate, `n` choices, answers too large to keep whole,
answers without usage, tool-call and reasoning streams, a client that leaves before the headers.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import time

import pytest

from ..llm.test_integrity import LARGE_ANSWER_TOKENS
from .conftest import wait_until
from .test_llm_proxy import (DEFAULT_COMPLETION, PROMPT, PROMPT_TOKENS, PROVIDERS, TPD, LLMEdge,
                             event_data, llm_policy, llm_request, mock_llm, sse_events)

pytestmark = pytest.mark.integration
__all__ = ["mock_llm"]  # the fixture, imported for pytest

MIB = 1024 * 1024
BIG_PROMPT_CAP = 200_000  # max_prompt_tokens of the "big" rule: a 0.8 MB prompt (4 chars/token)
SMALL_PROMPT_CAP = 1_000  # max_prompt_tokens of the "small" rule
SMALL_PER_REQUEST = 2_000  # max_tokens_per_request of the "small" rule
BIG_TPD = 50_000_000


def integrity_policy() -> dict:
    """`big` keyed on X-Tenant (large prompts), `small` on X-Small (a rule without its key is skipped)."""
    return {"bundle_version": 1, "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "big", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": 10_000_000, "tokens_per_day": BIG_TPD,
                              "max_prompt_tokens": BIG_PROMPT_CAP, "default_max_completion": DEFAULT_COMPLETION}},
        {"name": "small", "limit_keys": ["header:x-small"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": 100_000, "max_prompt_tokens": SMALL_PROMPT_CAP,
                              "max_tokens_per_request": SMALL_PER_REQUEST,
                              "default_max_completion": DEFAULT_COMPLETION}},
    ]}}]}


@pytest.fixture
def edge_for(start_edge, mock_llm):
    def start(fmt: str, policy: dict | None = None, backend: str | None = None, extra=()) -> LLMEdge:
        edge = start_edge(policy or integrity_policy(), flags=[
            "--mode", "reverse_proxy", "--backend-url", backend or mock_llm.url, "--llm-format", fmt, *extra])
        return LLMEdge(edge, fmt)
    return start


def post(e: LLMEdge, body: bytes, stream: bool = False, headers: dict | None = None, tenant="t1"):
    path, _ = llm_request(e.fmt, stream, None)
    h = {"Content-Type": "application/json", **({"X-Tenant": tenant} if tenant else {}), **(headers or {})}
    return e.edge.request("POST", path, headers=h, body=body, fresh=True)


def chat_body(fmt: str, prompt: str, stream: bool = False, **extra) -> bytes:
    _, body = llm_request(fmt, stream, None, prompt)
    doc = json.loads(body)
    doc.update(extra)
    return json.dumps(doc).encode()


def metric(e: LLMEdge, name: str, labels: str = "") -> float:
    text = e.edge.admin("/metrics").body.decode()
    found = re.findall(rf"^{name}{{{re.escape(labels)}}} (\S+)$" if labels else rf"^{name} (\S+)$", text, re.M)
    return float(found[0]) if found else 0.0


def big_tpd_used(e: LLMEdge) -> int:
    """Tokens charged today on the "big" rule, from a probe asking for more than the whole day."""
    r = post(e, chat_body(e.fmt, "x", max_tokens=2 * BIG_TPD, generationConfig={"maxOutputTokens": 2 * BIG_TPD}))
    assert r.status == 429 and r.headers["X-Fairvisor-Reason"] == "tpd_exceeded", r.body
    return BIG_TPD - int(r.headers["RateLimit-Remaining"])


# ---- finding 2: bodies the engine cannot read whole ---------------------------------------


@pytest.mark.parametrize("fmt", PROVIDERS)
def test_a_prompt_past_max_body_bytes_is_estimated_from_its_length(edge_for, mock_llm, fmt):
    # A 1 MiB frame can take the engine past the 100 ms default on a loaded machine, and a
    # timeout answers by the fail mode (open): that is the unreachable path, not this one.
    e = edge_for(fmt, extra=["--engine-timeout-ms", "3000"])
    under = post(e, chat_body(fmt, "y" * 900_000))  # read whole: 225,000 tokens
    assert under.status == 429 and under.headers["X-Fairvisor-Reason"] == "prompt_tokens_exceeded"
    over = post(e, chat_body(fmt, "y" * 1_100_000))  # cut at 1 MiB: once 0 tokens, now its bytes / 4
    assert over.status == 429, f"a body over max_body_bytes passed as a free prompt: {over.headers}"
    assert over.headers["X-Fairvisor-Reason"] == "prompt_tokens_exceeded"
    assert mock_llm.llm_requests() == []


@pytest.mark.parametrize("fmt", PROVIDERS)
def test_gzip_bodies_are_decompressed_with_a_bound(edge_for, mock_llm, fmt):
    e = edge_for(fmt)
    gz = {"Content-Encoding": "gzip"}
    small = post(e, gzip.compress(chat_body(fmt, PROMPT, max_tokens=20,
                                            generationConfig={"maxOutputTokens": 20})), headers=gz)
    assert small.status == 200, small.body
    # The prompt was read through the compression: 10 tokens reserved with the 20 of completion.
    assert int(small.headers["RateLimit-Remaining"]) == 10_000_000 - (PROMPT_TOKENS + 20)
    large = post(e, gzip.compress(chat_body(fmt, "y" * 900_000)), headers=gz)  # ~1 KB on the wire
    assert large.status == 429 and large.headers["X-Fairvisor-Reason"] == "prompt_tokens_exceeded"
    bomb = post(e, gzip.compress(chat_body(fmt, "y" * 30 * MIB)), headers=gz)  # inflates past the bound
    assert bomb.status == 429 and bomb.headers["X-Fairvisor-Reason"] == "prompt_tokens_exceeded"
    unknown = post(e, b"\x1b\x00 not decoded by the engine", headers={"Content-Encoding": "br"})
    assert unknown.status == 429 and unknown.headers["X-Fairvisor-Reason"] == "prompt_tokens_exceeded"
    assert len(mock_llm.llm_requests()) == 1


# ---- finding 5: the client's own X-Token-Estimate -----------------------------------------


@pytest.mark.parametrize("fmt", PROVIDERS)
def test_inline_the_body_is_the_estimate_not_the_client_header(edge_for, mock_llm, fmt):
    e = edge_for(fmt)
    body = chat_body(fmt, "z" * 8_000)  # 2,000 tokens, over the small rule's 1,000
    for estimate in ("0", "-5", "NaN", "1e400", "9" * 5000):
        r = post(e, body, tenant=None, headers={"X-Small": "s", "X-Token-Estimate": estimate})
        assert r.status == 429, f"X-Token-Estimate: {estimate[:10]} made the prompt free"
        assert r.headers["X-Fairvisor-Reason"] == "prompt_tokens_exceeded"
    ok = post(e, chat_body(fmt, PROMPT), tenant=None, headers={"X-Small": "s", "X-Token-Estimate": "999999"})
    assert ok.status == 200, ok.body  # nor can a header make an inline prompt larger than it is
    assert len(mock_llm.llm_requests()) == 1


# ---- finding 14a: n choices ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["openai", "gemini"])
def test_n_choices_reserve_n_completions(edge_for, fmt):
    e = edge_for(fmt)
    def body(n):
        if fmt == "openai":
            return chat_body(fmt, PROMPT, max_tokens=600, n=n)
        return chat_body(fmt, PROMPT, generationConfig={"maxOutputTokens": 600, "candidateCount": n})
    one = post(e, body(1), tenant=None, headers={"X-Small": "s"})
    assert one.status == 200, one.body
    four = post(e, body(4), tenant=None, headers={"X-Small": "s"})  # 2,400 completion tokens > 2,000
    assert four.status == 429 and four.headers["X-Fairvisor-Reason"] == "max_tokens_per_request_exceeded"
    huge = post(e, body(10**12), tenant=None, headers={"X-Small": "s"})  # clamped, not an overflow
    assert huge.status == 429 and huge.headers["X-Fairvisor-Reason"] == "max_tokens_per_request_exceeded"


# ---- finding 3: answers too large to keep whole, and answers without usage ----------------


@pytest.mark.parametrize("fmt", PROVIDERS)
def test_a_large_answer_is_charged_its_usage(edge_for, fmt):
    e = edge_for(fmt)
    # About 1.5 MB of JSON with log probabilities: far more than the 64 KiB head + tail the shim
    # keeps, which do not join into one JSON document (tests/llm/test_integrity.py checks it).
    n = LARGE_ANSWER_TOKENS[fmt]
    r = post(e, chat_body(fmt, PROMPT), headers={"X-Mock-Output-Tokens": str(n), "X-Mock-Logprobs": "1"})
    assert r.status == 200 and len(r.body) > 1_400_000
    e.wait_settled(1)
    assert metric(e, "fairvisor_llm_settlements_total", 'result="exact"') == 1
    assert big_tpd_used(e) == PROMPT_TOKENS + n


def test_an_answer_without_usage_settles_at_the_whole_reservation(edge_for, upstream):
    e = edge_for("openai", backend=upstream.url)  # answers 200 {"upstream": "ok"}: no usage at all
    r = post(e, chat_body("openai", PROMPT, max_tokens=300))
    assert r.status == 200 and r.json()["upstream"] == "ok"
    e.wait_settled(1)
    assert metric(e, "fairvisor_llm_settlements_total", 'result="unmetered"') == 1
    assert big_tpd_used(e) == PROMPT_TOKENS + 300  # never zero: the reservation stands


# ---- finding 4: every kind of output counts and is cut ------------------------------------


def output_events(fmt: str, body: bytes) -> tuple[int, str]:
    """(events carrying output, how the stream ended) of an SSE answer."""
    events = [event_data(ev) for ev in sse_events(body)]
    if fmt == "openai":
        assert events[-1] == "[DONE]"
        finish = events[-2]["choices"][0]["finish_reason"]
        deltas = [c["delta"] for d in events[:-2] for c in d["choices"]]
        return sum(1 for d in deltas if d.get("tool_calls") or d.get("reasoning_content") or d.get("refusal")
                   or d.get("content")), finish
    if fmt == "anthropic":
        deltas = [d for d in events if d["type"] == "content_block_delta"
                  and d["delta"]["type"] in ("input_json_delta", "thinking_delta", "text_delta")]
        stop = [d for d in events if d["type"] == "message_delta"][-1]["delta"]["stop_reason"]
        return len(deltas), stop
    return len(events) - 1, events[-1]["candidates"][0]["finishReason"]


CUT = {"openai": "length", "anthropic": "max_tokens", "gemini": "MAX_TOKENS"}
KINDS = [(f, k) for f in PROVIDERS for k in ("tool", "reasoning")] + [("openai", "refusal")]


@pytest.mark.parametrize(("fmt", "kind"), KINDS, ids=[f"{f}-{k}" for f, k in KINDS])
def test_tool_call_and_reasoning_streams_are_counted_and_cut(edge_for, fmt, kind):
    e = edge_for(fmt)
    r = post(e, chat_body(fmt, PROMPT, stream=True), stream=True,
             headers={"X-Mock-Output-Tokens": "400", "X-Mock-Output-Kind": kind})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    sent, finish = output_events(fmt, r.body)
    assert finish == CUT[fmt], f"a {kind} stream ran past its allowance ({sent} events)"
    # A tool call's JSON (Gemini's carries its name and an object per event) counts more characters
    # per token than words do, so it is cut earlier; never later than one event past the allowance.
    assert DEFAULT_COMPLETION // 10 <= sent <= DEFAULT_COMPLETION + 32, sent
    e.wait_settled(1)
    assert PROMPT_TOKENS < big_tpd_used(e) <= PROMPT_TOKENS + DEFAULT_COMPLETION + 32


# ---- finding 11: a client that leaves before the response headers -------------------------


def leave_before_headers(e: LLMEdge, delay_ms: int) -> None:
    """Sends a whole request, then closes while the upstream is still thinking."""
    path, body = llm_request(e.fmt, False, 200)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Tenant: t1\r\n"
            f"X-Mock-Headers-Delay-Ms: {delay_ms}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", e.port), timeout=5) as s:
        s.sendall(head + body)
        time.sleep(0.3)


@pytest.mark.parametrize("fmt", PROVIDERS)
def test_leaving_before_the_headers_still_pays_the_prompt(start_edge, mock_llm, fmt):
    edge = start_edge(llm_policy(), flags=["--mode", "reverse_proxy", "--backend-url", mock_llm.url,
                                           "--llm-format", fmt])
    e = LLMEdge(edge, fmt)
    leave_before_headers(e, 1500)
    wait_until(lambda: len(mock_llm.llm_requests()) == 1, 5, "the upstream to get the request")
    e.wait_settled(1)
    assert metric(e, "fairvisor_llm_settlements_total", 'result="aborted"') == 1
    assert e.tpd_remaining() == TPD - PROMPT_TOKENS  # the upstream ran it: not a refund


def test_an_unreachable_upstream_refunds_everything(start_edge):
    from .conftest import free_port
    edge = start_edge(llm_policy(), flags=["--mode", "reverse_proxy", "--backend-url",
                                           f"http://127.0.0.1:{free_port()}", "--llm-format", "openai"])
    e = LLMEdge(edge, "openai")
    r = e.call(max_tokens=200)
    assert r.status == 502
    e.wait_settled(1)
    assert metric(e, "fairvisor_llm_settlements_total", 'result="refunded"') == 1
    assert e.tpd_remaining() == TPD
