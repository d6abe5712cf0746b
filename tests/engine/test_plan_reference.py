"""The compiled route plans (pyengine.decision.plan) decide exactly like the plain reference loop.

Two engines on the same policy and the same frozen clock take the same request sequence; one
decides with its compiled plans, the other with tests/engine/reference.py. Verdicts and the
state left in the store must be identical, through allows, warnings, throttles, `match` rules,
skipped rules (no key) and rejections that undo earlier charges. (tests/fuzz/test_plan_fuzz.py
does the same over random bundles.)
"""

import json
import random
from pathlib import Path

import pytest

from pyengine.clock import FakeClock

from .helpers import decide, make_engine, unsigned_jwt
from .reference import use_reference

FIXTURES = Path(__file__).parent.parent / "fixtures" / "policies"

# Two enforce policies on the same routes, small limits so that every branch is reached in a
# few hundred requests: a cost budget with staged warn/throttle/reject, a header-keyed bucket
# that only some requests carry, and a `match` rule.
TIGHT = {
    "bundle_version": 1,
    "policies": [
        {"id": "tight-a", "spec": {"selector": {"pathPrefix": "/v1/"}, "rules": [
            {"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
             "algorithm_config": {"tokens_per_second": 2, "burst": 4}},
            {"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
             "algorithm_config": {"tokens_per_second": 1, "burst": 3}},
            {"name": "units", "limit_keys": ["jwt:org_id"], "algorithm": "cost_based",
             "algorithm_config": {"budget": 40, "period": "5m", "cost_key": "fixed", "fixed_cost": 1,
                                  "staged_actions": [
                                      {"threshold_percent": 50, "action": "warn"},
                                      {"threshold_percent": 75, "action": "throttle", "delay_ms": 20},
                                      {"threshold_percent": 100, "action": "reject"}]}},
        ]}},
        {"id": "tight-b", "spec": {"selector": {"pathPrefix": "/v1/chat"}, "rules": [
            {"name": "vip", "limit_keys": ["header:x-api-key"], "match": {"header:x-api-key": "vip"},
             "algorithm": "token_bucket", "algorithm_config": {"tokens_per_second": 1, "burst": 2}},
            {"name": "org", "limit_keys": ["jwt:org_id", "ip:address"], "algorithm": "token_bucket",
             "algorithm_config": {"tokens_per_second": 3, "burst": 6}},
        ]}},
    ],
}

CHAT = json.dumps({"model": "gpt-4o-mini", "max_tokens": 2000,
                   "messages": [{"role": "user", "content": "hello there " * 40}]}).encode()


def _pair(bundle: dict):
    engines = []
    for _ in range(2):
        clock = FakeClock()
        engines.append((make_engine(bundle, clock=clock), clock))
    use_reference(engines[1][0])
    assert engines[1][0].pipeline.decide != engines[0][0].pipeline.decide
    return engines


def _requests(rng: random.Random, n: int):
    for _ in range(n):
        headers = {"X-Original-Method": rng.choice(["POST", "POST", "POST", "GET"]),
                   "X-Original-URI": rng.choice(["/v1/chat/completions"] * 3 + ["/v1/embeddings", "/other"]),
                   "X-Forwarded-For": f"10.0.0.{rng.randrange(4)}"}
        if rng.random() < 0.9:
            headers["Authorization"] = "Bearer " + unsigned_jwt({"org_id": f"org-{rng.randrange(3)}"})
        if rng.random() < 0.6:
            headers["X-Api-Key"] = rng.choice(["vip", "partner-7f3a", "k1", "k2"])
        # Bursts (no gap) and pauses, so limits are reached and refilled again.
        yield headers, rng.choice([0.0, 0.0, 0.0, 0.01, 0.2, 1.5])


def _masked(verdict) -> list[str]:
    return [v if v != verdict.reservation_id else "<rid>" for v in verdict.headers]


def _store_items(engine):
    return sorted((k, v) for k, v in engine.store.as_dict().items())


@pytest.mark.parametrize("bundle", [
    pytest.param(json.loads((FIXTURES / "five_rules.json").read_text()), id="five_rules"),
    pytest.param(TIGHT, id="tight"),
])
def test_compiled_plan_decides_like_the_reference_loop(bundle):
    (fast, fast_clock), (general, general_clock) = _pair(bundle)
    rng = random.Random(20261127)
    seen = set()
    for headers, gap_s in _requests(rng, 2000):
        fast_clock.advance(gap_s)
        general_clock.advance(gap_s)
        a, d = decide(fast, headers=headers, method="POST", uri="/v1/decision", body=CHAT, surface=0,
                      with_decision=True)
        b = decide(general, headers=headers, method="POST", uri="/v1/decision", body=CHAT, surface=0)
        # Reservation ids differ per engine (random prefix); everything else must match.
        assert (a.status, a.body, a.delay_ms, bool(a.reservation_id)) == \
            (b.status, b.body, b.delay_ms, bool(b.reservation_id))
        assert _masked(a) == _masked(b)
        seen.add((d.status, d.reason, d.warning, d.delay_ms > 0, d.rule))
    assert _store_items(fast) == _store_items(general)
    # The sequence really went through the interesting branches.
    statuses = {s for s, *_ in seen}
    assert statuses == {0, 429}
    if bundle is TIGHT:
        assert {w for _, _, w, _, _ in seen} >= {None, "budget_warn", "budget_throttle"}
        assert {r for _, r, _, _, _ in seen} >= {"rate_limit_exceeded", "budget_exhausted"}
        assert "vip" in {rule for *_, rule in seen}
