"""pyengine/engine_paths.py: engine i's socket, state dir and decision log; `fairvisor logs` reads them all."""

import json
import threading

from click.testing import CliRunner

from pyengine.cli.logs_cmd import follow_all
from pyengine.cli.main import main
from pyengine.config import from_env
from pyengine.decision.key_hash import SECRET_FILE
from pyengine.engine_paths import INDEX_VAR, engine_env, engine_sockets, engine_state_dir, per_engine, sibling_logs


def test_engine_0_keeps_every_configured_path():
    assert per_engine("/run/fv/engine.sock", 0) == "/run/fv/engine.sock"
    assert engine_state_dir("/var/lib/fv", 0) == "/var/lib/fv"


def test_other_engines_insert_their_index_before_the_extension():
    assert per_engine("/run/fv/engine.sock", 1) == "/run/fv/engine-1.sock"
    assert per_engine("/var/log/decisions.jsonl", 12) == "/var/log/decisions-12.jsonl"
    assert per_engine("/run/fv/sock", 2) == "/run/fv/sock-2"
    assert per_engine("/run/fv/.sock", 2) == "/run/fv/.sock-2"
    assert per_engine("/run/f.v/engine", 3) == "/run/f.v/engine-3"
    assert engine_state_dir("/var/lib/fv", 2) == "/var/lib/fv/engine-2"


def test_engine_sockets_are_absolute_engine_0_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = from_env({"FAIRVISOR_ENGINE_SOCKET": "e.sock", "FAIRVISOR_ENGINES": "2",
                         "FAIRVISOR_STATE_URL": "redis://127.0.0.1:6379/0"})
    assert engine_sockets(settings) == [str(tmp_path / "e.sock"), str(tmp_path / "e-1.sock")]


def test_engine_env_gives_engine_1_its_own_paths_and_the_edge_key_secret(tmp_path):
    settings = from_env({"FAIRVISOR_STATE_DIR": str(tmp_path)})
    base = {"FAIRVISOR_STATE_DIR": str(tmp_path), "OTHER": "x"}
    assert engine_env(base, settings, 0) == {**base, INDEX_VAR: "0"}
    env = engine_env(base, settings, 1)
    assert env[INDEX_VAR] == "1" and env["OTHER"] == "x"
    assert env["FAIRVISOR_STATE_DIR"] == str(tmp_path / "engine-1")
    assert env["FAIRVISOR_ENGINE_SOCKET"] == str(tmp_path / "engine-1.sock")
    assert env["FAIRVISOR_DECISION_LOG"] == str(tmp_path / "decisions-1.jsonl")
    secret = (tmp_path / SECRET_FILE).read_bytes()
    assert (tmp_path / "engine-1" / SECRET_FILE).read_bytes() == secret
    assert (tmp_path / "engine-1" / SECRET_FILE).stat().st_mode & 0o777 == 0o600
    engine_env(base, settings, 1)  # a second start keeps the file
    assert (tmp_path / "engine-1" / SECRET_FILE).read_bytes() == secret


def test_decision_log_off_stays_off_for_every_engine(tmp_path):
    settings = from_env({"FAIRVISOR_STATE_DIR": str(tmp_path), "FAIRVISOR_DECISION_LOG": "off"})
    assert "FAIRVISOR_DECISION_LOG" not in engine_env({}, settings, 1)


def test_sibling_logs_are_found_by_index(tmp_path):
    for name in ("decisions.jsonl", "decisions-1.jsonl", "decisions-10.jsonl", "decisions-2.jsonl",
                 "decisions-0.jsonl", "decisions-x.jsonl", "decisions-1.jsonl.1"):
        (tmp_path / name).write_text("")
    assert sibling_logs(str(tmp_path / "decisions.jsonl")) == [
        str(tmp_path / n) for n in ("decisions-1.jsonl", "decisions-2.jsonl", "decisions-10.jsonl")]
    assert sibling_logs(str(tmp_path / "missing" / "decisions.jsonl")) == []


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_fairvisor_logs_shows_every_engines_records_in_time_order(tmp_path):
    _write(tmp_path / "decisions.jsonl", [{"ts": "2026-01-01T00:00:00.000Z", "event": "reject", "reason": "a"},
                                          {"ts": "2026-01-01T00:00:02.000Z", "event": "reject", "reason": "c"}])
    _write(tmp_path / "decisions-1.jsonl", [{"ts": "2026-01-01T00:00:01.000Z", "event": "reject", "reason": "b"}])
    result = CliRunner().invoke(main, ["logs", "--state-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["reason"] for line in result.stdout.splitlines()] == ["a", "b", "c"]
    only_one = CliRunner().invoke(main, ["logs", "--file", str(tmp_path / "decisions-1.jsonl"), "--json"])
    assert [json.loads(line)["reason"] for line in only_one.stdout.splitlines()] == ["b"]


def test_follow_all_yields_what_any_engine_appends(tmp_path):
    paths = [tmp_path / "decisions.jsonl", tmp_path / "decisions-1.jsonl"]
    for p in paths:
        p.write_text("")
    found = []
    gen = follow_all([str(p) for p in paths], [0, 0])
    reader = threading.Thread(target=lambda: [found.append(next(gen)) for _ in range(2)], daemon=True)
    reader.start()
    _write(paths[1], [{"ts": "1", "reason": "from-1"}])
    _write(paths[0], [{"ts": "2", "reason": "from-0"}])
    reader.join(timeout=10)
    assert sorted(r["reason"] for r in found) == ["from-0", "from-1"]
