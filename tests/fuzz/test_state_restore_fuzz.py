"""Fuzzing durable-state restore (issue 13): whatever lies in the state dir, restore never raises
and restores exactly the entries of valid shape from the files that decode."""

import math
import os
import tempfile

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from pyengine.clock import FakeClock
from pyengine.metrics import EngineMetrics
from pyengine.state.memory import MemoryStore
from pyengine.state.snapshot import Snapshots

from .budget import fuzz

NOW = FakeClock().now_s()

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-2**63, max_value=2**64 - 1))
# Any msgpack value (arrays, maps, strings, bytes, bools, nil, numbers), nested.
msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8), st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12)
# Values that are near the valid shapes, so the valid path is well exercised too.
near_valid = st.one_of(
    st.floats(min_value=NOW - 50, max_value=NOW + 50),
    st.lists(st.one_of(st.floats(min_value=NOW - 50, max_value=NOW + 50), st.integers(0, 10**6)),
             min_size=0, max_size=6),
    msgpack_values)
entry_maps = st.dictionaries(st.text(max_size=12), near_valid, max_size=8)
name_chars = st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",))  # what a name can hold
names = st.one_of(
    st.sampled_from(["base.msgpack", "delta-000000000001.msgpack", "delta-000000000002.msgpack", "lock.tmp"]),
    st.builds(lambda mid: f"delta-{mid}.msgpack", st.text(alphabet=name_chars, max_size=6)),
    st.text(alphabet=name_chars, min_size=1, max_size=20).filter(lambda n: n not in (".", "..", "lock")))


def valid(value):
    """The oracle: what the store should hold for a decoded value, or False for none."""
    if value is None:
        return None
    if type(value) in (int, float):
        return float(value) if math.isfinite(value) else False
    if type(value) is list and value and all(type(x) in (int, float) and math.isfinite(x) for x in value):
        return tuple(value)
    return False


def restore_dir(files: dict[str, bytes]):
    """Write `files` into a fresh state dir, restore it; (store, metrics, files left in the dir)."""
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "state")
        os.mkdir(state)
        for name, data in files.items():
            with open(os.path.join(state, name), "wb") as f:
                f.write(data)
        metrics = EngineMetrics()
        store = MemoryStore(track_dirty=True)
        snaps = Snapshots(tmp, store, metrics)
        try:
            snaps.restore(NOW)
            store.sweep(NOW, 1_000)  # the store still works on what was loaded
            left = sorted(os.listdir(state))
        finally:
            snaps._pool.shutdown()
            os.close(snaps._lock_fd)
        return store, metrics, left


def encode(kind: str, seq: int, entries) -> bytes:
    return msgspec.msgpack.encode({"v": 1, "kind": kind, "seq": seq, "written_at_s": NOW, "entries": entries})


@fuzz(300)
@given(st.dictionaries(names, st.binary(max_size=64), max_size=4))
def test_arbitrary_bytes_under_arbitrary_names_never_crash_restore(files):
    store, _, left = restore_dir(files)
    for value in store.as_dict().values():
        assert type(value) is float or (type(value) is tuple and value)
    assert not any(n.endswith(".tmp") for n in left)


@fuzz(300)
@given(entry_maps, entry_maps)
def test_arbitrary_entries_restore_exactly_the_valid_live_ones(base, delta):
    store, metrics, _ = restore_dir({"base.msgpack": encode("base", 1, base),
                                     "delta-000000000002.msgpack": encode("delta", 2, delta)})
    expected, bad = {}, 0
    for entries in (base, delta):
        for key, value in entries.items():
            v = valid(value)
            if v is False:
                bad += 1
            else:
                expected[key] = v
    expected = {k: v for k, v in expected.items()
                if v is not None and (v if type(v) is float else v[0]) > NOW}
    assert dict(store.as_dict()) == expected
    assert metrics.state_restore_skipped.values.get(("bad_value",), 0) == bad
    assert not metrics.state_snapshot_errors.values  # both files decode: none is set aside


@fuzz(300)
@given(msgpack_values, st.dictionaries(names, msgpack_values, max_size=3))
def test_arbitrary_msgpack_files_beside_a_valid_base_never_lose_the_base(top, others):
    files = {n: msgspec.msgpack.encode(v) for n, v in others.items() if n != "base.msgpack"}
    files["base.msgpack"] = encode("base", 10**6, {"kept": [NOW + 100, 1]})  # a higher seq than any delta
    files["delta-000000000003.msgpack"] = msgspec.msgpack.encode(top)
    store, _, _ = restore_dir(files)
    assert store.get("kept") == (NOW + 100, 1)
