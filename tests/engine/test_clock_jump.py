"""Wall clock steps backwards (NTP, VM restore): SystemClock clamps, so no bucket refills twice and
nothing goes negative; the algorithms themselves stay sane even when handed an earlier instant."""

import pytest

from pyengine import clock as clock_mod
from pyengine.algorithms.cost_based import CostBudget
from pyengine.algorithms.token_bucket import TokenBucket
from pyengine.algorithms.token_bucket_llm import LLMTokenLimiter
from pyengine.clock import FakeClock, SystemClock
from pyengine.state.memory import MemoryStore

T0 = 1_767_311_990.0  # 2026-01-01T23:59:50Z: ten seconds before a UTC day boundary


@pytest.fixture
def wall(monkeypatch):
    """A settable time.time() under SystemClock: wall.t is what the OS clock says."""
    fake = FakeClock(T0)
    monkeypatch.setattr(clock_mod.time, "time", lambda: fake.t)
    return fake


def test_system_clock_clamps_a_backward_step_and_resumes(wall):
    c = SystemClock()
    seen = [c.now_s()]
    wall.advance(5)
    seen.append(c.now_s())
    wall.advance(-3600)  # an hour back
    seen += [c.now_s(), c.now_s()]
    wall.advance(3600 + 1)  # back past where it was
    seen.append(c.now_s())
    assert seen == [T0, T0 + 5, T0 + 5, T0 + 5, T0 + 6]
    assert all(b >= a for a, b in zip(seen, seen[1:]))


def test_token_bucket_does_not_refill_twice_across_a_backward_jump(wall):
    c = SystemClock()
    bucket = TokenBucket(MemoryStore(), rate_per_s=1, burst=10)
    assert bucket.acquire("k", 10, c.now_s()).allowed  # drained at T0
    wall.advance(-600)  # ten minutes back: clamped, so no time passes at all
    assert bucket.peek("k", c.now_s()) == 0
    assert not bucket.acquire("k", 1, c.now_s()).allowed
    wall.advance(600 + 3)  # 3 s after the drain: exactly 3 tokens, not 3 + the 600 s "lived twice"
    assert bucket.peek("k", c.now_s()) == 3
    out = bucket.acquire("k", 3, c.now_s())
    assert out.allowed and out.remaining == 0


@pytest.mark.parametrize("back_s", [0.5, 5, 3600, 86_400 * 40])
def test_token_bucket_handed_an_earlier_instant_never_goes_negative_or_over_burst(back_s):
    """Without the clamp (a store restored from a host whose clock ran ahead): still no negative
    remaining, no more than burst, and no extra tokens once time catches up."""
    bucket = TokenBucket(MemoryStore(), rate_per_s=2, burst=10)
    assert bucket.acquire("k", 4, T0).allowed
    early = T0 - back_s
    out = bucket.acquire("k", 1, early)
    assert out.remaining >= 0 and out.reset_s >= 0
    assert bucket.peek("k", early) <= 10
    allowed = sum(bucket.acquire("k", 1, early).allowed for _ in range(50))
    assert allowed <= 6  # never more than what was left at T0
    assert bucket.peek("k", T0) <= 10


def test_tpd_and_budgets_stay_spent_when_the_clock_steps_back_over_midnight(wall):
    c = SystemClock()
    store = MemoryStore()
    wall.advance(20)  # 00:00:10 on the new UTC day
    llm = LLMTokenLimiter(store, tokens_per_minute=10_000, burst_tokens=10_000, tokens_per_day=1_000)
    budget = CostBudget(store, 5_000, "1d", [(100, "reject", 0)])
    assert llm.reserve("t", 1_000, c.now_s()).allowed
    assert budget.acquire("b", 5_000, c.now_s()).allowed
    wall.advance(-30)  # back to 23:59:40 of the previous day: a new-day refill must not happen twice
    now = c.now_s()
    assert now == T0 + 20
    assert llm.peek("t", now) == 0
    assert not llm.reserve("t", 1, now).allowed
    assert not budget.acquire("b", 1, now).allowed
    assert budget.peek("b", now) == 0  # no headroom left, and not negative
    # A settlement at the clamped instant refunds into the same day, exactly once.
    llm.settle("t", 1_000, 400, reserved_at_s=T0 + 20, now_s=now)
    assert llm.peek("t", now) == 600
    wall.advance(86_400)  # the wall clock is still on the day the budget was spent
    assert llm.peek("t", c.now_s()) == 600
    wall.set(T0 + 20 + 86_400)  # the next real UTC day: a fresh day, once
    assert llm.peek("t", c.now_s()) == 1_000


def test_unsettled_reservations_expire_on_the_engine_clock_and_a_late_settle_is_counted_lost():
    from pyengine.protocol.messages import Settle
    from pyengine.decision.reservations import DEFAULT_TTL_S

    from .helpers import decide
    from .test_llm_proxy_engine import T, chat, proxy_engine, remaining

    engine = proxy_engine()
    before = remaining(engine)
    v = decide(engine, headers=T, method="POST", uri="/v1/chat/completions", body=chat())
    held = before - remaining(engine)
    assert v.status == 0 and v.reservation_id and held > 0  # 0: allowed, proxy on
    metrics = engine.metrics
    engine.clock.advance(DEFAULT_TTL_S - 1)
    engine.upkeep()
    assert metrics.reservations_expired.values[()] == 0
    engine.clock.advance(2)
    engine.upkeep()
    assert metrics.reservations_expired.values[()] == 1
    late = engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=3, cut=False))
    assert late.status == 404
    assert metrics.llm_settlements.values[("lost",)] == 1
    assert "fairvisor_reservations_expired_total 1" in metrics.render()
