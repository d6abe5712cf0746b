"""The concurrency algorithm: leases per key, released by the request's end or by their own expiry."""

import pytest

from pyengine.algorithms.concurrency import MAX_IN_FLIGHT, InFlight
from pyengine.clock import FakeClock
from pyengine.state.memory import MemoryStore


def limiter(max_in_flight=2, lease_s=300.0):
    store = MemoryStore()
    return InFlight(store, max_in_flight, lease_s), store


def test_at_most_max_in_flight_then_a_release_frees_one_slot():
    lim, _ = limiter()
    clock = FakeClock()
    a, lease_a = lim.acquire("k", clock.now_s())
    b, _ = lim.acquire("k", clock.now_s())
    assert (a.allowed, a.remaining, b.allowed, b.remaining) == (True, 1, True, 0)
    third, _ = lim.acquire("k", clock.now_s())
    assert not third.allowed and third.reason == "concurrency_exceeded" and third.retry_after_s == 1
    assert (third.limit, third.remaining, third.reset_s) == (2, 0, 1)
    assert lim.release("k", lease_a, clock.now_s())
    assert lim.acquire("k", clock.now_s())[0].allowed
    assert lim.in_flight("other", clock.now_s()) == 0  # keys never share leases


def test_a_lease_never_released_stops_counting_at_lease_s():
    lim, store = limiter(max_in_flight=1, lease_s=30)
    clock = FakeClock()
    _, lease = lim.acquire("k", clock.now_s())
    clock.advance(29.9)
    assert not lim.acquire("k", clock.now_s())[0].allowed
    clock.advance(0.1)  # exactly lease_s after it started
    assert lim.in_flight("k", clock.now_s()) == 0
    assert lim.acquire("k", clock.now_s())[0].allowed
    assert not lim.release("k", lease, clock.now_s())  # the expired lease is gone: nothing to give back
    assert lim.in_flight("k", clock.now_s()) == 1


def test_expired_leases_leave_the_entry_for_the_sweep():
    lim, store = limiter(max_in_flight=3, lease_s=10)
    clock = FakeClock()
    for _ in range(3):
        lim.acquire("k", clock.now_s())
    clock.advance(10)
    assert store.sweep(clock.now_s(), 100) == 1 and len(store) == 0


def test_releasing_twice_or_an_unknown_lease_changes_nothing():
    lim, _ = limiter(max_in_flight=2)
    clock = FakeClock()
    _, lease = lim.acquire("k", clock.now_s())
    clock.advance(1)
    lim.acquire("k", clock.now_s())
    assert lim.release("k", lease, clock.now_s())
    assert not lim.release("k", lease, clock.now_s())
    assert not lim.release("k", lease + 123.0, clock.now_s())
    assert lim.in_flight("k", clock.now_s()) == 1


def test_the_last_release_deletes_the_entry():
    lim, store = limiter()
    clock = FakeClock()
    _, lease = lim.acquire("k", clock.now_s())
    lim.release("k", lease, clock.now_s())
    v = store.get("k")
    assert v is None or v[0] <= clock.now_s()  # reads as absent (store contract)
    assert store.sweep(clock.now_s(), 10) == 1


@pytest.mark.parametrize("n,lease", [(0, 1), (MAX_IN_FLIGHT + 1, 1), (1, 0), (1, float("inf"))])
def test_bad_configs_are_refused(n, lease):
    with pytest.raises(ValueError):
        InFlight(MemoryStore(), n, lease)
