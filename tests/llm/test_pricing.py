"""Spend that matches the bill: the price catalogue, its precedence, and cached/reasoning tokens,
against hand-computed figures (USD per million tokens = micro-USD per token)."""

import json

import msgspec
import pytest

from pyengine.clock import FakeClock
from pyengine.devtools import llm_formats as fmt
from pyengine.llm.pricing import CATALOGUE_DATE, Price, Pricing, catalogue_price, load_catalogue
from pyengine.llm.providers import Anthropic, Gemini, OpenAI, OpenAIResponses
from pyengine.policy.schema import ModelPrice
from pyengine.protocol.messages import Settle, Usage as UsageMsg
from tests.engine.helpers import decide, make_engine, rule_key


def test_the_catalogue_is_dated_sourced_and_covers_the_three_providers():
    cat = load_catalogue()
    assert cat["date"] == CATALOGUE_DATE and len(CATALOGUE_DATE) == 10
    assert set(cat["source"]) == {"openai", "anthropic", "gemini"}
    providers = {e["provider"] for e in cat["models"].values()}
    assert providers == {"openai", "anthropic", "gemini"}
    for name, e in cat["models"].items():
        msgspec.convert({k: v for k, v in e.items() if k != "provider"}, ModelPrice)  # valid bundle entries


def test_precedence_bundle_then_catalogue_then_star():
    p = Pricing({"gpt-4o": ModelPrice(1, 2), "*": ModelPrice(7, 8)})
    assert (p.price("gpt-4o").source, p.price("gpt-4o").input) == ("bundle", 1_000_000)
    assert p.price("gpt-4o-mini").source == "catalogue"
    assert p.price("my-local-llama").source == "bundle" and p.price("my-local-llama").output == 8_000_000
    assert Pricing({}).price("my-local-llama") is None  # unknown_model_price
    assert Pricing({}).price(None) is None


@pytest.mark.parametrize("model,entry", [
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest name it starts with
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("gemini-2.0-flash-lite", "gemini-2.0-flash-lite"),
    ("gpt-4o2", None),  # a name, not a string prefix
    ("o1x", None),
])
def test_dated_and_aliased_ids_take_their_catalogue_entry(model, entry):
    p = catalogue_price(model)
    assert (p.model if p else None) == entry


def test_costs_are_exact_integers_rounded_up_once():
    p = Price("m", "bundle", 0.15, 0.6)
    assert p.usd_micros(100, 0) == 15  # 0.15 x 100 as floats is 15.000000000000002
    assert p.usd_micros(1, 0) == 1  # 0.15 micro-USD rounds up to 1
    assert p.usd_micros(3, 1) == 2  # 0.45 + 0.6 = 1.05 -> 2
    assert p.usd_micros(0, 0) == 0


# Hand-computed: each provider's own usage fields, cached and reasoning tokens included.
CASES = {
    # gpt-4o: 4,000 uncached x $2.50 + 6,000 cached x $1.25 + 2,000 out (1,500 reasoning) x $10
    "openai": (OpenAI, "gpt-4o", json.dumps({"usage": {
        "prompt_tokens": 10_000, "completion_tokens": 2_000, "prompt_tokens_details": {"cached_tokens": 6_000},
        "completion_tokens_details": {"reasoning_tokens": 1_500}}}), 10_000, 2_000, 10_000 + 7_500 + 20_000),
    # gpt-4o-mini, Responses API: 500 x 0.15 + 500 cached x 0.075 + 300 out x 0.60 = 292.5 -> 293
    "responses": (OpenAIResponses, "gpt-4o-mini", json.dumps({"object": "response", "usage": {
        "input_tokens": 1_000, "output_tokens": 300, "input_tokens_details": {"cached_tokens": 500},
        "output_tokens_details": {"reasoning_tokens": 100}}}), 1_000, 300, 293),
    # claude-sonnet-4: 1,000 x $3 + 20,000 cache reads x $0.30 + 5,000 cache writes x $3.75 + 800 x $15
    "anthropic": (Anthropic, "claude-sonnet-4", json.dumps({"type": "message", "usage": {
        "input_tokens": 1_000, "cache_read_input_tokens": 20_000, "cache_creation_input_tokens": 5_000,
        "output_tokens": 800}}), 26_000, 800, 3_000 + 6_000 + 18_750 + 12_000),
    # gemini-2.5-flash: 4,000 x $0.30 + 8,000 cached x $0.075 + (500 + 1,500 thoughts) x $2.50
    "gemini": (Gemini, "gemini-2.5-flash", json.dumps({"usageMetadata": {
        "promptTokenCount": 12_000, "cachedContentTokenCount": 8_000, "candidatesTokenCount": 500,
        "thoughtsTokenCount": 1_500}}), 12_000, 2_000, 1_200 + 600 + 5_000),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_usage_fields_and_cost_per_provider(name):
    adapter, model, body, prompt, completion, micros = CASES[name]
    u = adapter.usage(body.encode())
    assert (u.prompt_tokens, u.completion_tokens) == (prompt, completion)
    price = catalogue_price(model)
    assert price.usd_micros(u.prompt_tokens, u.completion_tokens, u.cached_input_tokens,
                            u.cache_write_tokens) == micros


def test_an_anthropic_stream_reads_cache_counts_from_message_start():
    events = list(fmt.anthropic_stream("claude-3-5-haiku", 40, 5))
    events[0][1]["message"]["usage"].update({"cache_read_input_tokens": 1_000, "cache_creation_input_tokens": 200})
    raw = "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events).encode()
    u = Anthropic.usage(raw)
    assert (u.prompt_tokens, u.cached_input_tokens, u.cache_write_tokens, u.completion_tokens) == (1_240, 1_000, 200, 5)


SPEND = {"bundle_version": 1, "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
    {"name": "usd", "limit_keys": ["header:x-tenant"], "algorithm": "cost_based",
     "algorithm_config": {"budget": 100, "period": "1d", "cost_key": "llm_usd",
                          "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}]}}]}


def spent_micros(engine) -> int:
    rule = engine.bundle.policies[0].rules[0]
    return 100_000_000 - rule.budget.peek(rule_key("llm", "usd", "t1"), engine.clock.now_s())


@pytest.mark.parametrize("name", sorted(CASES))
def test_settlement_charges_the_hand_computed_cost(name):
    adapter, model, body, _prompt, _completion, micros = CASES[name]
    engine = make_engine(SPEND, clock=FakeClock(), mode="reverse_proxy", backend_url="http://127.0.0.1:9")
    uri = {"openai": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages",
           "gemini": f"/v1beta/models/{model}:generateContent"}[name]
    req = json.dumps({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}).encode()
    v = decide(engine, headers={"X-Tenant": "t1"}, method="POST", uri=uri, body=req)
    assert v.status == 0
    engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=0, cut=False, tail=body.encode()))
    assert spent_micros(engine) == micros


def test_a_usage_report_prices_cached_tokens_too():
    engine = make_engine(SPEND, clock=FakeClock())
    report = {"key": "t1", "model": "claude-sonnet-4", "prompt_tokens": 26_000, "completion_tokens": 800,
              "cached_input_tokens": 20_000, "cache_write_tokens": 5_000}
    assert engine.handle(UsageMsg(body=json.dumps(report).encode())).status == 200
    assert spent_micros(engine) == 39_750
    bad = engine.handle(UsageMsg(body=json.dumps({**report, "cached_input_tokens": -1}).encode()))
    assert bad.status == 400


def test_cached_counts_larger_than_the_prompt_cannot_make_it_cheaper_than_free():
    p = catalogue_price("claude-sonnet-4")
    assert p.usd_micros(10, 0, cached_input_tokens=10**9, cache_write_tokens=10**9) == 3  # 10 x 0.30
