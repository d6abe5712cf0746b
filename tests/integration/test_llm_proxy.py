"""The LLM reverse proxy end to end: real nginx + shim, real engine, the mock provider upstream.

Per provider format (OpenAI, Anthropic, Gemini), streaming and not: reservation and
settlement on the provider's own usage (refund and charge, exact), tpm/tpd/budget rejections
in the provider's error shape, the streaming cutoff in the provider's own finish events, header
strip and inject as seen by the upstream, and the official openai and anthropic SDKs as clients.

Numbers: the mock's prompt tokens are ceil(prompt chars / 4) (the engine's starting ratio), so a
40-character prompt is exactly 10 tokens on both sides; each mock output token is one word.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from pyengine.devtools.llm_formats import token_text
from pyengine.llm.request import parse_llm_request

from .conftest import free_port, wait_until

pytestmark = pytest.mark.integration

PROVIDERS = ("openai", "anthropic", "gemini")
PROMPT = "Explain token buckets in one sentence!!!"  # 40 chars: exactly 10 prompt tokens
PROMPT_TOKENS = 10
TPM, TPD = 2_000, 5_000  # tokens per minute / per UTC day of the "tokens" rule
DEFAULT_COMPLETION = 50  # reserved (and the stream allowance) when a request names no max tokens
IN_USD_PER_MTOK, OUT_USD_PER_MTOK = 100, 1_000  # = micro-USD per token
BUDGET_USD = 1.0
CENT_MICROS = 10_000  # USD budgets show RateLimit numbers in cents
SETTLE_TIMEOUT_S = 5.0

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest", "gemini": "gemini-2.0-flash"}


def llm_policy() -> dict:
    """Tokens keyed on X-Tenant; a USD budget keyed on X-Budget (a rule whose key is absent is skipped)."""
    return {
        "bundle_version": 1,
        "policies": [{
            "id": "llm",
            "spec": {
                "selector": {"pathPrefix": "/"},
                "rules": [
                    {"name": "tokens", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
                     "algorithm_config": {"tokens_per_minute": TPM, "tokens_per_day": TPD,
                                          "default_max_completion": DEFAULT_COMPLETION}},
                    {"name": "spend", "limit_keys": ["header:x-budget"], "algorithm": "cost_based",
                     "algorithm_config": {"budget": BUDGET_USD, "period": "1d", "cost_key": "llm_usd",
                                          "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}},
                ],
            },
        }],
        # The test's own round prices: a bundle entry wins over the bundled catalogue, which
        # prices these real model names (and "*" only covers models neither names).
        "pricing": {m: {"input_usd_per_mtok": IN_USD_PER_MTOK, "output_usd_per_mtok": OUT_USD_PER_MTOK}
                    for m in (*MODELS.values(), "*")},
    }


def llm_request(fmt: str, stream: bool, max_tokens: int | None, prompt: str = PROMPT) -> tuple[str, bytes]:
    """(path on the edge, JSON body) of one chat request in the provider's format."""
    model = MODELS[fmt]
    if fmt == "gemini":
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        doc = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
        if max_tokens is not None:
            doc["generationConfig"] = {"maxOutputTokens": max_tokens}
        return f"/gemini/v1beta/models/{model}:{verb}", json.dumps(doc).encode()
    doc = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    if max_tokens is not None:
        doc["max_tokens"] = max_tokens
    return ("/openai/v1/chat/completions" if fmt == "openai" else "/anthropic/v1/messages"), json.dumps(doc).encode()


def sse_events(body: bytes) -> list[str]:
    """The events of an SSE body; fails unless it is a well-formed sequence of blank-line-ended events."""
    text = body.decode()
    assert text.endswith("\n\n"), f"stream does not end with a complete event: {text[-200:]!r}"
    events = text[:-2].split("\n\n")
    for ev in events:
        for line in ev.split("\n"):
            assert re.match(r"^(data|event|id|retry): ", line) or line.startswith(":"), f"bad SSE line {line!r}"
    return events


def event_data(ev: str):
    data = "".join(line[6:] for line in ev.split("\n") if line.startswith("data: "))
    return data if data == "[DONE]" else json.loads(data)


def output_text(fmt: str, stream: bool, body: bytes) -> str:
    """The generated text, as a client of that provider would assemble it."""
    if not stream:
        doc = json.loads(body)
        if fmt == "openai":
            return doc["choices"][0]["message"]["content"]
        if fmt == "anthropic":
            return doc["content"][0]["text"]
        return doc["candidates"][0]["content"]["parts"][0]["text"]
    parts = []
    for ev in sse_events(body):
        d = event_data(ev)
        if d == "[DONE]":
            continue
        if fmt == "openai":
            parts += [c["delta"].get("content") or "" for c in d["choices"]]
        elif fmt == "anthropic":
            if d["type"] == "content_block_delta":
                parts.append(d["delta"]["text"])
        else:
            parts += [p.get("text", "") for c in d["candidates"] for p in c["content"]["parts"]]
    return "".join(parts)


def expected_text(n: int) -> str:
    return "".join(token_text(i) for i in range(n))


def usd_micros(prompt_tokens: int, completion_tokens: int) -> int:
    return prompt_tokens * IN_USD_PER_MTOK + completion_tokens * OUT_USD_PER_MTOK


class MockUpstream:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "pyengine.devtools.mock_llm",
                                      "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def requests(self) -> list[dict]:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/_mock/requests")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def llm_requests(self) -> list[dict]:
        return [r for r in self.requests() if r["path"] != "/_mock/requests"]

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"mock upstream exited: {self.proc.stderr.read().decode()}")
        try:
            self.requests()
            return True
        except OSError:
            return False


@pytest.fixture
def mock_llm():
    mock = MockUpstream()
    wait_until(mock.ready, 10.0, "the mock upstream to listen")
    yield mock
    mock.proc.terminate()
    mock.proc.wait(timeout=10)
    mock.proc.stderr.close()


class LLMEdge:
    """An edge in reverse_proxy mode for one provider format, with helpers for its numbers."""

    def __init__(self, edge, fmt: str):
        self.edge, self.fmt = edge, fmt
        self.port = edge.port

    def call(self, stream: bool = False, max_tokens: int | None = 200, tenant: str | None = "t1",
             budget: str | None = None, output_tokens: int | None = None, headers: dict | None = None,
             prompt: str = PROMPT):
        path, body = llm_request(self.fmt, stream, max_tokens, prompt)
        h = {"Content-Type": "application/json"}
        if tenant:
            h["X-Tenant"] = tenant
        if budget:
            h["X-Budget"] = budget
        if output_tokens is not None:
            h["X-Mock-Output-Tokens"] = str(output_tokens)
        h.update(headers or {})
        return self.edge.request("POST", path, headers=h, body=body, fresh=True)

    def settlements(self) -> int:
        text = self.edge.admin("/metrics").body.decode()
        return sum(int(float(v)) for v in re.findall(r'^fairvisor_llm_settlements_total\{[^}]*\} (\S+)$', text, re.M))

    def wait_settled(self, count: int) -> None:
        wait_until(lambda: self.settlements() >= count, SETTLE_TIMEOUT_S, f"{count} settlement(s) in /metrics")
        assert self.settlements() == count

    def tpd_remaining(self, tenant: str = "t1") -> int:
        """Today's token headroom, read from a probe that asks for more than the whole day: a
        rejection is never charged, so probing changes nothing."""
        r = self.call(max_tokens=10 * TPD, tenant=tenant)
        assert r.status == 429, r.body
        assert r.headers["X-Fairvisor-Reason"] == "tpd_exceeded"
        return int(r.headers["RateLimit-Remaining"])


@pytest.fixture
def llm_edge(start_edge, mock_llm):
    def start(fmt: str) -> LLMEdge:
        edge = start_edge(llm_policy(), flags=[
            "--mode", "reverse_proxy", "--backend-url", mock_llm.url, "--llm-format", fmt,
            "--strip-request-headers", "Authorization,X-Client-Secret",
            "--upstream-header", "X-Api-Key=sk-upstream-key",
        ])
        return LLMEdge(edge, fmt)
    return start


def test_prompt_is_exactly_ten_tokens_for_every_format():
    for fmt in PROVIDERS:
        path, body = llm_request(fmt, False, 5)
        assert parse_llm_request(body, path, None).prompt_tokens == PROMPT_TOKENS


# ---- settlement on the provider's usage --------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fmt", PROVIDERS)
def test_short_answer_refunds_the_unused_reservation_exactly(llm_edge, fmt, stream):
    e = llm_edge(fmt)
    r = e.call(stream=stream, max_tokens=200, output_tokens=7)
    assert r.status == 200, r.body
    assert output_text(fmt, stream, r.body) == expected_text(7)
    # While in flight the whole reservation (10 prompt + 200 completion) was held; the headers
    # show the most restrictive limit, the (fresh, full) minute bucket.
    assert int(r.headers["RateLimit-Remaining"]) == TPM - (PROMPT_TOKENS + 200)
    e.wait_settled(1)
    assert e.tpd_remaining() == TPD - (PROMPT_TOKENS + 7)


@pytest.mark.parametrize("fmt", PROVIDERS)
def test_longer_answer_than_reserved_is_charged(llm_edge, fmt):
    e = llm_edge(fmt)
    # No max tokens: DEFAULT_COMPLETION is reserved; the upstream writes 300 tokens anyway.
    r = e.call(stream=False, max_tokens=None, output_tokens=300)
    assert r.status == 200, r.body
    assert output_text(fmt, False, r.body) == expected_text(300)
    assert int(r.headers["RateLimit-Remaining"]) == TPM - (PROMPT_TOKENS + DEFAULT_COMPLETION)
    e.wait_settled(1)
    assert e.tpd_remaining() == TPD - (PROMPT_TOKENS + 300)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fmt", PROVIDERS)
def test_upstream_error_refunds_everything(llm_edge, fmt, stream):
    e = llm_edge(fmt)
    r = e.call(stream=stream, max_tokens=200, headers={"X-Mock-Status": "500"})
    assert r.status == 500
    assert "mock upstream error 500" in r.body.decode()  # the provider's own error passes through
    e.wait_settled(1)
    assert e.tpd_remaining() == TPD


# ---- rejections ---------------------------------------------------------------------------


def assert_provider_error(fmt: str, r, reason: str) -> None:
    assert r.status == 429
    assert r.headers["X-Fairvisor-Reason"] == reason
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    if fmt == "openai":
        assert set(doc) == {"error"}
        assert doc["error"]["type"] == ("insufficient_quota" if reason == "budget_exhausted" else "rate_limit_error")
        assert doc["error"]["code"] == reason
        assert doc["error"]["message"]
    elif fmt == "anthropic":
        assert doc["type"] == "error"
        assert doc["error"]["type"] == "rate_limit_error"
        assert doc["error"]["message"]
    else:
        assert doc["error"]["code"] == 429
        assert doc["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert doc["error"]["message"]


@pytest.mark.parametrize("fmt", PROVIDERS)
def test_tpm_then_tpd_exceeded_in_the_provider_error_shape(llm_edge, mock_llm, fmt):
    e = llm_edge(fmt)
    first = e.call(max_tokens=1_500, output_tokens=1_500)
    assert first.status == 200, first.body
    assert output_text(fmt, False, first.body) == expected_text(1_500)

    # 1510 of the 2000-token minute are spent; the day (5000) still has room for 1510 more.
    second = e.call(max_tokens=1_500)
    assert_provider_error(fmt, second, "tpm_exceeded")
    assert int(second.headers["RateLimit-Limit"]) == TPM
    assert second.headers["RateLimit-Policy"] == f'"tokens";q={TPM};w=60'

    # More than the day has left is refused on TPD before TPM is even looked at.
    third = e.call(max_tokens=4_000)
    assert_provider_error(fmt, third, "tpd_exceeded")
    e.wait_settled(1)
    assert int(third.headers["RateLimit-Remaining"]) == TPD - (PROMPT_TOKENS + 1_500)
    assert len(mock_llm.llm_requests()) == 1  # rejections never reached the upstream


@pytest.mark.parametrize("fmt", PROVIDERS)
def test_budget_exhausted_on_usd_cost_from_pricing(llm_edge, mock_llm, fmt):
    e = llm_edge(fmt)
    budget_micros = int(BUDGET_USD * 1_000_000)
    r = e.call(max_tokens=400, output_tokens=400, tenant=None, budget="acme")
    assert r.status == 200, r.body
    e.wait_settled(1)
    spent = usd_micros(PROMPT_TOKENS, 400)
    # The largest completion that still fits the budget, and one more token.
    fits = (budget_micros - spent - PROMPT_TOKENS * IN_USD_PER_MTOK) // OUT_USD_PER_MTOK
    over = e.call(max_tokens=fits + 1, tenant=None, budget="acme")
    assert_provider_error(fmt, over, "budget_exhausted")
    assert int(over.headers["RateLimit-Remaining"]) == (budget_micros - spent) // CENT_MICROS
    ok = e.call(max_tokens=fits, output_tokens=fits, tenant=None, budget="acme")
    assert ok.status == 200, ok.body
    assert int(ok.headers["RateLimit-Remaining"]) == 0
    assert len(mock_llm.llm_requests()) == 2


# ---- streaming cutoff ---------------------------------------------------------------------


def assert_cut_stream(fmt: str, body: bytes) -> int:
    """Checks the stream ends in the provider's own finish events; returns the tokens sent."""
    events = [event_data(ev) for ev in sse_events(body)]
    if fmt == "openai":
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert all(c["finish_reason"] is None for d in events[:-2] for c in d["choices"])
        return sum(1 for d in events[:-2] for c in d["choices"] if c["delta"].get("content"))
    if fmt == "anthropic":
        kinds = [d["type"] for d in events]
        assert kinds[:2] == ["message_start", "content_block_start"]
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert events[-2]["delta"]["stop_reason"] == "max_tokens"
        assert kinds.count("message_stop") == 1 and kinds.count("message_delta") == 1
        return kinds.count("content_block_delta")
    assert events[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert all("finishReason" not in d["candidates"][0] for d in events[:-1])
    return sum(1 for d in events[:-1] if d["candidates"][0]["content"]["parts"][0]["text"])


@pytest.mark.parametrize("delay_ms", [0, 2], ids=["burst", "paced"])
@pytest.mark.parametrize("fmt", PROVIDERS)
def test_stream_is_cut_at_the_allowance_in_the_provider_format(llm_edge, fmt, delay_ms):
    e = llm_edge(fmt)
    r = e.call(stream=True, max_tokens=None, output_tokens=400, headers={"X-Mock-Token-Delay-Ms": str(delay_ms)})
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers.get("Content-Length") is None
    sent = assert_cut_stream(fmt, r.body)
    assert abs(sent - DEFAULT_COMPLETION) <= 32, sent
    assert output_text(fmt, True, r.body).startswith(expected_text(sent))
    e.wait_settled(1)
    # Only what was sent is charged (the shim counted it), never the 400 the upstream wrote.
    used = TPD - e.tpd_remaining()
    assert PROMPT_TOKENS < used <= PROMPT_TOKENS + DEFAULT_COMPLETION + 32


def test_openai_stream_usage_chunk_asked_for_the_client_is_hidden(llm_edge):
    e = llm_edge("openai")
    r = e.call(stream=True, max_tokens=100, output_tokens=12)
    events = [event_data(ev) for ev in sse_events(r.body)]
    assert events[-1] == "[DONE]"
    assert all("usage" not in d for d in events[:-1])  # the engine's include_usage chunk was dropped
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    e.wait_settled(1)
    assert e.tpd_remaining() == TPD - (PROMPT_TOKENS + 12)  # settled on the provider's usage


# ---- what reaches the upstream ------------------------------------------------------------


@pytest.mark.parametrize("fmt", PROVIDERS)
def test_strip_and_inject_as_seen_by_the_upstream(llm_edge, mock_llm, fmt):
    e = llm_edge(fmt)
    r = e.call(max_tokens=20, output_tokens=3, headers={"Authorization": "Bearer client-jwt",
                                                         "X-Client-Secret": "hunter2", "Accept-Encoding": "gzip"})
    assert r.status == 200
    seen = mock_llm.llm_requests()[-1]
    expected_path = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
                     "gemini": f"/v1beta/models/{MODELS['gemini']}:generateContent"}[fmt]
    assert seen["path"] == expected_path
    h = seen["headers"]
    assert h["x-api-key"] == "sk-upstream-key"
    assert "authorization" not in h and "x-client-secret" not in h
    assert "accept-encoding" not in h  # identity, so the engine can read usage in the body
    assert h["x-tenant"] == "t1"
    assert "x-api-key" not in {k.lower() for k in r.headers}  # the upstream key never reaches the client


# ---- official SDKs as clients -------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_openai_sdk_chat_completions(llm_edge, stream):
    import openai

    e = llm_edge("openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{e.port}/openai/v1", api_key="client-key", max_retries=0,
                           default_headers={"X-Tenant": "sdk"})
    msgs = [{"role": "user", "content": PROMPT}]
    extra = {"X-Mock-Output-Tokens": "9"}
    try:
        if stream:
            chunks = list(client.chat.completions.create(model=MODELS["openai"], messages=msgs, max_tokens=100,
                                                         stream=True, extra_headers=extra))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert all(c.usage is None for c in chunks)
            assert chunks[-1].choices[0].finish_reason == "stop"
        else:
            resp = client.chat.completions.create(model=MODELS["openai"], messages=msgs, max_tokens=100,
                                                  extra_headers=extra)
            text = resp.choices[0].message.content
            assert resp.usage.completion_tokens == 9 and resp.usage.prompt_tokens == PROMPT_TOKENS
        assert text == expected_text(9)
        e.wait_settled(1)
        with pytest.raises(openai.RateLimitError) as exc:
            client.chat.completions.create(model=MODELS["openai"], messages=msgs, max_tokens=10 * TPD)
        assert exc.value.status_code == 429
        assert exc.value.code == "tpd_exceeded"
        assert exc.value.response.headers["RateLimit-Remaining"] == str(TPD - PROMPT_TOKENS - 9)
    finally:
        client.close()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_sdk_messages(llm_edge, stream):
    import anthropic

    e = llm_edge("anthropic")
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{e.port}/anthropic", api_key="client-key",
                                 max_retries=0, default_headers={"X-Tenant": "sdk"})
    msgs = [{"role": "user", "content": PROMPT}]
    extra = {"X-Mock-Output-Tokens": "9"}
    try:
        if stream:
            with client.messages.stream(model=MODELS["anthropic"], max_tokens=100, messages=msgs,
                                        extra_headers=extra) as s:
                text = "".join(s.text_stream)
                final = s.get_final_message()
        else:
            final = client.messages.create(model=MODELS["anthropic"], max_tokens=100, messages=msgs,
                                           extra_headers=extra)
            text = final.content[0].text
        assert text == expected_text(9)
        assert final.usage.output_tokens == 9 and final.stop_reason == "end_turn"
        e.wait_settled(1)
        with pytest.raises(anthropic.RateLimitError) as exc:
            # (TPD, not more: the SDK refuses a non-stream max_tokens over ~21k client-side)
            client.messages.create(model=MODELS["anthropic"], max_tokens=TPD, messages=msgs)
        assert exc.value.status_code == 429
        assert exc.value.response.headers["X-Fairvisor-Reason"] == "tpd_exceeded"
    finally:
        client.close()
