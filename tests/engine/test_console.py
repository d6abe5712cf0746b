"""The status page's summary (pyengine.console): bounded figures fed off the decision path, frozen clock."""

import json

from pyengine.console import stats as stats_mod
from pyengine.console.stats import TenantTable
from pyengine.clock import FakeClock

from .helpers import decide, make_engine, one_rule_bundle

RULE = {"name": "per-org", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 1, "burst": 2}}
SPEND = {"name": "spend", "limit_keys": ["header:x-org"], "algorithm": "cost_based",
         "algorithm_config": {"budget": 100, "period": "1d", "cost_key": "fixed", "fixed_cost": 10,
                              "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}


def summary(engine) -> dict:
    status, ctype, body = engine.admin_routes.handle("GET", "/v1/admin/summary", None, "x")
    assert status == 200 and ctype == "application/json"
    return json.loads(body)


def traffic(engine, clock, org, n):
    for _ in range(n):
        decide(engine, headers={"X-Org": org})


def test_policy_rates_tenants_and_rejections(tmp_path):
    clock = FakeClock()
    engine = make_engine(one_rule_bundle(RULE), clock=clock, decision_log=str(tmp_path / "d.jsonl"), log_keys="raw")
    traffic(engine, clock, "acme", 5)  # 2 allowed, 3 rejected
    traffic(engine, clock, "beta", 1)
    clock.t += 1
    engine.upkeep()  # the tick and the decision log's flush
    s = summary(engine)
    assert s["policy"]["version"] == 1 and s["policy"]["hash"] == engine.bundle.hash
    assert s["last_reload"] == {"result": "ok", "at": "2026-01-01T00:00:00Z", "errors": []}
    assert s["rates"]["bucket_s"] == 5 and len(s["rates"]["allow"]) == 180
    assert sum(s["rates"]["allow"]) * 5 == 3 and sum(s["rates"]["reject"]) * 5 == 3
    top = s["tenants"]["requests"]
    assert [(r["key"], r["requests"], r["rejections"]) for r in top] == [("acme", 2, 3), ("beta", 1, 0)]
    assert top[0]["limit_keys"] == "header:x-org"
    assert [r["reason"] for r in s["last_rejections"]] == ["rate_limit_exceeded"] * 3
    assert s["health"]["ready"] is True and s["key_mode"] == "raw"


def test_keys_are_hashed_by_default(tmp_path):
    clock = FakeClock()
    engine = make_engine(one_rule_bundle(RULE), clock=clock, decision_log=str(tmp_path / "d.jsonl"),
                         state_dir=str(tmp_path))
    traffic(engine, clock, "acme", 4)
    clock.t += 1
    engine.upkeep()
    s = json.dumps(summary(engine))
    assert "acme" not in s
    shown = engine.decision_log.hasher.show("acme")
    row = summary(engine)["tenants"]["requests"][0]
    assert row["key"] == shown and row["rejections"] == 2  # allowed and rejected rows meet under one hash


def test_budget_closest_to_exhaustion_with_time_left(tmp_path):
    clock = FakeClock()
    engine = make_engine(one_rule_bundle(SPEND), clock=clock, log_keys="raw")
    for _ in range(3):
        traffic(engine, clock, "acme", 1)
        engine.upkeep()  # the server runs it every second
        clock.t += 10
    [b] = summary(engine)["budgets"]
    assert b["key"] == "acme" and b["used_pct"] == 30.0 and b["unit"] == "micros"
    # 30 units in 30 s since first seen: 1 unit/s, 70 left.
    assert 60 <= b["exhausted_in_s"] <= 80


def test_kill_switches_and_overrides_are_listed_with_expiry():
    clock = FakeClock()
    engine = make_engine(one_rule_bundle(RULE), clock=clock, log_keys="raw")
    engine.admin_routes.handle("POST", "/v1/admin/kill-switches",
                               b'{"scope_key":"header:x-org","scope_value":"evil","reason":"r","ttl_s":60}', "x")
    engine.admin_routes.handle("POST", "/v1/admin/overrides",
                               b'{"scope_key":"header:x-org","scope_value":"acme","multiplier":2,"ttl_s":60}', "x")
    s = summary(engine)
    assert [(k["key"], k["expires_at"]) for k in s["kill_switches"]] == [("evil", "2026-01-01T00:01:00Z")]
    assert [(o["key"], o["change"]) for o in s["overrides"]] == [("acme", "x2")]


def test_the_page_is_self_contained_and_polls_every_two_seconds():
    engine = make_engine(one_rule_bundle(RULE))
    status, ctype, html = engine.admin_routes.handle("GET", "/status", None, "x")
    assert status == 200 and ctype.startswith("text/html")
    assert "/v1/admin/summary" in html and "POLL_MS = 2000" in html
    assert "http://" not in html and "https://" not in html and "<script src" not in html  # no CDN
    assert engine.admin_routes.handle("POST", "/status", None, "x")[0] == 405


def test_tenant_table_stays_bounded_and_keeps_the_heavy_hitter():
    table = TenantTable(capacity=10)
    for i in range(10_000):
        table.add(("k", "heavy"), 1, 0, 0, 0)
        table.add(("k", f"flood-{i}"), 1, 0, 0, 0)
    assert len(table.rows) <= 10 and table.rows[("k", "heavy")][0] > 4000


def test_more_decisions_than_held_are_scaled_and_the_sample_follows_the_rate(monkeypatch):
    """After a busy tick only one allowed decision in `stride` is held until the next, so a flood
    of allows never leaves thousands of decisions for the cycle collector to visit."""
    monkeypatch.setattr(stats_mod, "SAMPLE_MAX", 4)
    monkeypatch.setattr(stats_mod, "RECENT_MAX", 8)
    clock = FakeClock()
    engine = make_engine(one_rule_bundle({**RULE, "algorithm_config": {"tokens_per_second": 1000, "burst": 1000}}),
                         clock=clock, log_keys="raw")
    traffic(engine, clock, "acme", 40)  # 40 seen, the last 8 held, 4 of them counted
    clock.t += 1
    engine.upkeep()
    assert summary(engine)["tenants"]["requests"][0]["requests"] == 40
    assert engine.console.stride == 10  # 40 allowed last tick, 4 wanted
    traffic(engine, clock, "acme", 40)
    assert len(engine.console.recent) == 4
    clock.t += 1
    engine.upkeep()
    assert summary(engine)["tenants"]["requests"][0]["requests"] == 80
