"""The decision log and the metrics the engine keeps: exact records, rotation, drops, top keys."""

import json

import pytest

from pyengine import decision_log as dlog
from pyengine.clock import FakeClock
from pyengine.errors import PolicyError
from pyengine.decision_log import DecisionLog, TopKeys

from .helpers import described, make_engine, one_rule_bundle

RULE = {"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 1, "burst": 2}}


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def engine_with_log(tmp_path, bundle, **settings):
    return make_engine(bundle, decision_log=str(tmp_path / "decisions.jsonl"), **settings)


def test_reject_is_logged_with_a_hashed_key_at_upkeep_not_before(tmp_path):
    engine = engine_with_log(tmp_path, one_rule_bundle(RULE))
    path = tmp_path / "decisions.jsonl"
    assert path.exists() is False  # the load's reload record waits for the upkeep flush too
    assert [described(engine, xff="10.0.0.1").status for _ in range(3)] == [0, 0, 429]
    assert not path.exists()
    engine.upkeep()
    reload_rec, reject = lines(path)
    assert reload_rec["event"] == "reload" and reload_rec["reason"] == "ok" and reload_rec["version"] == 1
    assert reject == {"ts": "2026-01-01T00:00:00.000Z", "event": "reject", "policy": "p1", "rule": "per-ip",
                      "reason": "rate_limit_exceeded", "key": engine.decision_log.hasher.digest("10.0.0.1"), "status": 429,
                      "retry_after_s": 1}
    assert len(engine.decision_log.hasher.digest("10.0.0.1")) == 16
    assert engine.metrics.decision_log_records.values[()] == 2


def test_raw_keys_and_compound_keys_joined(tmp_path):
    rule = {**RULE, "limit_keys": ["header:x-org", "ip:address"]}
    engine = engine_with_log(tmp_path, one_rule_bundle(rule), log_keys="raw")
    for _ in range(3):
        described(engine, xff="10.0.0.1", headers={"X-Org": "acme"})
    engine.close()  # shutdown flushes too
    assert lines(tmp_path / "decisions.jsonl")[1]["key"] == "acme|10.0.0.1"


def test_warn_throttle_and_shadow_would_reject_records(tmp_path):
    bundle = {"bundle_version": 1, "policies": [
        {"id": "credits", "spec": {"selector": {"pathPrefix": "/"}, "rules": [{
            "name": "daily", "limit_keys": ["ip:address"], "algorithm": "cost_based",
            "algorithm_config": {"budget": 4, "period": "1d", "staged_actions": [
                {"threshold_percent": 50, "action": "warn"},
                {"threshold_percent": 75, "action": "throttle", "delay_ms": 100},
                {"threshold_percent": 100, "action": "reject"}]}}]}},
        {"id": "canary", "spec": {"selector": {"pathPrefix": "/"}, "mode": "shadow", "rules": [
            {**RULE, "name": "strict", "algorithm_config": {"rps": 1, "burst": 1}}]}}]}
    engine = engine_with_log(tmp_path, bundle, log_keys="raw")
    for _ in range(3):
        described(engine, xff="10.0.0.9")
    engine.upkeep()
    recs = [(r["event"], r["policy"], r["rule"], r["reason"], r.get("delay_ms", 0), r.get("cost_micros", 0))
            for r in lines(tmp_path / "decisions.jsonl")[1:]]
    assert recs == [
        ("would_reject", "canary", "strict", "rate_limit_exceeded", 0, 0),
        ("warn", "credits", "daily", "budget_warn", 0, 1_000_000),
        ("would_reject", "canary", "strict", "rate_limit_exceeded", 0, 0),
        ("throttle", "credits", "daily", "budget_throttle", 100, 1_000_000),
    ]
    m = engine.metrics
    assert m.decisions.values[("would_reject", "rate_limit_exceeded", "canary")] == 2
    assert m.would_reject.values[("canary", "rate_limit_exceeded")] == 2


def test_refused_reload_is_logged_with_its_errors(tmp_path):
    engine = engine_with_log(tmp_path, one_rule_bundle(RULE))
    with pytest.raises(PolicyError):
        engine.load_bytes(json.dumps(one_rule_bundle(RULE, version=1)).encode(), "policy.json")
    engine.upkeep()
    refused = lines(tmp_path / "decisions.jsonl")[1]
    assert refused["event"] == "reload" and refused["reason"] == "refused"
    assert refused["errors"] == ["policy.json: $.bundle_version: must be greater than the version in force (1), got 1"]
    assert engine.metrics.reloads.values == {("ok",): 1, ("refused",): 1}


def test_full_buffer_drops_and_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(dlog, "MAX_BUFFERED", 3)
    engine = engine_with_log(tmp_path, one_rule_bundle(RULE))  # the reload record is the 1st
    for _ in range(6):
        described(engine, xff="10.0.0.1")  # 2 allowed, 4 rejected: 2 fit, 2 dropped
    assert engine.metrics.decision_log_dropped.values[()] == 2
    engine.upkeep()
    assert len(lines(tmp_path / "decisions.jsonl")) == 3


def test_rotation_keeps_three_backups(tmp_path):
    path = tmp_path / "d.jsonl"
    log = DecisionLog(str(path), max_bytes=200)
    for i in range(6):
        log.reload(1_767_225_600.0, "ok", version=i + 1, policy_hash="h" * 100)  # ~150 bytes a line
        log.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "d.jsonl.1", "d.jsonl.2", "d.jsonl.3"]
    assert [lines(tmp_path / n)[0]["version"] for n in ("d.jsonl.3", "d.jsonl.2", "d.jsonl.1", "d.jsonl")] == \
        [3, 4, 5, 6]


def test_unwritable_log_counts_drops_and_never_raises(tmp_path):
    log_dir = tmp_path / "not-a-dir"
    log_dir.write_text("")
    engine = make_engine(one_rule_bundle(RULE), decision_log=str(log_dir / "d.jsonl"))
    engine.upkeep()
    assert engine.metrics.decision_log_dropped.values[()] == 1


def test_off_writes_nothing(tmp_path):
    engine = make_engine(one_rule_bundle(RULE), decision_log="off")
    for _ in range(3):
        described(engine, xff="10.0.0.1")
    engine.upkeep()
    assert engine.decision_log.pending == []


def test_top_rejected_keys_in_health_body(tmp_path):
    engine = engine_with_log(tmp_path, one_rule_bundle({**RULE, "algorithm_config": {"rps": 1, "burst": 1}}))
    for ip, n in (("10.0.0.1", 4), ("10.0.0.2", 2), ("10.0.0.3", 1)):
        for _ in range(n):
            described(engine, xff=ip)
    body = json.loads(engine.admin.readiness().body)
    assert body["top_rejected_keys"] == [
        {"policy": "p1", "key": engine.decision_log.hasher.digest("10.0.0.1"), "rejections": 3},
        {"policy": "p1", "key": engine.decision_log.hasher.digest("10.0.0.2"), "rejections": 1},
    ]


def test_top_keys_stay_bounded_and_keep_the_heavy_hitter():
    top = TopKeys(capacity=4)
    for i in range(1000):
        top.add(("p", "heavy"))
        top.add(("p", f"spray-{i}"))
    assert len(top.counts) <= 4
    assert top.top(1)[0][0] == ("p", "heavy")


def test_kill_switch_gauge_follows_expiry_and_duration_is_observed():
    clock = FakeClock()
    bundle = {**one_rule_bundle(RULE), "kill_switches": [
        {"scope_key": "header:x-api-key", "scope_value": "leaked", "expires_at": "2026-01-01T00:01:00Z"},
        {"scope_key": "header:x-api-key", "scope_value": "other"}]}
    engine = make_engine(bundle, clock=clock, decision_log="off")
    gauge = engine.metrics.kill_switch_active.values
    assert gauge[()] == 2
    v = described(engine, xff="10.0.0.1", headers={"X-Api-Key": "leaked"})
    assert v.status == 429
    assert engine.metrics.decisions.values[("reject", "kill_switch_active", "")] == 1
    clock.advance(60)
    engine.upkeep()
    assert gauge[()] == 1
    assert described(engine, xff="10.0.0.1", headers={"X-Api-Key": "leaked"}).status == 0
    assert engine.metrics.duration.count == 2


def test_cutoff_is_logged(tmp_path):
    from pyengine.protocol.messages import Settle

    engine = engine_with_log(tmp_path, one_rule_bundle(RULE))
    engine.handle(Settle(reservation_id="r-1", status=200, counted_tokens=512, cut=True))
    engine.upkeep()
    cut = lines(tmp_path / "decisions.jsonl")[1]
    assert (cut["event"], cut["reservation_id"], cut["tokens"]) == ("cutoff", "r-1", 512)
