"""Operator endpoints: the bundle in force, recent decision records, a candidate's replay; and
the pieces behind them (log tail reader, bundle diff, what-if replay)."""

import json

from pyengine import operator_api
from pyengine.bundle_diff import diff
from pyengine.clock import FakeClock
from pyengine.decision_log import rfc3339_ms
from pyengine.log_reader import recent_records

from .helpers import decide, make_engine

T0 = 1_767_225_600.0


def _bundle(version: int, burst: int, mode: str = "enforce", extra_rules=()) -> dict:
    rule = {"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
            "algorithm_config": {"tokens_per_second": 0.001, "burst": burst}}
    return {"bundle_version": version, "policies": [
        {"id": "api", "spec": {"selector": {"pathPrefix": "/v1/"}, "mode": mode, "rules": [rule, *extra_rules]}}]}


def _get(engine, handler, query="", body=None):
    reply = handler(engine, operator_api.query_of(b"/x?" + query.encode()), body)
    return reply.status, json.loads(reply.body)


# -- log tail ----------------------------------------------------------------------------

def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_recent_records_filters_by_time_and_event_across_rotations(tmp_path):
    log = tmp_path / "decisions.jsonl"
    _write(tmp_path / "decisions.jsonl.1", [{"ts": rfc3339_ms(T0 + i), "event": "would_reject", "n": i} for i in range(3)])
    _write(log, [{"ts": rfc3339_ms(T0 + 10 + i), "event": e, "n": 10 + i} for i, e in
                 enumerate(["reject", "would_reject", "would_reject"])])
    got = recent_records(str(log), rfc3339_ms(T0 + 1), ("would_reject",))
    assert [r["n"] for r in got] == [1, 2, 11, 12]
    assert [r["n"] for r in recent_records(str(log))] == [0, 1, 2, 10, 11, 12]


def test_recent_records_reads_no_more_than_its_budget_and_no_cut_line(tmp_path):
    log = tmp_path / "decisions.jsonl"
    _write(tmp_path / "decisions.jsonl.1", [{"ts": rfc3339_ms(T0), "event": "reject", "n": -1}])
    _write(log, [{"ts": rfc3339_ms(T0 + i), "event": "reject", "n": i, "pad": "x" * 50} for i in range(100)])
    got = recent_records(str(log), "", max_bytes=1000)
    assert 0 < len(got) < 20 and got[-1]["n"] == 99
    assert [r["n"] for r in got] == list(range(100 - len(got), 100))  # the first, cut line is dropped


def test_recent_records_skips_a_torn_line(tmp_path):
    log = tmp_path / "decisions.jsonl"
    log.write_text(json.dumps({"ts": rfc3339_ms(T0), "event": "reject"}) + "\n" + '{"ts":"2026-01-01T00:00:0')
    assert len(recent_records(str(log))) == 1


# -- diff --------------------------------------------------------------------------------

def test_diff_names_policies_rules_fields_and_the_version_check():
    old = _bundle(3, 5)
    new = _bundle(3, 2, extra_rules=[{"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
                                      "algorithm_config": {"tokens_per_second": 1, "burst": 1}}])
    new["policies"][0]["spec"]["selector"] = {"pathPrefix": "/"}
    new["policies"].append({"id": "extra", "spec": {"selector": {"pathPrefix": "/x"}, "rules": []}})
    d = diff(old, new)
    assert d["version_accepted"] is False and (d["version_in_force"], d["version"]) == (3, 3)
    assert d["policies_added"] == ["extra"] and d["policies_removed"] == []
    assert d["policies_changed"] == [{"id": "api", "fields": ["selector"], "rules_added": ["per-ip"],
                                      "rules_removed": [], "rules_changed": ["per-key"]}]
    assert diff(old, _bundle(4, 5))["policies_changed"] == [] and diff(old, _bundle(4, 5))["version_accepted"]
    assert diff(new, old)["policies_removed"] == ["extra"]


# -- endpoints ---------------------------------------------------------------------------

def test_bundle_is_the_bytes_in_force():
    engine = make_engine(_bundle(7, 5))
    reply = operator_api.bundle(engine, {}, None)
    assert reply.status == 200 and json.loads(reply.body) == _bundle(7, 5)


def test_decisions_answers_the_window_of_the_log(tmp_path):
    clock = FakeClock(T0)
    engine = make_engine(_bundle(1, 1, mode="shadow"), clock=clock, decision_log=str(tmp_path / "d.jsonl"))
    for _ in range(3):
        decide(engine, {"X-Api-Key": "tenant-a"}, uri="/v1/x")  # 2 would-rejects, buffered
    clock.advance(7200)
    decide(engine, {"X-Api-Key": "tenant-b"}, uri="/v1/x")
    decide(engine, {"X-Api-Key": "tenant-b"}, uri="/v1/x")
    status, body = _get(engine, operator_api.decisions, "since_s=3600&event=would_reject")
    assert status == 200 and body["truncated"] is False
    assert [r["event"] for r in body["records"]] == ["would_reject"]
    assert body["records"][0]["key"] != "tenant-b"  # hashed as logged
    status, body = _get(engine, operator_api.decisions, "since_s=99999&event=would_reject")
    assert len(body["records"]) == 3
    assert _get(engine, operator_api.decisions, "since_s=soon")[0] == 400


def test_replay_reports_newly_rejected_and_released_tenants():
    clock = FakeClock(T0)
    engine = make_engine(_bundle(1, 3), clock=clock, log_keys="raw")
    for tenant, n in (("small", 2), ("big", 5)):
        for _ in range(n):
            clock.advance(1)
            decide(engine, {"X-Api-Key": tenant}, uri="/v1/x")
    stricter = json.dumps(_bundle(2, 1)).encode()
    status, r = _get(engine, operator_api.replay, body=stricter)
    assert status == 200 and r["requests"] == 7
    assert (r["rejected_before"], r["rejected_after"]) == (2, 5)
    assert r["newly_rejected"] == [{"policy": "api", "rule": "per-key", "reason": "rate_limit_exceeded",
                                    "key": "big", "requests": 2},
                                   {"policy": "api", "rule": "per-key", "reason": "rate_limit_exceeded",
                                    "key": "small", "requests": 1}]
    assert r["released"] == []
    looser = json.dumps(_bundle(2, 10)).encode()
    status, r = _get(engine, operator_api.replay, body=looser)
    assert r["released"] == [{"policy": "api", "rule": "per-key", "reason": "rate_limit_exceeded",
                              "key": "big", "requests": 2}] and r["newly_rejected"] == []
    # The live engine's state is untouched by either replay: "big" is still out of tokens.
    assert decide(engine, {"X-Api-Key": "big"}, uri="/v1/x").status == 429
    assert decide(engine, {"X-Api-Key": "small"}, uri="/v1/x").status == 0


def test_replay_hashes_keys_as_the_decision_log_does():
    engine = make_engine(_bundle(1, 3))
    for _ in range(3):
        decide(engine, {"X-Api-Key": "secret-tenant"}, uri="/v1/x")
    _, r = _get(engine, operator_api.replay, body=json.dumps(_bundle(2, 1)).encode())
    [row] = r["newly_rejected"]
    assert row["key"] == engine.decision_log.shown_key("secret-tenant") != "secret-tenant"


def test_replay_refuses_a_bundle_that_does_not_load():
    engine = make_engine(_bundle(1, 3))
    status, body = _get(engine, operator_api.replay, body=b'{"bundle_version": 2, "policies": [{}]}')
    assert status == 422 and body["reason"] == "invalid_bundle" and body["errors"]
    assert _get(engine, operator_api.replay, body=None)[0] == 400


def test_replay_counts_requests_recorded_without_a_header_the_candidate_reads():
    engine = make_engine(_bundle(1, 3))
    decide(engine, {"X-Api-Key": "k", "X-Org": "o"}, uri="/v1/x")
    by_org = _bundle(2, 3)
    by_org["policies"][0]["spec"]["rules"][0]["limit_keys"] = ["header:x-org"]
    _, r = _get(engine, operator_api.replay, body=json.dumps(by_org).encode())
    assert r["requests_missing_new_headers"] == 1


def test_replay_stops_at_its_time_budget_and_says_so():
    from pyengine import what_if

    engine = make_engine(_bundle(1, 3))
    for _ in range(5):
        decide(engine, {"X-Api-Key": "k"}, uri="/v1/x")
    r = what_if.compare(engine.settings, engine.bundle_bytes, json.dumps(_bundle(2, 1)).encode(),
                        engine.recent.snapshot(), engine.decision_log.shown_key, budget_s=0.0)
    assert (r["requests"], r["recorded"]) == (0, 5)


def test_openapi_file_describes_every_operator_route():
    from pathlib import Path

    doc = json.loads((Path(__file__).parents[2] / "docs" / "admin-api.openapi.json").read_text())
    for path, method in operator_api.ROUTES:
        assert method.lower() in doc["paths"][path], (path, method)


def test_route_answers_405_for_a_known_path_and_none_for_others():
    engine = make_engine(_bundle(1, 3))
    status, _, body = operator_api.route(engine, "DELETE", "/v1/admin/coverage", None)
    assert status == 405 and json.loads(body)["detail"] == "GET"
    assert operator_api.route(engine, "GET", "/v1/admin/kill-switches", None) is None
    status, _, body = operator_api.route(engine, "GET", "/v1/admin/decisions?since_s=x", None)
    assert status in (400, 404)
