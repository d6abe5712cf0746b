"""`fairvisor logs`: filters, JSON, last N, rotated files, and following across a rotation."""

import json
import os

from click.testing import CliRunner

from pyengine.cli.logs_cmd import follow_records
from pyengine.cli.main import main

RECS = [
    {"ts": "2026-01-01T00:00:00.000Z", "event": "reload", "reason": "ok", "version": 1, "hash": "abc"},
    {"ts": "2026-01-01T00:00:01.000Z", "event": "reject", "policy": "api", "rule": "per-ip",
     "reason": "rate_limit_exceeded", "key": "k1", "status": 429, "retry_after_s": 1},
    {"ts": "2026-01-01T00:00:02.000Z", "event": "warn", "policy": "credits", "rule": "daily",
     "reason": "budget_warn", "key": "k2", "cost_micros": 1000000},
    {"ts": "2026-01-01T00:00:03.000Z", "event": "would_reject", "policy": "canary", "rule": "strict",
     "reason": "rate_limit_exceeded", "key": "k1"},
]


def write(path, recs, mode="w"):
    with open(path, mode) as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


def invoke(*args):
    return CliRunner().invoke(main, ["logs", *args])


def test_plain_lines_and_filters(tmp_path):
    path = tmp_path / "d.jsonl"
    write(path, RECS)
    result = invoke("--file", str(path))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "2026-01-01T00:00:00.000Z  reload        ok  version=1  hash=abc",
        "2026-01-01T00:00:01.000Z  reject        rate_limit_exceeded  api/per-ip  key=k1  status=429  retry_s=1",
        "2026-01-01T00:00:02.000Z  warn          budget_warn  credits/daily  key=k2  cost_micros=1000000",
        "2026-01-01T00:00:03.000Z  would_reject  rate_limit_exceeded  canary/strict  key=k1",
    ]
    by_reason = invoke("--file", str(path), "--reason", "rate_limit_exceeded", "--json")
    assert [json.loads(line) for line in by_reason.stdout.splitlines()] == [RECS[1], RECS[3]]
    by_policy = invoke("--file", str(path), "--policy", "credits", "--json")
    assert [json.loads(line) for line in by_policy.stdout.splitlines()] == [RECS[2]]
    by_event = invoke("--file", str(path), "--event", "reload", "--event", "warn", "-n", "1", "--json")
    assert [json.loads(line) for line in by_event.stdout.splitlines()] == [RECS[2]]


def test_env_path_rotated_files_and_torn_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    write(f"{path}.2", RECS[:1])
    write(f"{path}.1", RECS[1:2])
    write(path, RECS[2:])
    with open(path, "a") as f:
        f.write('{"ts": "cut sh')  # a crash mid-write
    result = CliRunner().invoke(main, ["logs", "--json"], env={"FAIRVISOR_DECISION_LOG": str(path)})
    assert [json.loads(line) for line in result.stdout.splitlines()] == RECS


def test_default_path_under_the_state_dir_and_missing_log(tmp_path):
    write(tmp_path / "decisions.jsonl", RECS[:1])
    ok = CliRunner().invoke(main, ["logs", "--json"], env={"FAIRVISOR_STATE_DIR": str(tmp_path),
                                                           "FAIRVISOR_DECISION_LOG": None})
    assert (ok.exit_code, json.loads(ok.stdout)) == (0, RECS[0])
    missing = invoke("--file", str(tmp_path / "none.jsonl"))
    assert missing.exit_code == 1
    assert missing.stderr == f"fairvisor logs: no decision log at {tmp_path / 'none.jsonl'}\n"
    assert invoke("--event", "nope").exit_code == 2


def test_follow_reads_appends_and_survives_rotation(tmp_path):
    path = tmp_path / "d.jsonl"
    write(path, RECS[:1])
    steps = [
        lambda: write(path, RECS[1:2], "a"),
        lambda: (write(path, RECS[2:3], "a"), os.replace(path, f"{path}.1"), write(path, RECS[3:])),
        lambda: None,
    ]
    seen = []

    def fake_sleep(_s):  # each idle poll runs the next step of the scenario
        steps.pop(0)()

    for rec in follow_records(str(path), sleep=fake_sleep, stop=lambda: not steps):
        seen.append(rec)
    assert seen == RECS[1:]  # the existing record is not repeated; nothing lost at the rotation


def test_follow_waits_for_the_file_to_appear(tmp_path):
    path = tmp_path / "d.jsonl"
    steps = [lambda: None, lambda: write(path, RECS[:2]), lambda: None]

    def fake_sleep(_s):
        steps.pop(0)()

    assert list(follow_records(str(path), sleep=fake_sleep, stop=lambda: not steps)) == RECS[:2]
