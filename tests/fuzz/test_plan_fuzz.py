"""Property: compiled route plans (pyengine.decision.plan) decide like the plain reference loop, on random bundles.

Each example draws a bundle (one to three policies over overlapping routes; enforce and shadow
modes; token buckets, fixed-cost budgets with staged actions and LLM token limits; `match`
rules, fallbacks, every on_missing_key, loop detection, breakers; bundle kill switches, an
expiring global shadow, a kill-switch override) and a request sequence with clock gaps. Two
engines on FakeClocks take the same sequence, one through its compiled plans, one through
tests/engine/reference.py. Verdicts, the store's state and the would-reject counters must
stay identical after every request.
"""

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.engine.helpers import decide, make_engine, unsigned_jwt
from tests.engine.reference import use_reference

from pyengine.clock import FakeClock

from .budget import fuzz

KEY_SETS = (["ip:address"], ["header:x-api-key"], ["jwt:org_id"], ["jwt:org_id", "ip:address"])
API_KEYS = ("vip", "k1", "k2")
MATCH_VALUES = {"ip:address": ("10.0.0.1",), "header:x-api-key": API_KEYS, "jwt:org_id": ("org-0",)}
CHAT = json.dumps({"model": "gpt-4o-mini", "max_tokens": 40,
                   "messages": [{"role": "user", "content": "hello there " * 20}]}).encode()

token_bucket = st.fixed_dictionaries({
    "algorithm": st.just("token_bucket"),
    "algorithm_config": st.fixed_dictionaries({"tokens_per_second": st.sampled_from([0.5, 1, 2]),
                                               "burst": st.integers(2, 4)})})
cost_budget = st.fixed_dictionaries({
    "algorithm": st.just("cost_based"),
    "algorithm_config": st.fixed_dictionaries({
        "budget": st.integers(3, 12), "period": st.just("5m"), "cost_key": st.just("fixed"),
        "fixed_cost": st.just(1),
        "staged_actions": st.just([{"threshold_percent": 50, "action": "warn"},
                                   {"threshold_percent": 75, "action": "throttle", "delay_ms": 20},
                                   {"threshold_percent": 100, "action": "reject"}])})})
llm_tokens = st.fixed_dictionaries({
    "algorithm": st.just("token_bucket_llm"),
    "algorithm_config": st.fixed_dictionaries({"tokens_per_minute": st.sampled_from([300, 900])})})


@st.composite
def rules(draw, name: str):
    rule = {"name": name, "limit_keys": draw(st.sampled_from(KEY_SETS)),
            **draw(st.one_of(token_bucket, cost_budget, llm_tokens)),
            "on_missing_key": draw(st.sampled_from(["skip", "shared", "reject"]))}
    if draw(st.booleans()):  # `match` names one of the rule's own limit keys
        key = draw(st.sampled_from(rule["limit_keys"]))
        rule["match"] = {key: draw(st.sampled_from(MATCH_VALUES[key]))}
    return rule


@st.composite
def policies(draw, n: int):
    spec = {"selector": {"pathPrefix": draw(st.sampled_from(["/", "/v1/", "/v1/chat"]))},
            "mode": draw(st.sampled_from(["enforce", "enforce", "shadow"])),
            "rules": [draw(rules(f"r{i}")) for i in range(draw(st.integers(0 if n else 1, 3)))]}
    if draw(st.booleans()):
        spec["selector"]["methods"] = ["POST"]
    if draw(st.booleans()) or not spec["rules"]:
        fallback = draw(rules("fallback"))
        fallback.pop("match", None)
        spec["fallback_limit"] = fallback
    if draw(st.integers(0, 3)) == 0:
        spec["loop_detection"] = {"enabled": True, "window_seconds": 30, "threshold_identical_requests": 3,
                                  "action": draw(st.sampled_from(["reject", "throttle", "warn"]))}
    if draw(st.integers(0, 3)) == 0:
        spec["circuit_breaker"] = {"enabled": True, "spend_rate_threshold_per_minute": 4,
                                   "auto_reset_after_minutes": 1}
    return {"id": f"p{n}", "spec": spec}


@st.composite
def bundles(draw):
    bundle = {"bundle_version": 1, "policies": [draw(policies(n)) for n in range(draw(st.integers(1, 3)))]}
    if draw(st.integers(0, 2)) == 0:
        bundle["kill_switches"] = [{"scope_key": "header:x-api-key", "scope_value": "k2",
                                    "route": draw(st.sampled_from([None, "/v1/chat"])), "reason": "fuzz",
                                    "expires_at": draw(st.sampled_from([None, "2026-01-01T00:02:00Z"]))}]
    if draw(st.integers(0, 2)) == 0:
        bundle["global_shadow"] = {"enabled": True,
                                   "expires_at": draw(st.sampled_from([None, "2026-01-01T00:01:00Z"]))}
    if draw(st.integers(0, 4)) == 0:
        bundle["kill_switch_override"] = {"enabled": True, "expires_at": "2026-01-01T00:01:30Z"}
    return bundle


request = st.fixed_dictionaries({
    "X-Original-Method": st.sampled_from(["POST", "POST", "GET"]),
    "X-Original-URI": st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/other"]),
    "X-Forwarded-For": st.sampled_from(["10.0.0.1", "10.0.0.2"]),
}, optional={
    "Authorization": st.sampled_from(["org-0", "org-1"]).map(lambda o: "Bearer " + unsigned_jwt({"org_id": o})),
    "X-Api-Key": st.sampled_from(API_KEYS),
})
step = st.tuples(request, st.sampled_from([0.0, 0.0, 0.0, 0.05, 0.6, 3.0, 40.0]))


def _seen(engine):
    return (sorted(engine.store.as_dict().items()), sorted(engine.metrics.would_reject.values.items()))


@fuzz(150)
@given(bundle=bundles(), steps=st.lists(step, min_size=1, max_size=40))
def test_compiled_plan_decides_like_the_reference(bundle, steps):
    planned, reference = make_engine(bundle, clock=FakeClock()), make_engine(bundle, clock=FakeClock())
    use_reference(reference)
    for headers, gap_s in steps:
        planned.clock.advance(gap_s)
        reference.clock.advance(gap_s)
        a = decide(planned, headers=headers, method="POST", uri="/v1/decision", body=CHAT, surface=0)
        b = decide(reference, headers=headers, method="POST", uri="/v1/decision", body=CHAT, surface=0)
        assert (a.status, a.body, a.delay_ms, bool(a.reservation_id)) == \
            (b.status, b.body, b.delay_ms, bool(b.reservation_id))
        assert [v if v != a.reservation_id else "" for v in a.headers] == \
            [v if v != b.reservation_id else "" for v in b.headers]
        assert _seen(planned) == _seen(reference)
