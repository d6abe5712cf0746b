"""A restarted engine never starts with nothing (issue 13, findings 9 and 13), through `fairvisor run`:
real nginx, shim and engine; the engine is killed with SIGKILL and restarted by the supervisor."""

from __future__ import annotations

import json
import os
import signal
import time

import msgspec
import pytest

from .conftest import token_bucket_policy, wait_until
from .test_faults import metric

pytestmark = pytest.mark.integration

KEY = {"X-Api-Key": "k"}


def persisted_charge(edge) -> bool:
    """Whether a snapshot on disk holds the spent bucket (tps 0.001: full again in ~2000 s)."""
    state = edge.state_dir / "state"
    for name in os.listdir(state):
        if name == "base.msgpack" or (name.startswith("delta-") and name.endswith(".msgpack")):
            try:
                entries = msgspec.msgpack.decode((state / name).read_bytes())["entries"]
            except (OSError, msgspec.DecodeError):
                continue  # replaced while read
            if any(isinstance(v, float) and v > time.time() + 1000 for v in entries.values()):
                return True
    return False


def kill_engine(edge) -> None:
    """SIGKILL the engine, then wait for the supervisor's new one to answer."""
    old = edge.engine_pid()
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: edge.engine_pid() not in (None, old) and edge.get("/readyz", fresh=True).status == 200,
               10.0, f"the restarted engine:\n{edge.log()}")


def test_truncated_policy_then_kill_minus_nine_keeps_deciding_under_the_old_policy(start_edge):
    edge = start_edge(token_bucket_policy("header:x-api-key", tps=0.001, burst=2, version=7))
    assert [edge.decide(headers=KEY).status for _ in range(3)] == [200, 200, 429]
    wait_until(lambda: persisted_charge(edge), 5.0, "the charge on disk")  # a kill loses up to 0.5 s
    policy_file = edge.runtime_dir.parent.parent / "policy.json"
    policy_file.write_bytes(policy_file.read_bytes()[:40])  # truncated in place: refused, correctly
    os.kill(edge.engine_pid(), signal.SIGHUP)
    wait_until(lambda: (metric(edge, r'fairvisor_policy_reload_total\{result="refused"\}') or 0) >= 1, 5.0,
               "the refused reload")
    kill_engine(edge)
    ready = edge.get("/readyz", fresh=True).json()
    assert ready["status"] == "ok" and ready["policy_version"] == 7  # not 503 no_policy_loaded
    # Still decided under version 7: its counters came back, its limit holds, new keys are allowed.
    assert edge.decide(headers=KEY).status == 429
    assert [edge.decide(headers={"X-Api-Key": "k2"}).status for _ in range(3)] == [200, 200, 429]
    assert metric(edge, r'fairvisor_policy_reload_total\{result="last_good"\}') == 1
    log = edge.log()
    assert "REFUSED at start: running on the last good bundle, version 7" in log
    # A fixed file with a higher version is picked up by the restarted engine's watch.
    tmp = policy_file.with_suffix(".new")
    tmp.write_text(json.dumps(token_bucket_policy("header:x-api-key", tps=0.001, burst=50, version=8)))
    os.replace(tmp, policy_file)
    wait_until(lambda: edge.get("/readyz", fresh=True).json().get("policy_version") == 8, 5.0, "version 8")


def test_malformed_snapshot_then_kill_minus_nine_the_engine_starts_and_enforces(start_edge):
    edge = start_edge(token_bucket_policy("header:x-api-key", tps=0.001, burst=2))
    assert [edge.decide(headers=KEY).status for _ in range(3)] == [200, 200, 429]
    state = edge.state_dir / "state"
    wait_until(lambda: persisted_charge(edge), 5.0, "the charge on disk")
    # A decodable entry with an empty array, and a stray delta name: each used to crash the
    # engine at start, so the supervisor restarted it forever and nginx failed open meanwhile.
    bad = {"v": 1, "kind": "delta", "seq": 10**11, "written_at_s": 0.0, "entries": {"victim": []}}
    (state / f"delta-{10**11:012d}.msgpack").write_bytes(msgspec.msgpack.encode(bad))
    (state / "delta-oops.msgpack").write_bytes(b"")
    kill_engine(edge)
    assert edge.decide(headers=KEY).status == 429  # restored: the limit still holds
    assert metric(edge, r'fairvisor_state_restore_skipped_total\{reason="bad_value"\}') == 1
    assert metric(edge, r'fairvisor_state_restore_skipped_total\{reason="stray_name"\}') == 1
    assert any(n.startswith("delta-oops.msgpack.corrupt-") for n in os.listdir(state))
    assert edge.log().count("state restored from") == 2  # one restart, no crash loop
