"""SpendBreaker: every state transition and the sliding minute, stepped with a frozen clock."""

import pytest

from pyengine.clock import FakeClock
from pyengine.guards.breaker import CLOSED, HALF_OPEN, OPEN, SpendBreaker
from pyengine.state.memory import MemoryStore

MINUTE_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a minute boundary


def make(threshold=100, reset_s=120):
    store = MemoryStore()
    return store, SpendBreaker(store, threshold, reset_s), FakeClock(MINUTE_START)


def test_closed_counts_spend_and_opens_on_the_request_that_would_exceed():
    store, b, clock = make()
    assert b.check("k", 60, clock.now_s()) == (0, False)
    assert b.check("k", 40, clock.now_s()) == (0, False)  # exactly the threshold is allowed
    assert b.peek("k", clock.now_s()) == (CLOSED, 100)
    assert b.check("k", 1, clock.now_s()) == (120, True)  # refused, Retry-After = reset
    assert b.peek("k", clock.now_s()) == (OPEN, 0)  # the window is cleared on opening


def test_open_refuses_everything_until_reset_then_half_open_then_closed():
    store, b, clock = make(reset_s=120)
    b.check("k", 101, clock.now_s())  # one request above the threshold trips it
    clock.advance(30)
    assert b.check("k", 0, clock.now_s()) == (90, False)  # even zero spend, with the time left
    clock.advance(89.5)
    assert b.check("k", 0, clock.now_s()) == (1, False)  # never less than 1 s
    clock.advance(0.5)  # reset elapsed: half-open
    assert b.peek("k", clock.now_s())[0] == HALF_OPEN
    assert b.check("k", 50, clock.now_s()) == (0, False)
    clock.advance(59.9)  # probation = min(reset, 60 s)
    assert b.peek("k", clock.now_s())[0] == HALF_OPEN
    clock.advance(0.1)
    assert b.peek("k", clock.now_s())[0] == CLOSED


def test_half_open_reopens_when_the_rate_trips_again():
    store, b, clock = make(reset_s=30)
    b.check("k", 150, clock.now_s())
    clock.advance(30)
    assert b.check("k", 80, clock.now_s()) == (0, False)  # half-open: counted afresh
    clock.advance(5)
    assert b.check("k", 30, clock.now_s()) == (30, True)  # 80 + 30 > 100: open again
    assert b.peek("k", clock.now_s())[0] == OPEN
    clock.advance(30 + 30)  # reset, then a probation of 30 s with no spend
    assert b.peek("k", clock.now_s())[0] == CLOSED
    assert store.get("k")[0] <= clock.now_s()  # nothing left to remember: expired == closed


@pytest.mark.parametrize("elapsed_s, prev, cur, spend, trips", [
    (0, 90, 0, 10, False),    # start of the next minute: all of prev counts
    (0, 90, 0, 11, True),
    (30, 90, 0, 55, False),   # half of prev still weighs: 45 + 55 = 100
    (30, 90, 0, 56, True),
    (30, 90, 20, 36, True),   # 45 + 20 + 36 = 101
    (59, 90, 0, 98, False),   # 1.5 + 98
])
def test_sliding_minute_weights_the_previous_bucket(elapsed_s, prev, cur, spend, trips):
    store, b, clock = make()
    b.check("k", prev, clock.now_s())  # bucket [T, T+60)
    clock.advance(60 + elapsed_s)  # into the next bucket
    if cur:
        b.check("k", cur, clock.now_s())
    retry, opened = b.check("k", spend, clock.now_s())
    assert opened is trips and (retry > 0) is trips


def test_spend_two_minutes_old_is_forgotten_and_the_entry_expires():
    store, b, clock = make()
    b.check("k", 100, clock.now_s())
    clock.advance(120)
    assert b.rate("k", clock.now_s()) == 0
    assert b.check("k", 100, clock.now_s()) == (0, False)
    clock.advance(120)
    assert store.sweep(clock.now_s(), 10) == 1


def test_undo_takes_back_counted_spend():
    store, b, clock = make()
    b.check("k", 70, clock.now_s())
    b.check("k", 20, clock.now_s())
    b.undo("k", 20, clock.now_s(), clock.now_s())
    assert b.rate("k", clock.now_s()) == 70
    assert b.check("k", 30, clock.now_s()) == (0, False)  # room again after the undo
