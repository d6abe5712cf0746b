"""Spend that matches the bill, through real nginx: each provider's cached prompt tokens priced at
the catalogue's cached rate, on an auto edge before the mock upstream (which reports them)."""

from __future__ import annotations

import json

import pytest

from .test_llm_proxy import PROMPT, PROMPT_TOKENS, LLMEdge, mock_llm  # noqa: F401 (mock_llm: a fixture)

pytestmark = pytest.mark.integration

OUTPUT, CACHED = 300, 6  # of the 10 prompt tokens, 6 come from the cache
CENT = 10_000  # micro-USD: USD budgets show RateLimit numbers in cents


def policy(cost_micros: int) -> dict:
    """Two budgets the request charges alike: `upper` has a cent left over iff the charge is at
    most cost_micros, `lower` has none left iff it is at least cost_micros: together, exactly."""
    def rule(name, header, budget_micros):
        return {"name": name, "limit_keys": [f"header:{header}"], "algorithm": "cost_based",
                "algorithm_config": {"budget": budget_micros / 10**6, "period": "1d", "cost_key": "llm_usd",
                                     "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}
    return {"bundle_version": 1, "policies": [{"id": "spend", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        rule("upper", "x-a", cost_micros + CENT), rule("lower", "x-b", cost_micros + CENT - 1)]}}]}


# (path, body, catalogue prices: input, cached input, output, USD per million tokens)
CALLS = {
    "openai": ("/openai/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]},
               (2.5, 1.25, 10.0)),
    "responses": ("/openai/v1/responses", {"model": "gpt-4o-mini", "input": PROMPT}, (0.15, 0.075, 0.6)),
    "anthropic": ("/anthropic/v1/messages", {"model": "claude-sonnet-4-20250514",
                                             "messages": [{"role": "user", "content": PROMPT}]}, (3.0, 0.3, 15.0)),
    "gemini": ("/gemini/v1beta/models/gemini-2.5-flash:generateContent",
               {"contents": [{"parts": [{"text": PROMPT}]}]}, (0.3, 0.075, 2.5)),
}


def cents_left(edge, header: str) -> int:
    """A budget's headroom (RateLimit-Remaining, in cents), from a probe far over it: never charged."""
    body = json.dumps({"model": "gpt-4o", "max_tokens": 10_000_000, "messages": []}).encode()
    r = edge.request("POST", "/openai/v1/chat/completions", body=body, headers={header: "t1"}, fresh=True)
    assert r.status == 429 and r.headers["X-Fairvisor-Reason"] == "budget_exhausted"
    return int(r.headers["RateLimit-Remaining"])


@pytest.mark.parametrize("name", sorted(CALLS))
def test_cached_prompt_tokens_are_priced_at_the_cached_rate(start_edge, mock_llm, name):  # noqa: F811
    path, doc, (p_in, p_cached, p_out) = CALLS[name]
    # Hand-computed, rounded up to whole micro-USD once.
    micros = -(-round(((PROMPT_TOKENS - CACHED) * p_in + CACHED * p_cached + OUTPUT * p_out) * 10**6) // 10**6)
    edge = start_edge(policy(micros), flags=["--mode", "reverse_proxy", "--backend-url", mock_llm.url])
    doc = {**doc, "max_tokens": OUTPUT} if "contents" not in doc else \
        {**doc, "generationConfig": {"maxOutputTokens": OUTPUT}}
    if name == "responses":
        doc = {k: v for k, v in doc.items() if k != "max_tokens"} | {"max_output_tokens": OUTPUT}
    r = edge.request("POST", path, body=json.dumps(doc).encode(), fresh=True, headers={
        "X-A": "t1", "X-B": "t1", "X-Mock-Output-Tokens": str(OUTPUT), "X-Mock-Cached-Tokens": str(CACHED)})
    assert r.status == 200, r.body
    LLMEdge(edge, "openai").wait_settled(1)
    assert cents_left(edge, "X-A") == 1  # charged at most the hand figure
    assert cents_left(edge, "X-B") == 0  # and at least it
