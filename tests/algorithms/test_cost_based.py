"""CostBudget: staged warn/throttle/reject, no charge on reject, UTC period rollover, refunds."""

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyengine.algorithms.cost_based import CostBudget
from pyengine.algorithms.outcome import Outcome
from pyengine.state.memory import MemoryStore

USD = 1_000_000  # micros
STAGES = [(80, "warn", 0), (90, "throttle", 500), (100, "reject", 0)]


def ts(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp())


def make(budget_micros=10 * USD, period="1d", stages=STAGES, **kw):
    store = MemoryStore()
    return CostBudget(store, budget_micros, period, stages, **kw), store


def test_staged_warn_throttle_reject_exact():
    budget, _ = make()
    now = ts("2026-01-01T18:00:00") + 0.25
    to_midnight_s = 6 * 3600
    day_s = 86_400
    assert budget.acquire("k", 7_900_000, now) == Outcome(True, 10, day_s, 2, to_midnight_s)
    # 8.0 USD = exactly 80%: the warn stage applies (threshold <= spend).
    assert budget.acquire("k", 100_000, now) == Outcome(
        True, 10, day_s, 2, to_midnight_s, warning="budget_warn")
    assert budget.acquire("k", 999_999, now) == Outcome(
        True, 10, day_s, 1, to_midnight_s, warning="budget_warn")  # 89.99999%
    assert budget.acquire("k", 1, now) == Outcome(
        True, 10, day_s, 1, to_midnight_s, warning="budget_throttle", delay_ms=500)
    # Exactly the budget is allowed; one micro more is not.
    assert budget.acquire("k", 1 * USD, now) == Outcome(
        True, 10, day_s, 0, to_midnight_s, warning="budget_throttle", delay_ms=500)
    assert budget.acquire("k", 1, now) == Outcome(
        False, 10, day_s, 0, to_midnight_s, to_midnight_s, "budget_exhausted")
    assert budget.peek("k", now) == 0


def test_request_that_would_exceed_is_rejected_and_not_charged():
    budget, store = make(stages=[(100, "reject", 0)])
    now = float(ts("2026-01-01T00:00:00"))
    assert budget.acquire("k", 6 * USD, now).allowed
    out = budget.acquire("k", 5 * USD, now)
    assert (out.allowed, out.remaining, out.reason) == (False, 4, "budget_exhausted")
    assert store.get("k") == (ts("2026-01-02T00:00:00"), 6 * USD)
    assert budget.acquire("k", 4 * USD, now) == Outcome(True, 10, 86_400, 0, 86_400)
    assert budget.peek("k", now) == 0


def test_no_stages_still_caps_at_the_budget():
    budget, _ = make(budget_micros=100, stages=[], micros_per_header_unit=1)
    assert budget.acquire("k", 100, 0.0).allowed
    assert not budget.acquire("k", 1, 0.0).allowed


def test_reject_stage_below_100_percent_lowers_the_cap():
    budget, _ = make(budget_micros=1000, stages=[(90, "reject", 0)], micros_per_header_unit=1)
    assert budget.acquire("k", 900, 0.0) == Outcome(True, 1000, 86_400, 100, 86_400)
    assert not budget.acquire("k", 1, 0.0).allowed


def test_decimal_thresholds_are_exact():
    budget, _ = make(budget_micros=1000, stages=[(33.3, "warn", 0), (100, "reject", 0)],
                     micros_per_header_unit=1)
    assert budget.acquire("k", 332, 0.0).warning is None
    assert budget.acquire("k", 1, 0.0).warning == "budget_warn"  # 333 = 33.3% of 1000


def test_throttle_delay_is_capped_at_30_seconds():
    budget, _ = make(stages=[(0, "throttle", 45_000), (100, "reject", 0)])
    out = budget.acquire("k", 1, 0.0)
    assert (out.warning, out.delay_ms) == ("budget_throttle", 30_000)


def test_header_units():
    budget, _ = make(budget_micros=2_500_000)
    out = budget.acquire("k", 1_600_000, 0.0)
    assert (out.limit, out.remaining) == (3, 0)  # ceil(2.5) USD; floor(0.9) USD left
    budget, _ = make(budget_micros=1)  # a millionth of a dollar still shows limit 1
    assert budget.acquire("k", 0, 0.0).limit == 1
    budget, _ = make(budget_micros=5000, micros_per_header_unit=1000)
    out = budget.acquire("k", 1500, 0.0)
    assert (out.limit, out.remaining) == (5, 3)  # header unit = 1000 micros
    assert budget.peek("k", 0.0) == 3500


PERIOD_CASES = [
    # period, last second of a period, its length, the next period's length
    ("5m", "2026-01-01T00:04:59", 300, 300),
    ("1h", "2026-01-01T00:59:59", 3600, 3600),
    ("1d", "2026-01-01T23:59:59", 86_400, 86_400),
    ("7d", "2026-01-04T23:59:59", 7 * 86_400, 7 * 86_400),  # Sunday -> Monday
    ("1mo", "2028-01-31T23:59:59", 31 * 86_400, 29 * 86_400),  # Jan -> leap Feb
    ("1mo", "2028-02-29T23:59:59", 29 * 86_400, 31 * 86_400),  # leap Feb -> Mar
    ("1mo", "2026-02-28T23:59:59", 28 * 86_400, 31 * 86_400),
    ("1mo", "2026-12-31T23:59:59", 31 * 86_400, 31 * 86_400),  # Dec -> Jan
]


@pytest.mark.parametrize(("period", "last_second", "length_s", "next_length_s"), PERIOD_CASES)
def test_budget_resets_exactly_at_the_period_boundary(period, last_second, length_s,
                                                      next_length_s):
    budget, store = make(period=period, stages=[(100, "reject", 0)])
    now = ts(last_second) + 0.5
    assert budget.acquire("k", 10 * USD, now) == Outcome(True, 10, length_s, 0, 1)
    assert budget.acquire("k", 1, now) == Outcome(False, 10, length_s, 0, 1, 1,
                                                  "budget_exhausted")
    boundary = ts(last_second) + 1
    assert budget.acquire("k", 4 * USD, boundary) == Outcome(True, 10, next_length_s, 6,
                                                             next_length_s)
    assert store.get("k") == (boundary + next_length_s, 4 * USD)


def test_refund_in_same_period_and_never_below_zero():
    budget, store = make()
    now = float(ts("2026-01-01T10:00:00"))
    budget.acquire("k", 3 * USD, now)
    assert budget.refund("k", 1 * USD, now, now + 60) == 2 * USD
    assert budget.peek("k", now + 60) == 8 * USD
    assert budget.refund("k", 5 * USD, now, now + 60) == 0
    assert store.sweep(now + 60, 10) == 1  # zero spend == no state
    assert budget.refund("k", 5 * USD, now, now + 60) == 0


def test_refund_after_period_end_does_not_touch_the_new_period():
    budget, _ = make()
    charged_at = ts("2026-01-01T23:59:59") + 0.5
    budget.acquire("k", 6 * USD, charged_at)
    new_day = float(ts("2026-01-02T00:00:01"))
    budget.acquire("k", 2 * USD, new_day)
    assert budget.refund("k", 6 * USD, charged_at, new_day) == 2 * USD
    assert budget.peek("k", new_day) == 8 * USD


def test_charge_overdraws_then_rejects():
    budget, _ = make()
    now = 0.0
    budget.acquire("k", 9 * USD, now)
    assert budget.charge("k", 3 * USD, now) == 12 * USD
    assert budget.peek("k", now) == -2 * USD
    out = budget.acquire("k", 0, now)
    assert (out.allowed, out.remaining) == (False, 0)


def test_keys_are_independent():
    budget, _ = make(budget_micros=10, micros_per_header_unit=1)
    assert budget.acquire("a", 10, 0.0).allowed
    assert budget.acquire("b", 10, 0.0).allowed
    assert not budget.acquire("a", 1, 0.0).allowed


def test_invalid_configuration():
    with pytest.raises(ValueError, match="unknown period"):
        make(period="2d")
    with pytest.raises(ValueError, match="unknown staged action"):
        make(stages=[(50, "alert", 0)])
    with pytest.raises(ValueError, match="must be positive"):
        make(budget_micros=0)


@settings(max_examples=300, deadline=None)
@given(budget_micros=st.integers(1, 10**9),
       steps=st.lists(st.tuples(st.floats(0, 3), st.integers(0, 3 * 10**8)), max_size=80))
def test_spend_within_one_period_never_exceeds_budget(budget_micros, steps):
    budget, _ = make(budget_micros=budget_micros, period="1mo")
    now = float(ts("2026-03-01T00:00:00"))  # 240 s of steps stay inside March
    charged = 0
    for dt_s, cost in steps:
        now += dt_s
        out = budget.acquire("k", cost, now)
        if out.allowed:
            charged += cost
        assert charged <= budget_micros
        assert budget.peek("k", now) == budget_micros - charged
