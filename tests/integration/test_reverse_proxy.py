"""Reverse proxy mode (plain HTTP): enforce in the access phase, strip and inject headers, forward."""

import json

import pytest

from .conftest import token_bucket_policy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(start_edge, upstream):
    policy = token_bucket_policy("header:x-user", tps=1, burst=2, policy_id="per-user", rule="user-rps")
    return start_edge(policy, flags=[
        "--mode", "reverse_proxy",
        "--backend-url", upstream.url,
        "--strip-request-headers", "X-Client-Secret,Authorization",
        "--upstream-header", "X-Api-Key=sk-upstream-$1",
        "--upstream-header", "X-Org-Route=blue",
    ])


def test_allowed_request_reaches_upstream_with_injected_and_without_stripped_headers(proxy, upstream):
    r = proxy.request("POST", "/openai/v1/chat/completions?stream=false&x=%2F", body=b'{"model":"m"}',
                      headers={"X-User": "alice", "X-Client-Secret": "hunter2", "Authorization": "Bearer abc",
                               "Content-Type": "application/json", "X-Kept": "yes"})

    assert r.status == 200
    assert r.json() == {"upstream": "ok", "path": "/v1/chat/completions?stream=false&x=%2F"}
    # Verdict headers of an allow are added to the upstream's response.
    assert r.headers["RateLimit"].startswith('"user-rps";')
    assert r.headers.get("X-Fairvisor-Degraded") is None
    assert len(upstream.requests) == 1
    seen = {k.lower(): v for k, v in upstream.requests[0]["headers"].items()}
    assert upstream.requests[0]["method"] == "POST"
    assert upstream.requests[0]["body"] == b'{"model":"m"}'
    assert seen["x-api-key"] == "sk-upstream-$1"
    assert seen["x-org-route"] == "blue"
    assert seen["x-kept"] == "yes"
    assert seen["x-user"] == "alice"
    assert "x-client-secret" not in seen
    assert "authorization" not in seen


def test_rejected_request_never_reaches_upstream(proxy, upstream):
    statuses = [proxy.request("GET", "/v1/models", headers={"X-User": "bob"}).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert len(upstream.requests) == 2

    rejected = proxy.request("GET", "/v1/models", headers={"X-User": "bob"})
    assert rejected.status == 429
    assert rejected.headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
    assert int(rejected.headers["Retry-After"]) >= 1
    assert rejected.json()["reason"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 2

    # Another user is not affected, and a leading provider segment alone maps to "/".
    assert proxy.request("GET", "/anthropic", headers={"X-User": "carol"}).status == 200
    assert upstream.requests[-1]["path"] == "/"


def test_body_reaches_the_engine_when_an_llm_rule_needs_it(start_edge, upstream):
    policy = {
        "bundle_version": 1,
        "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/"}, "rules": [{
            "name": "org-tpm", "limit_keys": ["header:x-org"], "algorithm": "token_bucket_llm",
            "algorithm_config": {"tokens_per_minute": 10_000_000, "max_prompt_tokens": 1000},
        }]}}],
    }
    edge = start_edge(policy, flags=["--mode", "reverse_proxy", "--backend-url", upstream.url,
                                     "--llm-format", "openai"])

    def chat(words: int) -> bytes:
        return json.dumps({"model": "gpt-4o-mini", "max_tokens": 10,
                           "messages": [{"role": "user", "content": "word " * words}]}).encode()

    small = chat(20)
    ok = edge.request("POST", "/openai/v1/chat/completions", body=small,
                      headers={"X-Org": "acme", "Content-Type": "application/json"})
    assert ok.status == 200
    assert upstream.requests[-1]["body"] == small  # the shim read the body; nginx still forwards it

    big = chat(100_000)  # about 500 KB: read from nginx's buffer, well past max_prompt_tokens
    rejected = edge.request("POST", "/openai/v1/chat/completions", body=big,
                            headers={"X-Org": "acme", "Content-Type": "application/json"})
    assert rejected.status == 429
    assert rejected.headers["X-Fairvisor-Reason"] == "prompt_tokens_exceeded"
    assert len(upstream.requests) == 1
