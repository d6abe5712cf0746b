"""Durable state: atomic base/delta files, restore, corruption, write failures and the lock."""

import errno
import logging
import os

import msgspec
import pytest

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
    real = snapmod.write_atomic

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(snapmod, "write_atomic", full_disk)
    with caplog.at_level(logging.ERROR, logger="fairvisor.state"):
        for i in range(3):
            store.put(f"k{i}", (NOW + 100, i))
            snaps.flush(NOW)
            snaps.wait()
    assert metrics.state_snapshot_errors.values == {("ENOSPC",): 3}
    assert caplog.text.count("FAILED") == 1
    monkeypatch.setattr(snapmod, "write_atomic", real)
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



# ---- issue 13 (13): a malformed snapshot never stops the engine from starting ------------------


def raw_file(path, kind: str, seq: int, entries: dict) -> None:
    """A snapshot file written by hand: any msgpack-encodable entries, valid or not."""
    path.write_bytes(msgspec.msgpack.encode({"v": 1, "kind": kind, "seq": seq, "written_at_s": NOW,
                                             "entries": entries}))


def test_entries_of_no_valid_shape_are_skipped_counted_and_the_rest_restored(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    raw_file(state / "base.msgpack", "base", 4, {
        "ok-tuple": [NOW + 100, 3], "ok-float": NOW + 50, "ok-int": int(NOW) + 70,
        "empty": [],  # decodable, and value[0] used to raise IndexError at start
        "nan": float("nan"), "inf": [float("inf"), 1], "text": "x", "map": {"a": 1}, "bool": True,
        "nested": [NOW + 100, [1]], "bytes": b"\x00",
    })
    raw_file(state / "delta-000000000005.msgpack", "delta", 5, {"ok-float": None, "later": [NOW + 9, 1, 2.5],
                                                                "empty2": []})
    metrics = EngineMetrics()
    store, snaps = fresh(tmp_path, metrics)
    with caplog.at_level(logging.ERROR, logger="fairvisor.state"):
        assert snaps.restore(NOW) == 3
    assert dict(store.as_dict()) == {"ok-tuple": (NOW + 100, 3), "ok-int": float(int(NOW) + 70),
                                     "later": (NOW + 9, 1, 2.5)}
    assert type(store.get("ok-int")) is float  # the store's invariant: a float, or a tuple
    assert metrics.state_restore_skipped.values == {("bad_value",): 9}
    assert "skipped 9 entries" in caplog.text
    assert store.sweep(NOW + 200, 100) == 3  # the store works on what was restored
    snaps.close(NOW)


def test_stray_file_names_are_set_aside_counted_and_never_fatal(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    raw_file(state / "base.msgpack", "base", 1, {"a": [NOW + 100, 1]})
    raw_file(state / "delta-000000000002.msgpack", "delta", 2, {"b": [NOW + 100, 2]})
    for stray in ("delta-x.msgpack", "delta-1_0.msgpack", "delta-\u0661.msgpack", "delta-.msgpack", "old.msgpack"):
        raw_file(state / stray, "delta", 9, {"poison": [NOW + 100, 9]})
    (state / "delta-000000000003.msgpack").mkdir()  # a directory where a file should be
    (state / "junk.tmp").mkdir()
    (state / "notes.txt").write_text("an operator's file: not ours, left alone")
    metrics = EngineMetrics()
    store, snaps = fresh(tmp_path, metrics)
    assert snaps.restore(NOW) == 2
    assert dict(store.as_dict()) == {"a": (NOW + 100, 1), "b": (NOW + 100, 2)}
    assert metrics.state_restore_skipped.values == {("stray_name",): 5}
    assert metrics.state_snapshot_errors.values == {("corrupt",): 1}  # the directory
    names = os.listdir(state)
    assert "notes.txt" in names
    assert sum(_ASIDE in n for n in names) == 6
    assert snaps.seq == 4
    snaps.flush(NOW)  # the first base after restore deletes the deltas it covers, strays are gone
    snaps.wait()
    snaps.close(NOW)
    metrics = EngineMetrics()
    store, snaps = fresh(tmp_path, metrics)
    assert snaps.restore(NOW) == 2  # set-aside files are not looked at again
    assert metrics.state_restore_skipped.values == {} and metrics.state_snapshot_errors.values == {}
    snaps.close(NOW)


_ASIDE = ".corrupt-"


# ---- issue 13 (14b): a failed write leaves no tmp file behind ------------------------------------------


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_write_removes_its_tmp_file_and_is_counted(tmp_path, monkeypatch, failing):
    metrics = EngineMetrics()
    store, snaps = fresh(tmp_path, metrics)
    snaps.restore(NOW)
    real = getattr(os, failing)

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    store.put("k", (NOW + 100, 1))
    monkeypatch.setattr(os, failing, full_disk)
    try:
        snaps.flush(NOW)
        snaps.wait()
    finally:
        monkeypatch.setattr(os, failing, real)
    assert metrics.state_snapshot_errors.values == {("ENOSPC",): 1}
    assert sorted(os.listdir(tmp_path / "state")) == ["lock"]  # no base.msgpack.tmp left over
    snaps.flush(NOW)  # written again once the disk has room
    snaps.wait()
    assert sorted(os.listdir(tmp_path / "state")) == ["base.msgpack", "lock"]
    snaps.close(NOW)
