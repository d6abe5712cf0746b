"""`fairvisor shadow-report` and `fairvisor validate --against` against a real Engine's endpoints over HTTP."""

import json

from click.testing import CliRunner

from pyengine.cli.main import main
from pyengine.clock import FakeClock
from tests.cli.admin_stub import admin_server, engine_routes
from tests.engine.helpers import decide, make_engine


def _rule(name, key, burst):
    return {"name": name, "limit_keys": [key], "algorithm": "token_bucket",
            "algorithm_config": {"tokens_per_second": 0.001, "burst": burst}}


def _bundle(version=1, burst=2):
    return {"bundle_version": version, "policies": [
        {"id": "api", "spec": {"selector": {"pathPrefix": "/v1/"}, "rules": [_rule("per-key", "header:x-api-key", burst)]}},
        {"id": "trial", "spec": {"selector": {"pathPrefix": "/v1/"}, "mode": "shadow",
                                 "rules": [_rule("per-org", "header:x-org", 1)]}},
        {"id": "quiet", "spec": {"selector": {"pathPrefix": "/none/"}, "mode": "shadow",
                                 "rules": [_rule("per-org", "header:x-org", 1)]}}]}


def _engine(tmp_path):
    clock = FakeClock(1_767_225_600.0)
    engine = make_engine(_bundle(), clock=clock, decision_log=str(tmp_path / "decisions.jsonl"), log_keys="raw",
                         state_dir=str(tmp_path))
    for org, n in (("org-a", 4), ("org-b", 2)):
        for i in range(n):
            clock.advance(1)
            decide(engine, {"X-Api-Key": f"{org}-k{i % 2}", "X-Org": org}, uri="/v1/chat")
    engine.decision_log.flush()
    return engine  # trial would reject org-a 3 times and org-b once


def _invoke(engine, *args, input=None):
    with admin_server(engine_routes(engine)) as url:
        return CliRunner().invoke(main, [a.replace("URL", url) for a in args], input=input)


def test_shadow_report_from_the_edge_lists_every_shadow_policy(tmp_path):
    engine = _engine(tmp_path)
    out = _invoke(engine, "shadow-report", "--admin-url", "URL", "--since", "400d", "--json")
    assert out.exit_code == 0, out.output
    report = {p["policy"]: p for p in json.loads(out.output)["policies"]}
    assert set(report) == {"trial", "quiet"}
    assert report["quiet"]["would_reject"] == 0
    t = report["trial"]
    assert (t["would_reject"], t["tenants"]) == (4, 2)
    assert t["by_rule"] == [{"rule": "per-org", "reason": "rate_limit_exceeded", "requests": 4}]
    assert t["top_tenants"] == [{"key": "org-a", "requests": 3}, {"key": "org-b", "requests": 1}]


def test_shadow_report_from_a_log_file_and_its_window(tmp_path):
    _engine(tmp_path)
    log = str(tmp_path / "decisions.jsonl")
    out = CliRunner().invoke(main, ["shadow-report", "--log", log, "--since", "400d"])
    assert out.exit_code == 0, out.output
    assert "trial: would have rejected 4 requests of 2 tenants" in out.output
    assert "org-a       3" in out.output
    recent = CliRunner().invoke(main, ["shadow-report", "--log", log, "--since", "1h"])  # records are from 2026-01-01
    assert recent.exit_code == 0 and "no shadow policy in force and no would_reject record" in recent.output
    assert CliRunner().invoke(main, ["shadow-report", "--log", str(tmp_path / "nope")]).exit_code == 1
    assert CliRunner().invoke(main, ["shadow-report", "--log", log, "--since", "soon"]).exit_code == 2


def test_validate_against_shows_changes_and_newly_rejected_tenants(tmp_path):
    engine = _engine(tmp_path)
    cand = tmp_path / "candidate.json"
    cand.write_text(json.dumps(_bundle(version=2, burst=1)))
    out = _invoke(engine, "validate", str(cand), "--against", "URL")
    assert out.exit_code == 0, out.output
    assert "bundle_version 2 > 1: a reload would accept it" in out.output
    assert "policy api changed: rules changed per-key" in out.output
    assert "Replay of 6 recent requests" in out.output
    assert "newly rejected: 2 requests of 2 tenants" in out.output  # org-a-k0 and org-a-k1 run out sooner
    assert "released: 0 requests of 0 tenants" in out.output


def test_validate_against_exits_1_when_a_reload_would_refuse_the_version(tmp_path):
    engine = _engine(tmp_path)
    cand = tmp_path / "candidate.json"
    cand.write_text(json.dumps(_bundle(version=1, burst=9)))
    out = _invoke(engine, "validate", str(cand), "--against", "URL", "--json")
    assert out.exit_code == 1
    body = json.loads(out.output)
    assert body["changes"]["version_accepted"] is False and body["replay"]["requests"] == 6


def test_validate_against_an_invalid_file_prints_the_errors_and_asks_nothing(tmp_path):
    cand = tmp_path / "bad.json"
    cand.write_text('{"bundle_version": 2, "policies": [{}]}')
    out = CliRunner().invoke(main, ["validate", str(cand), "--against", "http://127.0.0.1:1"])
    assert out.exit_code == 1 and "bad.json: $.policies[0]" in out.output


def test_validate_against_an_unreachable_edge_exits_3(tmp_path):
    cand = tmp_path / "c.json"
    cand.write_text(json.dumps(_bundle(version=2)))
    out = CliRunner().invoke(main, ["validate", str(cand), "--against", "http://127.0.0.1:1"])
    assert out.exit_code == 3 and "cannot reach the admin listener" in out.output
