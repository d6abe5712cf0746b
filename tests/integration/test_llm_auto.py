"""One edge before every provider (FAIRVISOR_LLM_FORMAT=auto, the default) through real nginx.

Three mock upstreams stand for the three providers, each with its own backend URL and its own
injected key. Each provider's requests are routed to its backend only, metered on its own usage
fields, rejected in its own error shape (the official SDK raises its own rate-limit error) and
cut in its own finish events.
"""

from __future__ import annotations

import json

import pytest

from .test_llm_proxy import (DEFAULT_COMPLETION, MODELS, PROMPT, PROMPT_TOKENS, TPD, LLMEdge, MockUpstream,
                             assert_cut_stream, assert_provider_error, expected_text, llm_policy, output_text,
                             wait_until)

pytestmark = pytest.mark.integration


@pytest.fixture
def mocks():
    started = {p: MockUpstream() for p in ("openai", "anthropic", "gemini")}
    for mock in started.values():
        wait_until(mock.ready, 10.0, "the mock upstream to listen")
    yield started
    for mock in started.values():
        mock.proc.terminate()
        mock.proc.wait(timeout=10)
        mock.proc.stderr.close()


@pytest.fixture
def auto_edge(start_edge, mocks):
    # No --llm-format: auto is the reverse-proxy default. OpenAI uses the default backend.
    edge = start_edge(llm_policy(), flags=[
        "--mode", "reverse_proxy", "--backend-url", mocks["openai"].url,
        "--backend-url-anthropic", mocks["anthropic"].url, "--backend-url-gemini", mocks["gemini"].url,
        "--strip-request-headers", "Authorization,X-Api-Key,X-Goog-Api-Key",
        "--upstream-header", "X-Org=acme",
        "--openai-upstream-header", "Authorization=Bearer sk-openai",
        "--anthropic-upstream-header", "X-Api-Key=sk-ant",
        "--gemini-upstream-header", "X-Goog-Api-Key=g-key",
    ])
    return edge


def as_format(edge, fmt: str) -> LLMEdge:
    return LLMEdge(edge, fmt)


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_each_provider_reaches_its_own_backend_with_its_own_key(auto_edge, mocks, fmt):
    e = as_format(auto_edge, fmt)
    r = e.call(max_tokens=20, output_tokens=3, headers={"Authorization": "Bearer client", "X-Api-Key": "client"})
    assert r.status == 200, r.body
    assert output_text(fmt, False, r.body) == expected_text(3)
    for name, mock in mocks.items():
        assert len(mock.llm_requests()) == (1 if name == fmt else 0), name
    h = mocks[fmt].llm_requests()[-1]["headers"]
    own = {"openai": ("authorization", "Bearer sk-openai"), "anthropic": ("x-api-key", "sk-ant"),
           "gemini": ("x-goog-api-key", "g-key")}
    assert h[own[fmt][0]] == own[fmt][1]
    assert h["x-org"] == "acme"  # the global header goes to every provider
    for other, (name, _) in own.items():
        if other != fmt:
            assert name not in h, (fmt, name)  # another provider's key never leaves for this one
    e.wait_settled(1)
    assert e.tpd_remaining() == TPD - (PROMPT_TOKENS + 3)  # settled on this provider's usage fields


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_each_provider_stream_is_cut_in_its_own_format(auto_edge, fmt):
    e = as_format(auto_edge, fmt)
    r = e.call(stream=True, max_tokens=None, output_tokens=400)
    assert r.status == 200
    sent = assert_cut_stream(fmt, r.body)
    assert abs(sent - DEFAULT_COMPLETION) <= 32, sent
    e.wait_settled(1)
    used = TPD - e.tpd_remaining()
    assert PROMPT_TOKENS < used <= PROMPT_TOKENS + DEFAULT_COMPLETION + 32


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_each_provider_is_rejected_in_its_own_error_shape(auto_edge, mocks, fmt):
    e = as_format(auto_edge, fmt)
    assert_provider_error(fmt, e.call(max_tokens=10 * TPD), "tpd_exceeded")
    assert all(not m.llm_requests() for m in mocks.values())


def test_shape_without_prefix_routes_and_meters_as_anthropic(auto_edge, mocks):
    body = json.dumps({"model": MODELS["anthropic"], "max_tokens": 30, "stream": True,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()
    r = auto_edge.request("POST", "/v1/messages", body=body, fresh=True,
                          headers={"Content-Type": "application/json", "X-Tenant": "t1", "X-Mock-Output-Tokens": "5"})
    assert r.status == 200 and output_text("anthropic", True, r.body) == expected_text(5)
    assert len(mocks["anthropic"].llm_requests()) == 1 and not mocks["openai"].llm_requests()
    e = as_format(auto_edge, "anthropic")
    e.wait_settled(1)
    assert e.tpd_remaining() == TPD - (PROMPT_TOKENS + 5)


def test_plain_paths_go_to_the_default_backend_as_plain_http(auto_edge, mocks):
    r = auto_edge.request("GET", "/v1/models", headers={"Accept-Encoding": "gzip"}, fresh=True)
    assert r.status == 404  # the mock has no such route: what matters is who got it, and how
    seen = mocks["openai"].llm_requests()[-1]
    assert seen["path"] == "/v1/models"
    assert seen["headers"]["accept-encoding"] == "gzip"  # plain HTTP keeps the client's encoding
    assert "authorization" not in seen["headers"]  # no provider's key on a plain path


def test_official_sdks_against_one_auto_edge(auto_edge):
    import anthropic
    import openai

    port = auto_edge.port
    oai = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/openai/v1", api_key="k", max_retries=0,
                        default_headers={"X-Tenant": "sdk"})
    ant = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}/anthropic", api_key="k", max_retries=0,
                              default_headers={"X-Tenant": "sdk"})
    msgs = [{"role": "user", "content": PROMPT}]
    extra = {"X-Mock-Output-Tokens": "4"}
    try:
        text = oai.chat.completions.create(model=MODELS["openai"], messages=msgs, max_tokens=50,
                                           extra_headers=extra).choices[0].message.content
        assert text == expected_text(4)
        with ant.messages.stream(model=MODELS["anthropic"], max_tokens=50, messages=msgs, extra_headers=extra) as s:
            assert "".join(s.text_stream) == expected_text(4)
            assert s.get_final_message().usage.output_tokens == 4
        e = as_format(auto_edge, "openai")
        e.wait_settled(2)
        # Both were charged on the same tenant, each on its own provider's usage.
        assert e.tpd_remaining("sdk") == TPD - 2 * (PROMPT_TOKENS + 4)
        with pytest.raises(openai.RateLimitError):
            oai.chat.completions.create(model=MODELS["openai"], messages=msgs, max_tokens=10 * TPD)
        with pytest.raises(anthropic.RateLimitError):
            ant.messages.create(model=MODELS["anthropic"], max_tokens=TPD, messages=msgs)
    finally:
        oai.close()
        ant.close()


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_demo_policy_limits_gemini_v1_and_v1beta(start_edge, mocks, version):
    import pathlib
    demo = json.loads((pathlib.Path(__file__).resolve().parents[2] / "examples/demo/llm-policy.json").read_text())
    edge = start_edge(demo, flags=["--mode", "reverse_proxy", "--backend-url", mocks["gemini"].url])
    body = json.dumps({"contents": [{"parts": [{"text": PROMPT}]}], "generationConfig": {"maxOutputTokens": 30}})
    r = edge.request("POST", f"/{version}/models/{MODELS['gemini']}:streamGenerateContent?alt=sse", body=body.encode(),
                     headers={"X-Tenant": "acme", "X-Mock-Output-Tokens": "100"}, fresh=True)
    assert r.status == 200
    assert r.headers["RateLimit-Policy"]  # limited by the demo policy
    assert assert_cut_stream("gemini", r.body) <= 30 + 8  # and cut at its own max tokens


def test_per_model_limits_inside_one_tenant(start_edge, mocks):
    policy = {"bundle_version": 1, "policies": [{"id": "models", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "gpt4o", "limit_keys": ["header:x-tenant", "llm:model"], "match": {"llm:model": "gpt-4o"},
         "algorithm": "token_bucket_llm", "algorithm_config": {"tokens_per_minute": 300}},
        {"name": "per-model", "limit_keys": ["header:x-tenant", "llm:model"],
         "algorithm": "token_bucket_llm", "algorithm_config": {"tokens_per_minute": 1000}}]}}]}
    edge = start_edge(policy, flags=["--mode", "reverse_proxy", "--backend-url", mocks["openai"].url,
                                     "--backend-url-gemini", mocks["gemini"].url])

    def chat(model):
        body = json.dumps({"model": model, "max_tokens": 200, "messages": [{"role": "user", "content": PROMPT}]})
        return edge.request("POST", "/openai/v1/chat/completions", body=body.encode(), fresh=True,
                            headers={"X-Tenant": "t1", "X-Mock-Output-Tokens": "200"})

    assert chat("gpt-4o").status == 200  # 210 of gpt-4o's 300 (the upstream writes all 200)
    over = chat("gpt-4o")
    assert over.status == 429 and over.headers["X-Fairvisor-Reason"] == "tpm_exceeded"
    assert over.json()["error"]["type"] == "rate_limit_error"
    assert over.headers["RateLimit-Policy"] == '"gpt4o";q=300;w=60'
    assert chat("gpt-4o-mini").status == 200  # the same tenant, another model: its own counter
    gem = json.dumps({"contents": [{"parts": [{"text": PROMPT}]}], "generationConfig": {"maxOutputTokens": 200}})
    r = edge.request("POST", "/gemini/v1beta/models/gemini-2.0-flash:generateContent", body=gem.encode(), fresh=True,
                     headers={"X-Tenant": "t1"})
    assert r.status == 200 and r.headers["RateLimit-Policy"] == '"per-model";q=1000;w=60'


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_google_genai_sdk_against_the_auto_edge(auto_edge, mocks, api_version):
    from google import genai
    from google.genai import errors
    from google.genai.types import GenerateContentConfig, HttpOptions

    client = genai.Client(api_key="client-key", http_options=HttpOptions(
        base_url=f"http://127.0.0.1:{auto_edge.port}/gemini", api_version=api_version,
        headers={"X-Tenant": "sdk", "X-Mock-Output-Tokens": "5"}))
    resp = client.models.generate_content(model=MODELS["gemini"], contents=PROMPT,
                                          config=GenerateContentConfig(max_output_tokens=50))
    assert resp.text == expected_text(5) and resp.usage_metadata.candidates_token_count == 5
    seen = mocks["gemini"].llm_requests()[-1]
    assert seen["path"] == f"/{api_version}/models/{MODELS['gemini']}:generateContent"
    assert seen["headers"]["x-goog-api-key"] == "g-key"  # the edge's key, not the client's
    chunks = list(client.models.generate_content_stream(model=MODELS["gemini"], contents=PROMPT,
                                                        config=GenerateContentConfig(max_output_tokens=50)))
    assert "".join(c.text or "" for c in chunks) == expected_text(5)
    e = as_format(auto_edge, "gemini")
    e.wait_settled(2)
    assert e.tpd_remaining("sdk") == TPD - 2 * (PROMPT_TOKENS + 5)
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model=MODELS["gemini"], contents=PROMPT,
                                       config=GenerateContentConfig(max_output_tokens=10 * TPD))
    assert exc.value.code == 429 and exc.value.status == "RESOURCE_EXHAUSTED"
    # A stream over its allowance (the default 50 here) is cut in Gemini's own finish.
    cut = list(client.models.generate_content_stream(model=MODELS["gemini"], contents=PROMPT,
                                                     config={"http_options": {"headers": {"X-Mock-Output-Tokens": "400"}}}))
    assert cut[-1].candidates[0].finish_reason.name == "MAX_TOKENS"
    assert 0 < len("".join(c.text or "" for c in cut).split()) <= DEFAULT_COMPLETION + 8
