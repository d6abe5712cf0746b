"""Durable state: atomic base/delta files, restore, corruption, write failures and the lock."""

import errno
import logging
import os

import msgspec

from pyengine.clock import FakeClock
from pyengine.metrics import EngineMetrics
from pyengine.state import snapshot as snapmod
from pyengine.state.memory import MemoryStore
from pyengine.state.snapshot import Snapshots

NOW = FakeClock().now_s()


def fresh(tmp_path, metrics=None):
    store = MemoryStore(track_dirty=True)
    return store, Snapshots(str(tmp_path), store, metrics)


def restored(tmp_path, now_s=NOW):
    store, snaps = fresh(tmp_path)
    n = snaps.restore(now_s)
    data = dict(store.as_dict())
    snaps.close(now_s)
    return n, data


def test_base_then_deltas_round_trip(tmp_path):
    store, snaps = fresh(tmp_path)
    snaps.restore(NOW)
    store.put("budget", (NOW + 3600, 5_000_000))
    store.put("bucket", NOW + 10.5)
    store.put("gone", (NOW + 100, 1))
    snaps.flush(NOW)  # first flush after a restore: a base
    snaps.wait()
    assert sorted(os.listdir(tmp_path / "state")) == ["base.msgpack", "lock"]
    store.put("budget", (NOW + 3600, 7_000_000))
    store.delete("gone")
    store.put("stale", (NOW - 1, 9))  # already expired: persisted as deleted
    snaps.flush(NOW)
    snaps.wait()
    assert sorted(os.listdir(tmp_path / "state")) == ["base.msgpack", "delta-000000000001.msgpack", "lock"]
    assert snaps.flush(NOW) is True and snaps._job is None  # nothing dirty: no file
    snaps._pool.shutdown()
    os.close(snaps._lock_fd)  # as if killed: no final base

    n, data = restored(tmp_path)
    assert n == 2
    assert data == {"budget": (NOW + 3600, 7_000_000), "bucket": NOW + 10.5}


def test_restore_skips_what_expired_while_down_and_compacts(tmp_path):
    store, snaps = fresh(tmp_path)
    store.put("short", NOW + 5.0)
    store.put("long", (NOW + 500, 3))
    snaps.close(NOW)
    n, data = restored(tmp_path, NOW + 60)
    assert n == 1 and data == {"long": (NOW + 500, 3)}
    assert sorted(os.listdir(tmp_path / "state")) == ["base.msgpack", "lock"]


def test_corrupt_file_is_set_aside_and_the_rest_still_loads(tmp_path, caplog):
    store, snaps = fresh(tmp_path)
    store.put("a", (NOW + 100, 1))
    snaps.flush(NOW)
    snaps.wait()
    store.put("b", (NOW + 100, 2))
    snaps.flush(NOW)
    snaps.wait()
    snaps._pool.shutdown()
    os.close(snaps._lock_fd)
    (tmp_path / "state" / "base.msgpack").write_bytes(b"\x92\x01garbage")
    (tmp_path / "state" / "delta-000000000009.msgpack.tmp").write_bytes(b"half a fi")  # crash mid-write
    metrics = EngineMetrics()
    store, snaps = fresh(tmp_path, metrics)
    with caplog.at_level(logging.ERROR, logger="fairvisor.state"):
        assert snaps.restore(NOW) == 1
    assert dict(store.as_dict()) == {"b": (NOW + 100, 2)}
    names = os.listdir(tmp_path / "state")
    assert any(n.startswith("base.msgpack.corrupt-") for n in names)
    assert not any(n.endswith(".tmp") for n in names)
    assert "is corrupt" in caplog.text and "set aside as base.msgpack.corrupt-" in caplog.text
    assert metrics.state_snapshot_errors.values == {("corrupt",): 1}
    snaps.close(NOW)


def test_write_failure_is_counted_logged_once_and_healed_by_a_full_base(tmp_path, monkeypatch, caplog):
    metrics = EngineMetrics()
    store, snaps = fresh(tmp_path, metrics)
    snaps.restore(NOW)
    real = snapmod._write_atomic

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(snapmod, "_write_atomic", full_disk)
    with caplog.at_level(logging.ERROR, logger="fairvisor.state"):
        for i in range(3):
            store.put(f"k{i}", (NOW + 100, i))
            snaps.flush(NOW)
            snaps.wait()
    assert metrics.state_snapshot_errors.values == {("ENOSPC",): 3}
    assert caplog.text.count("FAILED") == 1
    monkeypatch.setattr(snapmod, "_write_atomic", real)
    snaps.flush(NOW)  # a base, since deltas were lost
    snaps.wait()
    snaps._pool.shutdown()
    os.close(snaps._lock_fd)
    n, data = restored(tmp_path)
    assert data == {f"k{i}": (NOW + 100, i) for i in range(3)}


def test_a_second_engine_on_the_same_dir_runs_without_durable_state(tmp_path, caplog):
    _, first = fresh(tmp_path)
    with caplog.at_level(logging.ERROR, logger="fairvisor.state"):
        _, second = fresh(tmp_path)
    assert first.enabled and not second.enabled
    assert "locked by another engine" in caplog.text
    assert second.flush(NOW) is False
    first.close(NOW)


def test_files_are_versioned_msgpack(tmp_path):
    store, snaps = fresh(tmp_path)
    store.put("x", (NOW + 1, 2))
    snaps.close(NOW)
    raw = msgspec.msgpack.decode((tmp_path / "state" / "base.msgpack").read_bytes())
    assert raw["v"] == 1 and raw["kind"] == "base" and raw["entries"] == {"x": [NOW + 1, 2]}

