"""Coverage counters: traffic that matched no policy, or that no rule limited, by bounded route."""

import json

from pyengine.coverage import OTHER, Coverage, RouteCounts, reply, route_of
from pyengine.metrics import EngineMetrics

from .helpers import decide, make_engine

KEYED = {"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
         "algorithm_config": {"tokens_per_second": 1, "burst": 2}}


def _bundle(*policies) -> dict:
    return {"bundle_version": 1, "policies": list(policies)}


def _policy(pid: str, prefix: str, rules: list, mode: str = "enforce") -> dict:
    return {"id": pid, "spec": {"selector": {"pathPrefix": prefix}, "mode": mode, "rules": rules}}


def test_unmatched_requests_count_by_route_prefix():
    engine = make_engine(_bundle(_policy("api", "/v1/", [KEYED])))
    for n in range(3):
        decide(engine, {"X-Api-Key": "k"}, uri=f"/v1beta/models/m{n}:generateContent")
    decide(engine, {"X-Api-Key": "k"}, method="POST", uri="/health")
    decide(engine, {"X-Api-Key": "k"}, uri="/v1/chat")  # limited: not in either table
    r = engine.coverage.report(engine.metrics)
    assert r["no_policy"] == {"requests": 4, "routes": [{"route": "GET /v1beta/models", "requests": 3},
                                                        {"route": "POST /health", "requests": 1}]}
    assert r["no_rule_applied"] == {"requests": 0, "routes": []}
    assert (r["decisions"], r["unlimited"], r["unlimited_pct"]) == (5, 4, 80.0)


def test_a_rule_skipped_for_a_missing_key_leaves_the_request_unlimited():
    engine = make_engine(_bundle(_policy("api", "/v1/", [KEYED])))
    decide(engine, {}, uri="/v1/chat")
    decide(engine, {}, uri="/v1/chat/x")
    decide(engine, {"X-Api-Key": "k"}, uri="/v1/chat")
    r = engine.coverage.report(engine.metrics)
    assert r["rules_skipped"] == [{"policy": "api", "rule": "per-key", "skipped": 2}]
    assert r["no_rule_applied"] == {"requests": 2, "routes": [{"route": "GET /v1/chat", "requests": 2}]}
    assert r["no_policy"]["requests"] == 0
    assert r["unlimited_pct"] == 66.67


def test_one_skipped_rule_beside_one_that_limits_is_covered():
    ip_rule = {"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
               "algorithm_config": {"tokens_per_second": 1, "burst": 5}}
    engine = make_engine(_bundle(_policy("api", "/", [KEYED, ip_rule])))
    decide(engine, {}, uri="/v1/chat")
    r = engine.coverage.report(engine.metrics)
    assert r["rules_skipped"] == [{"policy": "api", "rule": "per-key", "skipped": 1}]
    assert r["unlimited"] == 0


def test_shadow_only_traffic_is_unlimited_and_rejects_are_not():
    engine = make_engine(_bundle(_policy("watch", "/s/", [KEYED], mode="shadow"), _policy("api", "/v1/", [KEYED])))
    for _ in range(4):
        decide(engine, {"X-Api-Key": "k"}, uri="/s/x")  # the shadow policy would reject the third
    for _ in range(4):
        decide(engine, {"X-Api-Key": "k"}, uri="/v1/x")  # two allowed, two rejected: all limited
    r = engine.coverage.report(engine.metrics)
    assert r["no_rule_applied"] == {"requests": 4, "routes": [{"route": "GET /s/x", "requests": 4}]}
    assert (r["decisions"], r["unlimited"]) == (8, 4)


def test_route_table_is_bounded_and_the_rest_counts_under_other():
    counts = RouteCounts(capacity=3)

    class View:
        method = "GET"

    for n in range(10):
        v = View()
        v.path = f"/r{n}/x/y"
        counts.add(v)
    assert counts.total == 10
    assert len(counts.counts) == 4 and counts.counts[OTHER] == 7
    assert sorted(counts.counts) == ["GET /r0/x", "GET /r1/x", "GET /r2/x", OTHER]


def test_hostile_routes_are_bounded_printable_and_never_other():
    assert route_of("GET", "/a/b/c/d") == "GET /a/b"
    assert route_of("GET", "/only") == "GET /only"
    assert route_of("GET", "/") == "GET /"
    assert route_of("X" * 100, "/" + "p" * 500) == "X" * 16 + " /" + "p" * 63
    assert route_of("GET", "/a\x1b[2J/b") == "GET /a?[2J/b"
    assert route_of("GET", "/\n/x") == "GET /?/x"
    assert route_of("", "") != OTHER  # a route always carries the separator; OTHER has none


def test_reply_is_the_report_as_json():
    engine = make_engine(_bundle(_policy("api", "/v1/", [KEYED])))
    decide(engine, {}, uri="/nope")
    r = reply(engine)
    assert r.status == 200 and r.content_type == "application/json"
    assert json.loads(r.body)["no_policy"]["routes"] == [{"route": "GET /nope", "requests": 1}]


def test_empty_report_has_no_division_by_zero():
    r = Coverage().report(EngineMetrics())
    assert (r["decisions"], r["unlimited"], r["unlimited_pct"]) == (0, 0, 0.0)
