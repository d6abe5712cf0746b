"""MemoryStore's key cap: a flood of distinct keys is evicted down to max_keys at each sweep."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyengine.config import ConfigError, from_env
from pyengine.state.memory import MemoryStore

NOW_S = 1_767_225_600.0


def test_sweep_evicts_live_entries_down_to_the_cap_oldest_first():
    store = MemoryStore(max_keys=3)
    for i in range(5):
        store.put(f"k{i}", NOW_S + 100)
    assert store.sweep(NOW_S, 0) == 0  # nothing expired: evictions are not expiries
    assert len(store) == 3 and store.evictions == 2
    assert sorted(store.as_dict()) == ["k2", "k3", "k4"]
    store.put("k5", NOW_S + 100)
    store.sweep(NOW_S, 0)
    assert sorted(store.as_dict()) == ["k3", "k4", "k5"] and store.evictions == 3


def test_expired_entries_go_first_and_are_not_counted_as_evictions():
    store = MemoryStore(max_keys=2)
    store.put("old", NOW_S - 1)
    store.put("a", NOW_S + 10)
    store.put("b", NOW_S + 10)
    assert store.sweep(NOW_S, 10) == 1
    assert store.evictions == 0 and store.get("a") and store.get("b")


def test_evicted_keys_are_dirty_so_a_snapshot_forgets_them():
    store = MemoryStore(track_dirty=True, max_keys=1)
    store.put("a", NOW_S + 10)
    store.put("b", NOW_S + 10)
    store.take_dirty()
    store.sweep(NOW_S, 0)
    gone = [k for k in ("a", "b") if store.get(k) is None]
    assert len(gone) == 1 and store.take_dirty() == set(gone)


@settings(max_examples=200, database=None, deadline=None)
@given(st.integers(1, 20), st.lists(st.tuples(st.integers(0, 60), st.integers(-5, 5), st.integers(0, 8)),
                                    max_size=40))
# k1 is visited live, then overwritten with an expired value while the walk is past it.
@example(cap=2, ops=[(1, 1, 0), (0, 0, 1), (1, 0, 0)])
def test_cap_holds_after_every_sweep_and_survivors_keep_their_values(cap, ops):
    store = MemoryStore(max_keys=cap)
    model = {}
    for key_n, ttl_s, batch in ops:
        key = f"k{key_n}"
        store.put(key, NOW_S + ttl_s)
        model[key] = NOW_S + ttl_s
        store.sweep(NOW_S, batch)
        assert len(store) <= cap
        for k, v in store.as_dict().items():
            assert model[k] == v
    # The first call ends the walk in progress; the second walks every key from the start. (A key
    # that expired after this walk visited it is dropped by the next walk, as documented.)
    store.sweep(NOW_S, 10**6)
    store.sweep(NOW_S, 10**6)
    assert all(v > NOW_S for v in store.as_dict().values())
    assert sorted(store._keys) == sorted(store.as_dict())
    store.sweep(NOW_S + 61, 10**6)
    assert len(store) == 0


def test_max_state_keys_setting_is_validated():
    assert from_env({}).max_state_keys == 5_000_000
    assert from_env({"FAIRVISOR_MAX_STATE_KEYS": "10"}).max_state_keys == 10
    for bad in ("0", "x"):
        with pytest.raises(ConfigError, match="FAIRVISOR_MAX_STATE_KEYS"):
            from_env({"FAIRVISOR_MAX_STATE_KEYS": bad})
    with pytest.raises(ValueError):
        MemoryStore(max_keys=0)


def test_engine_upkeep_enforces_max_state_keys_and_counts_evictions():
    from ..engine.helpers import decide, make_engine, one_rule_bundle

    rule = {"name": "per-key", "limit_keys": ["header:x-key"], "algorithm": "token_bucket",
            "algorithm_config": {"rps": 1, "burst": 5}}
    engine = make_engine(one_rule_bundle(rule), max_state_keys=3)
    for i in range(10):  # a flood of distinct keys
        decide(engine, headers={"X-Key": f"k{i}"})
    assert len(engine.store) == 10  # the hot path never checks the cap
    engine.upkeep()
    assert len(engine.store) == 3
    assert "fairvisor_state_evictions_total 7" in engine.metrics.render()
    engine.upkeep()
    assert "fairvisor_state_evictions_total 7" in engine.metrics.render()
