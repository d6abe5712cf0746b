"""The last good policy survives a restart (issue 13, finding 9): a configured file refused at
start falls back to it, and bundle_version stays monotonic across restarts."""

import errno
import json
import logging
import os
import stat

import pytest

from pyengine.clock import FakeClock
from pyengine.config import from_env
from pyengine.engine import build_engine
from pyengine.signing import sign
from pyengine.state import last_good as last_good_mod

from .helpers import decide, hdr
from .test_live_ops import KEY, SPEND_RULE, write_atomic


def policy(version: int, budget: int = 100) -> bytes:
    rule = {**SPEND_RULE, "algorithm_config": {**SPEND_RULE["algorithm_config"], "budget": budget}}
    return json.dumps({"bundle_version": version, "policies": [{"id": "p", "spec": {
        "selector": {"pathPrefix": "/"}, "rules": [rule]}}]}).encode()


class Restarts:
    """One state dir and one policy file; each start() is an engine process after a kill -9."""

    def __init__(self, tmp_path, **settings):
        self.path = tmp_path / "policy.json"
        self.settings = from_env({}, state_dir=str(tmp_path / "state"), config_file=str(self.path), **settings)
        self.clock = FakeClock()
        self.engine = None

    def start(self):
        if self.engine is not None:  # as if killed: no final flush, only the lock goes with the process
            self.engine.snapshots._pool.shutdown()
            os.close(self.engine.snapshots._lock_fd)
        self.engine = build_engine(self.settings, clock=self.clock)
        return self.engine

    def ready(self) -> dict:
        return json.loads(self.engine.admin.readiness().body)

    def close(self):
        self.engine.close()


@pytest.fixture
def restarts(tmp_path):
    r = Restarts(tmp_path)
    yield r
    r.close()


def remaining(engine, key="k") -> str:
    return hdr(decide(engine, headers={"X-Api-Key": key}), "RateLimit-Remaining")


def test_a_file_truncated_before_a_restart_falls_back_to_the_last_good_bundle(restarts, caplog):
    write_atomic(restarts.path, policy(7, budget=50))
    engine = restarts.start()
    assert engine.bundle.version == 7 and restarts.ready().get("policy_source") is None
    record = os.path.join(restarts.settings.state_dir, "policy", "last-good.msgpack")
    assert stat.S_IMODE(os.stat(record).st_mode) == 0o600
    restarts.path.write_bytes(policy(8)[:20])  # truncated: refused by the watch, version 7 stays
    engine.watch()
    assert engine.bundle.version == 7
    with caplog.at_level(logging.ERROR, logger="fairvisor.engine"):
        engine = restarts.start()  # the kill -9
    assert engine.bundle is not None and engine.bundle.version == 7
    assert remaining(engine) == "49"  # decided under the old policy (budget 50), not 503
    ready = restarts.ready()
    assert ready["status"] == "ok" and ready["policy_version"] == 7 and ready["policy_source"] == "last_good"
    assert ready["last_reload_errors"] and "invalid JSON" in ready["last_reload_errors"][0]
    assert engine.metrics.reloads.values == {("refused",): 1, ("last_good",): 1}
    assert "REFUSED at start: running on the last good bundle, version 7" in caplog.text
    # Fixed with a higher version: in force as usual, the fallback is over.
    write_atomic(restarts.path, policy(8, budget=60))
    engine.watch()
    assert engine.bundle.version == 8 and restarts.ready().get("policy_source") is None
    assert "last_reload_errors" not in restarts.ready()


def test_the_file_put_back_unchanged_ends_the_fallback(restarts):
    write_atomic(restarts.path, policy(3))
    restarts.start()
    restarts.path.write_bytes(b"")
    engine = restarts.start()
    assert restarts.ready()["policy_source"] == "last_good"
    write_atomic(restarts.path, policy(3))  # the same bundle: no version bump needed
    engine.watch()
    assert engine.bundle.version == 3
    assert "policy_source" not in restarts.ready() and "last_reload_errors" not in restarts.ready()


def test_an_older_signed_bundle_is_refused_after_a_restart_too(tmp_path):
    r = Restarts(tmp_path, bundle_key=KEY)
    write_atomic(r.path, sign(policy(5), KEY).encode() + b"\n" + policy(5))
    assert r.start().bundle.version == 5
    # An attacker (or a stale deploy) puts back an older bundle that was signed once, then the
    # engine restarts: before, no version was in force, so version 4 was simply accepted.
    write_atomic(r.path, sign(policy(4, budget=10**6), KEY).encode() + b"\n" + policy(4, budget=10**6))
    engine = r.start()
    assert engine.bundle.version == 5 and r.ready()["policy_source"] == "last_good"
    assert "must be at least the last accepted version (5" in r.ready()["last_reload_errors"][0]
    # The same bundle restarts as usual, from the file; so does another one of the same version
    # (what a restart after an edit without a bump reads), which becomes the record.
    write_atomic(r.path, sign(policy(5), KEY).encode() + b"\n" + policy(5))
    r.start()
    assert r.engine.bundle.version == 5 and "policy_source" not in r.ready()
    write_atomic(r.path, sign(policy(5, budget=7), KEY).encode() + b"\n" + policy(5, budget=7))
    assert r.start().bundle.hash != engine.bundle.hash and "policy_source" not in r.ready()
    assert r.engine.last_good.record.hash == r.engine.bundle.hash
    r.close()


def test_a_tampered_record_is_never_put_in_force_with_a_key(tmp_path):
    r = Restarts(tmp_path, bundle_key=KEY)
    write_atomic(r.path, sign(policy(2), KEY).encode() + b"\n" + policy(2))
    r.start()
    lg = r.engine.last_good
    rec = lg.record
    # Someone with write access to the state dir swaps in an unlimited, unsigned bundle.
    forged = last_good_mod.LastGood(rec.v, rec.config_path, 99, "x", rec.accepted_at_s, policy(99, budget=10**9))
    with open(lg.path, "wb") as f:
        f.write(last_good_mod._encoder.encode(forged))
    r.path.write_bytes(b"{")
    engine = r.start()
    assert engine.bundle is None  # nothing verifiable to fall back to: 503, not the forged policy
    assert r.ready()["reason"] == "no_policy_loaded"
    r.close()


def test_rollback_on_purpose_bump_the_version_or_delete_the_record(restarts):
    write_atomic(restarts.path, policy(4, budget=100))
    restarts.start()
    write_atomic(restarts.path, policy(2, budget=20))  # the old bundle, as it was
    assert restarts.start().bundle.version == 4  # refused: older than the last accepted
    write_atomic(restarts.path, policy(5, budget=20))  # way 1: the old content, a new version
    assert restarts.start().bundle.version == 5
    write_atomic(restarts.path, policy(3, budget=20))
    os.unlink(restarts.engine.last_good.path)  # way 2: forget the record, then restart
    engine = restarts.start()
    assert engine.bundle.version == 3 and "policy_source" not in restarts.ready()


def test_a_record_for_another_config_file_is_neither_fallback_nor_floor(tmp_path):
    a = Restarts(tmp_path)
    write_atomic(a.path, policy(9))
    a.start()
    a.close()
    b = Restarts(tmp_path)
    b.path = tmp_path / "other.json"
    b.settings = from_env({}, state_dir=a.settings.state_dir, config_file=str(b.path))
    write_atomic(b.path, policy(1))
    assert b.start().bundle.version == 1  # another deployment: not held to version 9
    b.path.write_bytes(b"")
    b.start()
    assert b.engine.bundle.version == 1 and b.ready()["policy_source"] == "last_good"
    b.close()


def test_an_unwritable_record_is_logged_and_the_bundle_stays_in_force(restarts, monkeypatch, caplog):
    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(last_good_mod, "write_atomic", full_disk)
    write_atomic(restarts.path, policy(1))
    with caplog.at_level(logging.ERROR, logger="fairvisor.policy"):
        engine = restarts.start()
    assert engine.bundle.version == 1
    assert "cannot record the last good policy" in caplog.text
