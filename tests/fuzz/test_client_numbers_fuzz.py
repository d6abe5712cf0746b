"""Finding 6: any number a client sends (cost header, units query, max_tokens, usage) never raises and never fits a limit it exceeds."""

import json
import math
import urllib.parse

from hypothesis import given
from hypothesis import strategies as st

from pyengine.decision.numbers import CLIENT_MAX, POLICY_MAX, client_amount, client_tokens
from pyengine.protocol.messages import SURFACE_DESCRIBED, SURFACE_INLINE, Usage

from ..engine.helpers import decide, described, make_engine
from .budget import fuzz

BURST = 100
BUDGET = 1000
BUNDLE = {"bundle_version": 1, "policies": [
    {"id": "units", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "by-header", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 1, "burst": BURST, "cost_source": "header:x-cost"}},
        {"name": "by-query", "limit_keys": ["header:x-tenant"], "algorithm": "cost_based",
         "algorithm_config": {"budget": BUDGET, "period": "1d", "cost_key": "query:units",
                              "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}]}},
    {"id": "llm", "spec": {"selector": {"pathPrefix": "/v1/"}, "rules": [
        {"name": "tpm", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": 10_000, "tokens_per_day": 100_000}},
        {"name": "usd", "limit_keys": ["header:x-tenant"], "algorithm": "cost_based",
         "algorithm_config": {"budget": 5, "period": "1d", "cost_key": "llm_usd",
                              "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}]}}],
    "pricing": {"*": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 1000000}}}

numeric_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**400), 10**400).map(str),
    st.sampled_from(["1e303", "1e999", "-1e999", "inf", "-inf", "nan", "NaN", "Infinity", "1_000", " 7 ", "0x10",
                     "", "1e-400", "9" * 5000, "٣", "1e15", "1e16"]),
    st.text(alphabet="0123456789.eE+-_ ", max_size=30))


def fits(text: str, capacity: float) -> bool | None:
    """Whether a first request of this cost fits: None when the text is not a usable number (default cost)."""
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or value < 0:
        return None
    return value <= capacity


@fuzz(300)
@given(numeric_text, numeric_text)
def test_cost_header_and_units_query_never_raise_and_never_fit_above_capacity(cost, units):
    engine = make_engine(BUNDLE)
    v = described(engine, uri="/items?units=" + urllib.parse.quote(units, safe=""),
                  headers={"X-Tenant": "t", "X-Cost": cost})
    assert engine.metrics.engine_errors.values[("decide",)] == 0
    assert v.status in (0, 429)
    header_fits, query_fits = fits(cost.strip(), BURST), fits(units.strip(), BUDGET)
    if header_fits is False or query_fits is False:
        assert v.status == 429
    if v.status == 0:
        assert header_fits is not False and query_fits is not False


@fuzz(300)
@given(st.one_of(st.integers(-(10**30), 10**30), st.floats(), st.text(max_size=5), st.none()),
       st.sampled_from(["max_tokens", "max_completion_tokens"]), st.sampled_from([SURFACE_DESCRIBED, SURFACE_INLINE]))
def test_requested_max_tokens_of_any_size_rejects_or_reserves_within_the_limits(want, field, surface):
    engine = make_engine(BUNDLE)
    body = json.dumps({"model": "m", field: want, "messages": [{"role": "user", "content": "hi"}]}).encode()
    v = decide(engine, headers={"X-Tenant": "t"}, method="POST", uri="/v1/chat/completions", body=body,
               surface=surface)
    assert engine.metrics.engine_errors.values[("decide",)] == 0
    if surface == SURFACE_INLINE and isinstance(want, int) and not isinstance(want, bool) and want > 10_000:
        assert v.status == 429  # more than the TPM bucket holds: never allowed (the decision service ignores bodies)


@fuzz(300)
@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_usage_reports_of_any_size_settle_without_raising(prompt, completion):
    engine = make_engine(BUNDLE)
    body = json.dumps({"key": "t", "prompt_tokens": prompt, "completion_tokens": completion, "model": "m"}).encode()
    reply = engine.handle(Usage(body=body))
    assert reply.status == 200, reply.body
    assert engine.metrics.engine_errors.values[("usage",)] == 0


@fuzz(300)
@given(numeric_text, st.floats(min_value=0, max_value=POLICY_MAX))
def test_client_amount_is_finite_bounded_and_above_any_capacity_when_huge(text, default):
    value = client_amount(text, default)
    assert math.isfinite(value) and 0 <= value <= CLIENT_MAX
    assert client_amount(None, default) == default
    try:
        parsed = float(text)
    except ValueError:
        assert value == default
        return
    if parsed > POLICY_MAX:
        assert value > POLICY_MAX  # clamping never makes a too-large cost fit


@fuzz(300)
@given(st.one_of(st.integers(-(10**400), 10**400), st.floats(), st.none(), st.booleans(), st.text(max_size=3)))
def test_client_tokens_is_a_bounded_int(value):
    n = client_tokens(value)
    assert n.__class__ is int and 0 <= n <= CLIENT_MAX
    if isinstance(value, int) and not isinstance(value, bool) and value > POLICY_MAX:
        assert n > POLICY_MAX


positive = st.floats(min_value=0, exclude_min=True, allow_infinity=False, allow_nan=False)


@fuzz(300)
@given(positive, positive, positive, st.integers(1, 10**20), positive, positive, numeric_text)
def test_policy_numbers_that_pass_validation_never_overflow(rate, burst, budget, tpm, window_s, reset_min, cost):
    from pyengine.errors import PolicyError

    bundle = {"bundle_version": 1, "policies": [{"id": "p", "spec": {
        "selector": {"pathPrefix": "/"},
        "loop_detection": {"enabled": True, "window_seconds": window_s, "threshold_identical_requests": 2,
                           "action": "throttle"},
        "circuit_breaker": {"enabled": True, "spend_rate_threshold_per_minute": budget,
                            "auto_reset_after_minutes": reset_min},
        "rules": [
            {"name": "tb", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket",
             "algorithm_config": {"rps": rate, "burst": max(rate, burst), "cost_source": "header:x-cost"}},
            {"name": "cb", "limit_keys": ["header:x-tenant"], "algorithm": "cost_based",
             "algorithm_config": {"budget": budget, "period": "1mo", "cost_key": "header:x-cost",
                                  "staged_actions": [{"threshold_percent": 50, "action": "throttle", "delay_ms": 1},
                                                     {"threshold_percent": 100, "action": "reject"}]}},
            {"name": "llm", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
             "algorithm_config": {"tokens_per_minute": tpm, "tokens_per_day": tpm}}]}}]}
    try:
        engine = make_engine(bundle)
    except PolicyError:
        return
    for _ in range(2):
        v = decide(engine, headers={"X-Tenant": "t", "X-Cost": cost}, method="POST", uri="/v1/chat",
                   body=b'{"max_tokens": 99999999999999999999}')
        assert v.status in (0, 429)
    engine.upkeep()
    assert engine.metrics.engine_errors.values[("decide",)] == 0
