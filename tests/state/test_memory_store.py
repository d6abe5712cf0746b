"""MemoryStore: the dict contract, expiry semantics of sweep, and dirty tracking."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyengine.state.memory import MemoryStore
from pyengine.state.store import Store, expiry_s

NOW_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_get_put_len():
    store: Store = MemoryStore()
    assert store.get("a") is None
    store.put("a", NOW_S + 1.5)
    store.put("b", (int(NOW_S) + 60, 123))
    assert store.get("a") == NOW_S + 1.5
    assert store.get("b") == (int(NOW_S) + 60, 123)
    assert len(store) == 2
    store.put("a", NOW_S + 2.0)
    assert store.get("a") == NOW_S + 2.0
    assert len(store) == 2


def test_delete_leaves_an_expired_value_of_the_same_kind_until_the_sweep():
    store = MemoryStore()
    store.put("bucket", NOW_S + 1.5)
    store.put("counter", (int(NOW_S) + 60, 123))
    store.delete("bucket")
    store.delete("counter")
    store.delete("missing")  # not an error, creates nothing
    assert store.get("bucket") == 0.0
    assert store.get("counter") == (0.0,)
    assert store.get("missing") is None
    assert len(store) == 2
    assert store.sweep(NOW_S, 10) == 2
    assert len(store) == 0


def test_expiry_of_float_and_tuple_values():
    assert expiry_s(NOW_S + 0.25) == NOW_S + 0.25
    assert expiry_s((1_767_312_000, 42)) == 1_767_312_000


def test_sweep_drops_only_expired_entries_expiry_equal_to_now_included():
    store = MemoryStore()
    store.put("float-past", NOW_S - 0.001)
    store.put("float-now", NOW_S)
    store.put("float-future", NOW_S + 0.001)
    store.put("tuple-past", (int(NOW_S) - 1, 5))
    store.put("tuple-now", (int(NOW_S), 5))
    store.put("tuple-future", (int(NOW_S) + 1, 5))
    assert store.sweep(NOW_S, 100) == 4
    assert len(store) == 2
    assert store.get("float-future") == NOW_S + 0.001
    assert store.get("tuple-future") == (int(NOW_S) + 1, 5)


def test_sweep_is_incremental_and_walks_the_whole_keyspace():
    store = MemoryStore()
    for i in range(1000):
        # Every other key expired.
        store.put(f"k{i}", NOW_S - 1 if i % 2 == 0 else NOW_S + 1)
    dropped = [store.sweep(NOW_S, 100) for _ in range(10)]
    assert dropped == [50] * 10
    assert len(store) == 500
    assert store.sweep(NOW_S, 1000) == 0  # next walk: nothing left to drop
    assert store.sweep(NOW_S + 2, 250) == 250  # the survivors are all still walked
    assert store.sweep(NOW_S + 2, 250) == 250
    assert len(store) == 0


def test_keys_added_during_a_walk_are_swept_in_the_same_walk():
    store = MemoryStore()
    for i in range(10):
        store.put(f"old{i}", NOW_S - 1)
    assert store.sweep(NOW_S, 5) == 5
    unvisited = [f"old{i}" for i in range(10) if store.get(f"old{i}") is not None]
    for key in unvisited:
        store.put(key, NOW_S + 10)  # renewed before being visited: must survive
    store.put("late", NOW_S - 1)  # added mid-walk: joins the end of the walk
    assert store.sweep(NOW_S, 5) == 0
    assert store.sweep(NOW_S, 5) == 1
    assert store.get("late") is None
    assert [store.get(key) for key in unvisited] == [NOW_S + 10] * 5
    assert len(store) == 5


def test_a_swept_key_written_again_is_swept_again():
    store = MemoryStore()
    store.put("k", NOW_S - 1)
    assert store.sweep(NOW_S, 10) == 1
    store.put("k", NOW_S + 1)
    assert store.sweep(NOW_S, 10) == 0
    assert store.sweep(NOW_S + 1, 10) == 1
    assert len(store) == 0


def test_deleting_and_rewriting_keys_never_duplicates_them_in_the_walk():
    store = MemoryStore()
    for round_ in range(5):
        for i in range(100):
            store.put(f"k{i}", NOW_S + 1)
            store.delete(f"k{i}")
            store.put(f"k{i}", NOW_S + 1)
        assert store.sweep(NOW_S, 1000) == 0
    # 100 keys, each visited once per walk: a 100-item sweep finishes the walk exactly.
    assert store.sweep(NOW_S + 1, 100) == 100
    assert store.sweep(NOW_S + 1, 100) == 0
    assert len(store) == 0


def test_sweep_with_no_budget_or_empty_store():
    store = MemoryStore()
    assert store.sweep(NOW_S, 10) == 0
    store.put("a", NOW_S - 1)
    assert store.sweep(NOW_S, 0) == 0  # indexes the new key, visits nothing
    assert len(store) == 1
    assert store.sweep(NOW_S, 1) == 1


def test_dirty_tracking_is_off_by_default():
    store = MemoryStore()
    store.put("a", NOW_S)
    with pytest.raises(RuntimeError, match="track_dirty=True"):
        store.take_dirty()


def test_dirty_tracking_records_puts_deletes_and_sweeps():
    store = MemoryStore(track_dirty=True)
    store.put("a", NOW_S + 5)
    store.put("b", NOW_S - 5)
    store.put("c", NOW_S + 5)
    assert store.take_dirty() == {"a", "b", "c"}
    assert store.take_dirty() == set()
    store.put("a", NOW_S + 6)
    store.delete("c")
    store.delete("never-there")  # no change, not dirty
    assert store.take_dirty() == {"a", "c"}
    assert store.sweep(NOW_S, 10) == 2  # drops b and the deleted c
    assert store.take_dirty() == {"b", "c"}
    assert store.get("a") == NOW_S + 6
    assert store.get("b") is None
    assert len(store) == 1


ops = st.lists(st.tuples(
    st.sampled_from(["put", "delete", "sweep", "advance"]),
    st.integers(0, 30),  # key index, or max_items for sweep
    st.floats(-5, 5),  # expiry offset from now, or time advance
), max_size=120)


@settings(max_examples=300, deadline=None)
@given(ops=ops, tuples=st.booleans())
def test_sweep_matches_a_model_and_lists_every_key_once(ops, tuples):
    store = MemoryStore()
    model: dict[str, float] = {}  # key -> expiry
    now = NOW_S
    for op, n, x in ops:
        key = f"k{n}"
        if op == "put":
            model[key] = now + x
            store.put(key, (now + x, n) if tuples else now + x)
        elif op == "delete":
            if key in model:
                model[key] = 0.0
            store.delete(key)
        elif op == "sweep":
            before = len(store)
            dropped = store.sweep(now, n)
            assert dropped <= n and len(store) == before - dropped
            for k in [k for k, exp in model.items() if store.get(k) is None]:
                assert model.pop(k) <= now  # only expired entries were dropped
            # Walk bookkeeping: every stored key exactly once outside the stale slots.
            listed = store._keys[:store._write] + store._keys[store._read:]
            assert sorted(listed) == sorted(model)
        else:
            now += abs(x)
        assert len(store) == len(model)
    # Two unbounded calls finish the current walk and then walk everything.
    store.sweep(now, 10**9)
    store.sweep(now, 10**9)
    live = {k for k, exp in model.items() if exp > now}
    assert {f"k{i}" for i in range(31) if store.get(f"k{i}") is not None} == live
