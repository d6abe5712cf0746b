"""`fairvisor test` (dry-run replay) and `fairvisor explain` through click's CliRunner."""

import json
import os

import pytest
from click.testing import CliRunner

from pyengine.cli.main import main

REPLAY = os.path.join(os.path.dirname(__file__), "..", "fixtures", "replay")
POLICY = os.path.join(REPLAY, "policy.json")
REQUESTS = os.path.join(REPLAY, "requests.jsonl")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_replay_fixture_gets_the_expected_decisions(runner):
    result = runner.invoke(main, ["test", POLICY, "--requests", REQUESTS, "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    got = [(d["id"], d["action"], d.get("reason", ""), d.get("policy", ""), d.get("remaining"), d["passed"])
           for d in out["decisions"]]
    assert got == [
        ("a1", "allow", "", "api", 1, True),
        ("a2", "allow", "", "api", 0, True),
        ("a3", "reject", "rate_limit_exceeded", "api", 0, True),
        ("a4", "allow", "", "api", 0, True),
        ("nokey", "allow", "", "", None, True),
        ("b1", "allow", "", "credits", 6, True),
        ("b2", "warn", "budget_warn", "credits", 4, True),
        ("b3", "throttle", "budget_throttle", "credits", 1, True),
        ("b4", "reject", "budget_exhausted", "credits", 1, True),
    ]
    assert out["decisions"][1]["would_reject"] == ["canary/strict: rate_limit_exceeded"]
    assert out["decisions"][3]["time"] == "2026-01-01T00:00:01.000Z"
    assert out["decisions"][7]["delay_ms"] == 250
    assert out["summary"] == {"requests": 9, "by_action": {"allow": 5, "reject": 2, "throttle": 1, "warn": 1},
                              "by_reason": {"budget_exhausted": 1, "budget_throttle": 1, "budget_warn": 1,
                                            "rate_limit_exceeded": 1},
                              "would_reject": 1, "expectations": 9, "expectations_failed": 0}


def test_replay_is_deterministic_and_the_table_is_plain_when_piped(runner):
    first = runner.invoke(main, ["test", POLICY, "--requests", REQUESTS])
    second = runner.invoke(main, ["test", POLICY, "--requests", REQUESTS])
    assert first.exit_code == 0 and first.stdout == second.stdout
    assert "\x1b[" not in first.stdout
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["ID", "TIME", "REQUEST", "ACTION", "STATUS", "REASON", "POLICY/RULE", "LEFT", "NOTES"]
    assert lines[3].split() == ["a3", "00:00:00.000", "GET", "/api/items", "reject", "429", "rate_limit_exceeded",
                                "api/per-key", "0/2", "retry", "1s"]
    assert lines[-1] == ("9 requests: 5 allow, 2 reject, 1 throttle, 1 warn; 1 shadow would-reject; "
                         "expectations 9/9 met")
    coloured = runner.invoke(main, ["test", POLICY, "--requests", REQUESTS], color=True)
    assert "\x1b[31mreject\x1b[0m" in coloured.stdout


def test_clock_step_refills_the_bucket(runner, tmp_path):
    reqs = tmp_path / "r.jsonl"
    reqs.write_text('{"path": "/api/x", "headers": {"X-Api-Key": "k"}}\n' * 4)
    burst = runner.invoke(main, ["test", POLICY, "--requests", str(reqs), "--format", "json"])
    spaced = runner.invoke(main, ["test", POLICY, "--requests", str(reqs), "--format", "json",
                                  "--clock-step-ms", "1000"])
    actions = [[d["action"] for d in json.loads(r.stdout)["decisions"]] for r in (burst, spaced)]
    assert actions == [["allow", "allow", "reject", "reject"], ["allow", "allow", "allow", "allow"]]


def test_failed_expectation_exits_1(runner, tmp_path):
    reqs = tmp_path / "r.jsonl"
    reqs.write_text('{"path": "/api/x", "headers": {"X-Api-Key": "k"}, "expect": "reject"}\n')
    result = runner.invoke(main, ["test", POLICY, "--requests", str(reqs)])
    assert result.exit_code == 1
    assert "EXPECTED reject" in result.stdout and "expectations 0/1 met" in result.stdout


@pytest.mark.parametrize("line, error", [
    ('{"path": "/x", "verb": "GET"}', "r.jsonl:2: $.verb: unknown field"),
    ("not json", "r.jsonl:2: $: invalid JSON at line 1, column 1"),
    ('{"path": 7}', "r.jsonl:2: $.path: must be a string (got 7)"),
    ('{"path": "/x", "timestamp": "yesterday"}', "r.jsonl:2: timestamp: not RFC 3339: 'yesterday'"),
    ('{"path": "/x", "timestamp": "2025-01-01T00:00:00Z"}',
     "r.jsonl:2: timestamp: goes back in time (2025-01-01T00:00:00.000Z < 2026-01-01T00:00:00.000Z)"),
])
def test_bad_request_lines_exit_2_with_file_and_line(runner, tmp_path, line, error):
    reqs = tmp_path / "r.jsonl"
    reqs.write_text('{"path": "/api/x"}\n' + line + "\n")
    result = runner.invoke(main, ["test", POLICY, "--requests", str(reqs)])
    assert result.exit_code == 2
    assert result.stderr == error + "\n"


def test_invalid_policy_exits_1_and_missing_files_exit_2(runner, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"policies": []}')
    result = runner.invoke(main, ["test", str(bad), "--requests", REQUESTS])
    assert (result.exit_code, result.stderr) == (1, "bad.json: $.bundle_version: required field missing\n")
    assert runner.invoke(main, ["test", POLICY, "--requests", str(tmp_path / "none.jsonl")]).exit_code == 2
    assert runner.invoke(main, ["test", POLICY]).exit_code == 2


def test_explain_after_history_shows_every_step(runner, tmp_path):
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"path": "/api/items", "headers": {"X-Api-Key": "k1"}}))
    hist = tmp_path / "hist.jsonl"
    hist.write_text('{"path": "/api/items", "headers": {"X-Api-Key": "k1"}}\n' * 2)
    result = runner.invoke(main, ["explain", POLICY, "--request", str(req), "--history", str(hist),
                                  "--format", "json"])
    assert result.exit_code == 0, result.output
    x = json.loads(result.stdout)
    api, credits, canary = x["policies"]
    assert (api["status"], api["outcome"]) == ("matched", "reject")
    rule = api["rules"][0]
    assert (rule["rule"], rule["key"], rule["status"]) == ("per-key", "k1", "reject")
    assert rule["outcome"] == {"allowed": False, "cost": 1.0, "limit": 2, "remaining": 0, "window_s": 2,
                               "reset_s": 1, "reason": "rate_limit_exceeded", "retry_after_s": 1}
    assert (credits["status"], credits["why"]) == ("skipped", "selector: method GET not in ['POST']")
    assert canary["rules"][0]["status"] == "not_reached"
    assert canary["rules"][0]["why"] == "policy api rejected"
    v = x["verdict"]
    assert (v["action"], v["status"], v["reason"], v["policy"], v["rule"]) == \
        ("reject", 429, "rate_limit_exceeded", "api", "per-key")
    assert ["Retry-After", "1"] in v["headers"]


def test_explain_text_names_missing_keys(runner, tmp_path):
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"method": "POST", "path": "/batch/run"}))
    result = runner.invoke(main, ["explain", POLICY, "--request", str(req)])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "Request POST /batch/run (host localhost)"
    assert "policy api [enforce] pathPrefix=/api/: skipped - selector: path /batch/run not under /api/" in lines
    assert ("  rule daily [cost_based] keys header:x-api-key: skipped - missing key: header:x-api-key"
            in lines)
    assert lines[-1] == "Verdict: allow 200"


def test_explain_usage_errors(runner, tmp_path):
    req = tmp_path / "req.json"
    req.write_text("[1, 2]")
    result = runner.invoke(main, ["explain", POLICY, "--request", str(req)])
    assert (result.exit_code, result.stderr) == (2, "req.json: expected one JSON object\n")
    assert runner.invoke(main, ["explain", POLICY]).exit_code == 2
