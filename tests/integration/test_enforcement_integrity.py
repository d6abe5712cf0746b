"""Issue 13 through real nginx + shim + engine: an engine error rejects, key values cannot meet other tenants'
counters, huge client numbers reject, on_missing_key, and a kill switch's reason stays with operators."""

from __future__ import annotations

import json
import os
import pathlib
import re
import urllib.parse

import pytest

from .conftest import unsigned_jwt, wait_until

pytestmark = pytest.mark.integration

FAULT_DIR = pathlib.Path(__file__).with_name("engine_fault")  # sitecustomize.py: the test-only fault


def rule(name: str, limit_keys: list[str], algorithm: str = "token_bucket", **config) -> dict:
    cfg = config or {"tokens_per_second": 0.001, "burst": 2}
    return {"name": name, "limit_keys": limit_keys, "algorithm": algorithm, "algorithm_config": cfg}


def policy(*rules: dict, **bundle) -> dict:
    return {"bundle_version": 1, "policies": [{"id": "p", "spec": {"selector": {"pathPrefix": "/"},
                                                                   "rules": list(rules)}}], **bundle}


def metric(edge, pattern: str) -> float | None:
    m = re.search("^" + pattern + r" (\S+)$", edge.admin("/metrics").body.decode(), re.M)
    return float(m.group(1)) if m else None


def faulty_edge(start_edge, flags=None):
    env = {"PYTHONPATH": os.pathsep.join([str(FAULT_DIR), os.environ.get("PYTHONPATH", "")]),
           "FVTEST_RAISE_FOR_TENANT": "boom"}
    return start_edge(policy(rule("per-ip", ["ip:address"], tokens_per_second=1, burst=100),
                             rule("per-tenant", ["header:x-tenant"], tokens_per_second=1, burst=100)),
                      flags=flags, env=env)


def test_an_engine_error_is_a_503_engine_error_not_a_degraded_allow(start_edge):
    edge = faulty_edge(start_edge)  # fail mode open (the default): an unreachable engine would allow
    pid = edge.engine_pid()
    bad = edge.decide(headers={"X-Tenant": "boom"})
    assert bad.status == 503, bad.body
    assert bad.headers["X-Fairvisor-Reason"] == "engine_error"
    assert "X-Fairvisor-Degraded" not in bad.headers
    assert bad.headers["Content-Type"] == "application/problem+json"
    assert bad.json()["reason"] == "engine_error"
    ok = edge.decide(headers={"X-Tenant": "fine"})
    assert ok.status == 200 and ok.headers["RateLimit-Remaining"] == "99"  # the failed request was not charged
    assert metric(edge, r'fairvisor_engine_errors_total\{where="decide"\}') == 1
    assert edge.engine_pid() == pid  # the same engine, still serving
    assert "engine error in decide" in edge.log()


def test_an_engine_error_inline_answers_the_provider_shape_and_the_upstream_never_sees_it(start_edge, upstream):
    edge = faulty_edge(start_edge, ["--mode", "reverse_proxy", "--backend-url", upstream.url, "--llm-format", "openai"])
    bad = edge.request("POST", "/v1/chat/completions", body=b"{}", headers={"X-Tenant": "boom",
                                                                            "Content-Type": "application/json"})
    assert bad.status == 503
    assert bad.json()["error"]["code"] == "engine_error" and bad.json()["error"]["type"] == "server_error"
    assert upstream.requests == []
    assert edge.get("/x", headers={"X-Tenant": "fine"}).status == 200
    assert len(upstream.requests) == 1


def test_claims_that_embed_old_markers_have_their_own_counters(start_edge):
    llm = rule("org-tokens", ["jwt:org_id"], "token_bucket_llm", tokens_per_minute=100_000, tokens_per_day=1000,
               default_max_completion=400)
    edge = start_edge(policy(llm, rule("pair", ["query:a", "query:b"])))

    def ask(org: str):
        return edge.decide(uri="/v1/chat", headers={"Authorization": "Bearer " + unsigned_jwt({"org_id": org}),
                                                    "X-Token-Estimate": "100"})

    assert [ask("victim").status for _ in range(3)] == [200, 200, 429]  # 500 tokens each, 1000 a day
    for org in ("victim\u0000tpd", "victim\u001f", "~victim"):
        assert [ask(org).status for _ in range(3)] == [200, 200, 429], org
    # Compound values: the old "\x1f" join made these two tuples one counter.
    left, right = urllib.parse.quote("x\x1fy"), urllib.parse.quote("y\x1fz")
    assert edge.decide(uri=f"/x?a={left}&b=z").status == 200
    assert [edge.decide(uri=f"/x?a=x&b={right}").status for _ in range(3)] == [200, 200, 429]
    assert metric(edge, r'fairvisor_engine_errors_total\{where="decide"\}') == 0


def test_huge_client_costs_are_rejected_not_allowed(start_edge):
    units = rule("units", ["header:x-tenant"], "cost_based", budget=1000, period="1d", cost_key="query:units",
                 staged_actions=[{"threshold_percent": 100, "action": "reject"}])
    weighted = rule("weighted", ["header:x-tenant"], tokens_per_second=1, burst=100, cost_source="header:x-cost")
    edge = start_edge(policy(units, weighted))
    for uri, headers in (("/x?units=1e303", {}), ("/x?units=1e999", {}), ("/x", {"X-Cost": "1e303"}),
                         ("/x", {"X-Cost": "9" * 400})):
        v = edge.decide(uri=uri, headers={"X-Tenant": "t", **headers})
        assert v.status == 429, (uri, headers, v.body)
    assert edge.decide(uri="/x?units=nan", headers={"X-Tenant": "t"}).status == 200  # unusable: default cost
    assert metric(edge, r'fairvisor_engine_errors_total\{where="decide"\}') == 0


def test_on_missing_key_reject_and_shared(start_edge):
    strict = {**rule("tenant-strict", ["header:x-tenant"], tokens_per_second=1, burst=100), "on_missing_key": "reject"}
    pooled = {**rule("org-pooled", ["header:x-org"]), "on_missing_key": "shared"}
    edge = start_edge(policy(strict, pooled))
    v = edge.decide()
    assert v.status == 429 and v.headers["X-Fairvisor-Reason"] == "missing_limit_key"
    assert v.json()["reason"] == "missing_limit_key"
    # Requests without X-Org share one counter (burst 2); any value, even "-", has its own.
    assert [edge.decide(headers={"X-Tenant": "t"}).status for _ in range(3)] == [200, 200, 429]
    assert edge.decide(headers={"X-Tenant": "t", "X-Org": "-"}).status == 200


def test_a_kill_switch_reason_is_logged_for_operators_and_never_sent_to_the_client(start_edge, upstream):
    reason = "abuse INC-1 (internal)"
    bundle = policy(rule("per-ip", ["ip:address"], tokens_per_second=1, burst=100),
                    kill_switches=[{"scope_key": "header:x-tenant", "scope_value": "evil", "reason": reason}])
    decision = start_edge(bundle)
    inline = start_edge(bundle, flags=["--mode", "reverse_proxy", "--backend-url", upstream.url])
    for v in (decision.decide(headers={"X-Tenant": "evil"}), inline.get("/x", headers={"X-Tenant": "evil"})):
        assert v.status == 429 and v.headers["X-Fairvisor-Reason"] == "kill_switch_active"
        assert reason not in v.body.decode() and "INC-1" not in str(dict(v.headers))
    log_path = decision.state_dir / "decisions.jsonl"

    def logged():
        return log_path.exists() and [json.loads(line) for line in log_path.read_text().splitlines()
                                      if json.loads(line)["event"] == "reject"]
    records = wait_until(logged, 10.0, "the decision log to record the kill-switch rejection")
    assert records[0]["reason"] == "kill_switch_active" and records[0]["detail"] == reason
