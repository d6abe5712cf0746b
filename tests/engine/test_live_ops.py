"""Live operations at engine level: signed bundles, file watch, durable state across restarts."""

import json
import os

import pytest

from pyengine.clock import FakeClock
from pyengine.config import from_env
from pyengine.engine import Engine, build_engine
from pyengine.errors import PolicyError
from pyengine.protocol.messages import Metrics
from pyengine.signing import sign

from .helpers import decide, hdr

KEY = "s3cret"
SPEND_RULE = {"name": "spend", "limit_keys": ["header:x-api-key"], "algorithm": "cost_based",
              "algorithm_config": {"budget": 100, "period": "1d",
                                   "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}


def policy(version=1, breaker=None, kill=None) -> bytes:
    spec = {"selector": {"pathPrefix": "/"}, "rules": [SPEND_RULE]}
    if breaker:
        spec["circuit_breaker"] = breaker
    doc = {"bundle_version": version, "policies": [{"id": "p", "spec": spec}]}
    if kill:
        doc["kill_switches"] = kill
    return json.dumps(doc).encode()


def write_atomic(path, data: bytes) -> None:
    tmp = str(path) + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def test_signed_bundles_sig_file_first_line_and_refusals(tmp_path):
    path = tmp_path / "policy.json"
    engine = Engine(from_env({}, bundle_key=KEY), clock=FakeClock())
    path.write_bytes(policy(1))
    with pytest.raises(PolicyError) as exc:
        engine.load_file(str(path))
    assert exc.value.errors == ["policy.json: $: unsigned bundle refused: FAIRVISOR_BUNDLE_KEY is set, "
                                "and neither policy.json.sig nor a first-line signature exists"]
    (tmp_path / "policy.json.sig").write_text(sign(policy(1), KEY) + "\n")
    engine.load_file(str(path))
    assert engine.bundle.version == 1
    # First-line form; the hash in force is the bundle's, without the signature line.
    os.unlink(tmp_path / "policy.json.sig")
    path.write_bytes(sign(policy(2), KEY).encode() + b"\n" + policy(2))
    engine.load_file(str(path))
    assert engine.bundle.version == 2
    # Signed with another key, or tampered after signing: refused, version 2 stays.
    path.write_bytes(sign(policy(3), "other").encode() + b"\n" + policy(3))
    with pytest.raises(PolicyError) as exc:
        engine.load_file(str(path))
    assert "bad signature" in exc.value.errors[0]
    path.write_bytes(sign(policy(3), KEY).encode() + b"\n" + policy(3).replace(b"100", b"900"))
    with pytest.raises(PolicyError):
        engine.load_file(str(path))
    assert engine.bundle.version == 2
    assert engine.metrics.reloads.values == {("ok",): 2, ("refused",): 3}


def test_without_a_key_a_first_line_signature_is_stripped():
    engine = Engine(from_env({}), clock=FakeClock())
    engine.load_bytes(policy(1), "policy.json")
    from pyengine.signing import verify
    assert verify(sign(policy(1), KEY).encode() + b"\n" + policy(1), "/nonexistent", None, "p") == policy(1)


def test_watch_reloads_a_changed_file_and_a_new_signature(tmp_path):
    path = tmp_path / "policy.json"
    sig = tmp_path / "policy.json.sig"
    write_atomic(path, policy(1))
    write_atomic(sig, sign(policy(1), KEY).encode())
    engine = Engine(from_env({}, bundle_key=KEY), clock=FakeClock())
    engine.load_file(str(path))
    kill = [{"scope_key": "header:x-api-key", "scope_value": "k1", "reason": "runaway"}]
    write_atomic(path, policy(2, kill=kill))  # the bundle first: its old signature fails
    engine.watch()
    assert engine.bundle.version == 1 and "bad signature" in engine.last_errors[0]
    write_atomic(sig, sign(policy(2, kill=kill), KEY).encode())  # then the signature alone
    engine.watch()
    assert engine.bundle.version == 2
    v = decide(engine, headers={"X-Api-Key": "k1"})
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "kill_switch_active"
    engine.watch()  # nothing changed: no reload
    assert engine.metrics.reloads.values == {("ok",): 2, ("refused",): 1}


def test_reloading_the_bundle_in_force_is_a_no_op_not_a_refusal(tmp_path):
    path = tmp_path / "policy.json"
    write_atomic(path, policy(1))
    engine = Engine(from_env({}), clock=FakeClock())
    engine.load_file(str(path))
    generation = engine.generation
    engine.request_reload()  # SIGHUP with the file untouched
    engine.watch()
    write_atomic(path, policy(1))  # rewritten with the same bytes: a new inode and mtime
    engine.watch()
    assert engine.metrics.reloads.values == {("ok",): 1}
    assert (engine.generation, engine.last_errors) == (generation, [])
    assert "last_reload_errors" not in json.loads(engine.admin.readiness().body)
    # An edit refused, then undone: the file on disk is in force again, no longer in error.
    write_atomic(path, policy(1).replace(b'"budget": 100', b'"budget": -1'))
    engine.watch()
    assert engine.last_errors and "last_reload_errors" in json.loads(engine.admin.readiness().body)
    write_atomic(path, policy(1))
    engine.watch()
    assert engine.last_errors == [] and engine.bundle.version == 1
    assert engine.metrics.reloads.values == {("ok",): 1, ("refused",): 1}


def test_budgets_breakers_and_kill_switch_hits_survive_a_restart(tmp_path):
    clock = FakeClock(1_767_225_600.0)
    path = tmp_path / "policy.json"
    kill = [{"scope_key": "header:x-api-key", "scope_value": "evil"}]
    path.write_bytes(policy(1, breaker={"enabled": True, "spend_rate_threshold_per_minute": 30,
                                        "auto_reset_after_minutes": 5}, kill=kill))
    settings = from_env({}, state_dir=str(tmp_path / "state"), config_file=str(path),
                        retry_jitter=False)  # the base Retry-After (see test_jitter.py)
    engine = build_engine(settings, clock=clock)
    cost = {"X-Api-Key": "k1"}
    for _ in range(25):
        assert decide(engine, headers=cost).status == 0
    for _ in range(3):
        decide(engine, headers={"X-Api-Key": "evil"})
    opener = {"X-Api-Key": "k2"}
    for _ in range(30):
        decide(engine, headers=opener)
    assert hdr(decide(engine, headers=opener), "X-Fairvisor-Reason") == "circuit_breaker_open"
    engine.close()

    clock.advance(60)
    engine = build_engine(settings, clock=clock)
    v = decide(engine, headers=cost)
    assert v.status == 0 and hdr(v, "RateLimit-Remaining") == "74"  # 26 of 100 spent, across the restart
    v = decide(engine, headers=opener)
    assert hdr(v, "X-Fairvisor-Reason") == "circuit_breaker_open" and hdr(v, "Retry-After") == "240"
    engine.handle(Metrics(engine_unavailable_delta=0))  # a scrape refreshes the guard gauges
    assert engine.metrics.circuit_state.values == {("p",): 1}
    assert list(engine.metrics.kill_switch_hits.values.values()) == [3]
    engine.close()
