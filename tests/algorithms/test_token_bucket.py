"""TokenBucket (GCRA): exact allow/reject sequences on a frozen clock, refund, debt, invariants."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pyengine.algorithms.outcome import Outcome
from pyengine.algorithms.token_bucket import TokenBucket
from pyengine.clock import FakeClock
from pyengine.state.memory import MemoryStore


def make(rate_per_s, burst, **kw):
    store = MemoryStore()
    return TokenBucket(store, rate_per_s, burst, **kw), store, FakeClock()


def test_tps10_burst10_exact_sequence():
    bucket, _, clock = make(10, 10)
    remaining = []
    for _ in range(10):
        out = bucket.acquire("k", 1, clock.now_s())
        assert out.allowed
        remaining.append(out.remaining)
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert bucket.acquire("k", 1, clock.now_s()) == Outcome(
        allowed=False, limit=10, window_s=1, remaining=0, reset_s=1, retry_after_s=1,
        reason="rate_limit_exceeded")
    clock.advance(0.5)
    assert bucket.peek("k", clock.now_s()) == 5
    assert bucket.acquire("k", 1, clock.now_s()) == Outcome(
        allowed=True, limit=10, window_s=1, remaining=4, reset_s=1)


def test_allow_outcome_numbers_first_request():
    bucket, _, clock = make(10, 10)
    # 1 token used: full again in 0.1 s, so t = ceil(0.1) = 1.
    assert bucket.acquire("k", 1, clock.now_s()) == Outcome(True, 10, 1, 9, 1)


def test_cost_greater_than_one():
    bucket, _, clock = make(2, 6)
    assert bucket.acquire("k", 3, clock.now_s()) == Outcome(True, 6, 3, 3, 2)  # full in 1.5 s
    assert bucket.acquire("k", 3, clock.now_s()) == Outcome(True, 6, 3, 0, 3)  # full in 3 s
    # Deficit 3 tokens at 2/s: 1.5 s -> Retry-After 2; not charged.
    assert bucket.acquire("k", 3, clock.now_s()) == Outcome(
        False, 6, 3, 0, 2, 2, "rate_limit_exceeded")
    clock.advance(1)
    assert bucket.peek("k", clock.now_s()) == 2
    # Deficit 1 token: 0.5 s -> Retry-After 1; remaining shows the 2 tokens still there.
    assert bucket.acquire("k", 3, clock.now_s()) == Outcome(
        False, 6, 3, 2, 1, 1, "rate_limit_exceeded")
    clock.advance(0.5)
    assert bucket.acquire("k", 3, clock.now_s()) == Outcome(True, 6, 3, 0, 3)


def test_fractional_refill_floors_remaining_and_ceils_reset():
    bucket, _, clock = make(1, 5)
    assert bucket.acquire("k", 5, clock.now_s()).remaining == 0
    clock.advance(2.4)
    assert math.isclose(bucket.peek("k", clock.now_s()), 2.4, abs_tol=1e-6)
    out = bucket.acquire("k", 1, clock.now_s())
    assert (out.allowed, out.remaining, out.reset_s) == (True, 1, 4)  # 3.6 s to full
    # 1.4 tokens left, cost 2: deficit 0.6 s -> Retry-After 1.
    out = bucket.acquire("k", 2, clock.now_s())
    assert (out.allowed, out.remaining, out.retry_after_s, out.reset_s) == (False, 1, 1, 1)


def test_cost_above_burst_is_never_allowed():
    bucket, _, clock = make(10, 10)
    out = bucket.acquire("k", 25, clock.now_s())
    assert (out.allowed, out.remaining, out.retry_after_s) == (False, 10, 2)  # 15 short at 10/s
    assert bucket.peek("k", clock.now_s()) == 10  # not charged


def test_header_numbers_and_overrides():
    bucket, _, clock = make(3, 10)
    out = bucket.acquire("k", 1, clock.now_s())
    assert (out.limit, out.window_s) == (10, 4)  # window = ceil(10 / 3)
    bucket, _, clock = make(1000, 120_000, reason="tpm_exceeded",
                            header_limit=60_000, header_window_s=60)
    out = bucket.acquire("k", 1, clock.now_s())
    assert (out.limit, out.window_s) == (60_000, 60)


def test_keys_are_independent():
    bucket, _, clock = make(1, 1)
    assert bucket.acquire("a", 1, clock.now_s()).allowed
    assert not bucket.acquire("a", 1, clock.now_s()).allowed
    assert bucket.acquire("b", 1, clock.now_s()).allowed


def test_large_burst_at_one_instant_is_exact():
    # 1000 charges of 1/1000 s each: float drift must not cost the last request.
    bucket, _, clock = make(1000, 1000)
    now = clock.now_s()
    for expected in range(999, -1, -1):
        out = bucket.acquire("k", 1, now)
        assert out.allowed and out.remaining == expected
    assert not bucket.acquire("k", 1, now).allowed


def test_state_is_a_float_tat_that_expires_when_full():
    bucket, store, clock = make(10, 10)
    bucket.acquire("k", 4, clock.now_s())
    assert store.get("k") == clock.now_s() + 0.4
    clock.advance(0.4)
    assert store.sweep(clock.now_s(), 10) == 1  # full again == no state
    assert bucket.peek("k", clock.now_s()) == 10


def test_refund_is_exact_inverse_at_same_instant():
    bucket, store, clock = make(10, 10)
    now = clock.now_s()
    bucket.acquire("k", 3, now)
    bucket.acquire("k", 2, now)
    assert bucket.refund("k", 2, now) == 7
    assert bucket.peek("k", now) == 7
    assert bucket.refund("k", 3, now) == 10
    assert store.get("k") == now  # full bucket: an already-expired tat
    assert store.sweep(now, 10) == 1


def test_refund_never_exceeds_burst():
    bucket, _, clock = make(10, 10)
    bucket.acquire("k", 5, clock.now_s())
    clock.advance(0.3)  # 8 tokens
    assert bucket.refund("k", 5, clock.now_s()) == 10
    assert bucket.acquire("k", 10, clock.now_s()).allowed
    assert not bucket.acquire("k", 1, clock.now_s()).allowed


def test_charge_creates_debt_that_delays_later_requests():
    bucket, _, clock = make(10, 10)
    assert bucket.charge("k", 25, clock.now_s()) == -15
    assert bucket.peek("k", clock.now_s()) == -15
    out = bucket.acquire("k", 1, clock.now_s())
    assert (out.allowed, out.remaining, out.retry_after_s, out.reset_s) == (False, 0, 2, 2)
    clock.advance(1.6)  # debt repaid and exactly 1 token back
    assert bucket.acquire("k", 1, clock.now_s()) == Outcome(True, 10, 1, 0, 1)


def test_retry_after_is_never_below_one_second():
    bucket, _, clock = make(1000, 1000)
    bucket.acquire("k", 1000, clock.now_s())
    out = bucket.acquire("k", 1, clock.now_s())  # 1 ms away
    assert (out.retry_after_s, out.reset_s) == (1, 1)


steps = st.lists(
    st.tuples(st.floats(0, 3), st.sampled_from(["acquire", "refund"]), st.integers(0, 30)),
    max_size=60)


@settings(max_examples=300, deadline=None)
@given(rate=st.floats(0.1, 1000), burst=st.integers(1, 1000), steps=steps)
def test_tokens_stay_within_zero_and_burst(rate, burst, steps):
    bucket, _, clock = make(rate, burst)
    for dt_s, op, cost in steps:
        clock.advance(dt_s)
        if op == "acquire":
            out = bucket.acquire("k", cost, clock.now_s())
            assert 0 <= out.remaining <= burst
            assert out.reset_s >= 0
            assert out.allowed or out.retry_after_s == out.reset_s >= 1
        else:
            bucket.refund("k", cost, clock.now_s())
        tokens = bucket.peek("k", clock.now_s())
        assert -1e-3 <= tokens <= burst  # tolerance is one microsecond of refill


@settings(max_examples=300, deadline=None)
@given(rate=st.floats(0.1, 1000), burst=st.integers(1, 1000),
       steps=st.lists(st.tuples(st.floats(0, 3), st.integers(1, 30)), max_size=60))
def test_allowed_cost_never_exceeds_burst_plus_refill(rate, burst, steps):
    bucket, _, clock = make(rate, burst)
    start_s = clock.now_s()
    allowed = 0
    for dt_s, cost in steps:
        clock.advance(dt_s)
        if bucket.acquire("k", cost, clock.now_s()).allowed:
            allowed += cost
        assert allowed <= burst + rate * (clock.now_s() - start_s) + 1e-3
