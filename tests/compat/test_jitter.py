"""Retry-After jitter: spread across clients, deterministic per client, never earlier than t."""

import statistics

from pyengine.clock import FakeClock
from pyengine.jitter import BUDGET_WINDOW_SHARE, MAX_RATIO, jittered_s

from tests.engine.helpers import described, hdr, make_engine, one_rule_bundle

USERS = [f"user-{n}" for n in range(1000)]


def rate_limit_fields(v) -> dict:
    return dict(p.split("=") for p in hdr(v, "RateLimit").split(";")[1:])


def test_kill_switch_retry_after_spreads_across_1000_clients_within_plus_50_percent():
    bundle = one_rule_bundle({"name": "r", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
                              "algorithm_config": {"tokens_per_second": 100, "burst": 100}})
    bundle["kill_switches"] = [{"scope_key": "header:x-tenant", "scope_value": "blocked"}]
    engine = make_engine(bundle)
    values = []
    for n in range(1000):
        xff = f"10.{n // 250}.{n % 250}.1"
        v = described(engine, xff=xff, headers={"X-Tenant": "blocked"})
        assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "kill_switch_active"
        values.append(int(hdr(v, "Retry-After")))
        if n < 20:  # deterministic: the same client hears the same number again
            assert hdr(described(engine, xff=xff, headers={"X-Tenant": "blocked"}), "Retry-After") == str(values[-1])
    assert all(3600 <= s <= 5400 for s in values)
    assert len(set(values)) > 600  # 1,800 possible values: nearly everyone retries at a different second
    assert 4300 < statistics.mean(values) < 4700  # uniform over [3600, 5400): mean 4500
    spread = [sum(1 for s in values if 3600 + 180 * k <= s < 3780 + 180 * k) for k in range(10)]
    assert min(spread) > 50  # every tenth of the range is used (100 expected in each)


def test_token_bucket_retry_after_never_earlier_than_t_and_deterministic():
    engine = make_engine(one_rule_bundle({"name": "slow", "limit_keys": ["header:x-user"], "algorithm": "token_bucket",
                                          "algorithm_config": {"tokens_per_second": 0.01, "burst": 1}}))
    seen = set()
    for user in USERS[:300]:
        described(engine, headers={"X-User": user})
        v = described(engine, headers={"X-User": user})
        t = int(rate_limit_fields(v)["t"])
        ra = int(hdr(v, "Retry-After"))
        assert t == 100 and t <= ra <= t * (1 + MAX_RATIO)
        assert hdr(described(engine, headers={"X-User": user}), "Retry-After") == str(ra)
        seen.add(ra)
    assert len(seen) > 30


def test_budget_retries_land_early_in_the_next_window():
    clock = FakeClock(1_767_225_600.0 + 1800)  # 00:30 UTC: 1800 s to the next hour
    engine = make_engine(one_rule_bundle({
        "name": "hourly", "limit_keys": ["header:x-user"], "algorithm": "cost_based",
        "algorithm_config": {"budget": 1, "period": "1h",
                             "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}), clock=clock)
    values = []
    for user in USERS:
        described(engine, headers={"X-User": user})
        v = described(engine, headers={"X-User": user})
        assert hdr(v, "X-Fairvisor-Reason") == "budget_exhausted"
        assert int(rate_limit_fields(v)["t"]) == 1800
        values.append(int(hdr(v, "Retry-After")))
    # Never before the reset, always within the first tenth (360 s) of the new hour.
    assert all(1800 <= s <= 1800 + 3600 * BUDGET_WINDOW_SHARE for s in values)
    assert len(set(values)) > 300


def test_jittered_s_bounds_and_small_bases():
    assert jittered_s(1, "anyone") == 1  # nothing below a second can be said
    for base in (2, 7, 60, 3600):
        got = {jittered_s(base, u) for u in USERS}
        assert min(got) >= base and max(got) <= base + int(MAX_RATIO * base)
    assert jittered_s(86400 * 20, "u", window_s=86400 * 30) <= 86400 * 20 + 86400 * 3


def test_jitter_off_keeps_the_exact_base():
    bundle = one_rule_bundle({"name": "r", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
                              "algorithm_config": {"tokens_per_second": 100, "burst": 100}})
    bundle["kill_switches"] = [{"scope_key": "header:x-tenant", "scope_value": "blocked"}]
    engine = make_engine(bundle, retry_jitter=False)
    assert {hdr(described(engine, xff=f"10.0.0.{n}", headers={"X-Tenant": "blocked"}), "Retry-After")
            for n in range(1, 50)} == {"3600"}
