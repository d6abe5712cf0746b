"""Spend budget per UTC period with staged warn/throttle/reject, in integer micro-units."""

import math
from fractions import Fraction

from pyengine.algorithms.outcome import MAX_DELAY_MS, Outcome
from pyengine.algorithms.periods import PERIODS, period_bounds
from pyengine.state.store import Store

_floor = math.floor

_WARNINGS = {"warn": "budget_warn", "throttle": "budget_throttle"}


def _percent(threshold_percent: float) -> Fraction:
    # Through repr so that 33.3 means 333/1000 as the user wrote it, not the binary float
    # 33.29999...; thresholds are then compared exactly against integer micros.
    return Fraction(repr(threshold_percent)) / 100


class CostBudget:
    """`budget_micros` of spend per UTC `period`, keyed by string.

    State: the tuple ``(period_end_s, spent_micros)``; both ints. Its item 0 doubles as the
    store expiry, so a counter from a past period reads as 0 and the sweep reclaims it.

    `stages` are ``(threshold_percent, action, delay_ms)`` with action warn|throttle|reject.
    A request whose cost would take spend above the lowest reject threshold (never above 100%
    of the budget) is rejected and not charged. Otherwise it is charged, and the highest
    warn/throttle stage whose threshold is <= the spend after it sets the warning.

    Header numbers are in header units of `micros_per_header_unit` micros (default: whole
    currency units). The LLM limiter reuses this class as its tokens-per-day counter, with
    one token per unit and reason ``tpd_exceeded``.
    """

    __slots__ = ("_get", "_put", "_delete", "_budget", "_period", "_cap", "_stages",
                 "_first_stage", "_unit", "_limit", "_reason", "_start_s", "_end_s",
                 "_window_s")

    def __init__(self, store: Store, budget_micros: int, period: str,
                 stages: list[tuple[float, str, int]],
                 micros_per_header_unit: int = 1_000_000, *,
                 reason: str = "budget_exhausted") -> None:
        if budget_micros <= 0 or micros_per_header_unit <= 0:
            raise ValueError("budget_micros and micros_per_header_unit must be positive")
        if period not in PERIODS:
            raise ValueError(f"unknown period {period!r}; expected one of {sorted(PERIODS)}")
        self._get = store.get
        self._put = store.put
        self._delete = store.delete
        self._budget = budget_micros
        self._period = period
        self._unit = micros_per_header_unit
        self._reason = reason
        # Highest spend (micros) a request may bring the counter to: after > cap rejects.
        cap = budget_micros
        # (lowest spend that triggers, warning, delay_ms), highest threshold first.
        warn_stages: list[tuple[int, str, int]] = []
        for threshold_percent, action, delay_ms in stages:
            if action == "reject":
                cap = min(cap, _floor(_percent(threshold_percent) * budget_micros))
            elif action in _WARNINGS:
                delay = min(max(int(delay_ms or 0), 0), MAX_DELAY_MS) if action == "throttle" else 0
                trigger = math.ceil(_percent(threshold_percent) * budget_micros)
                warn_stages.append((trigger, _WARNINGS[action], delay))
            else:
                raise ValueError(f"unknown staged action {action!r}")
        warn_stages.sort(key=lambda stage: stage[0], reverse=True)
        self._cap = cap
        self._stages = tuple(warn_stages)
        # Below this spend no stage applies: the common case costs one comparison.
        self._first_stage = warn_stages[-1][0] if warn_stages else math.inf
        self._limit = max(1, -(-budget_micros // micros_per_header_unit))  # ceil, >= 1
        # Current period bounds, cached; (0, 0) makes the first call compute them.
        self._start_s = 0
        self._end_s = 0
        self._window_s = 0

    def _roll(self, now_s: float) -> None:
        self._start_s, self._end_s = period_bounds(self._period, now_s)
        self._window_s = self._end_s - self._start_s  # for 1mo: this month's length

    def _spent(self, key: str) -> int:
        value = self._get(key)
        return value[1] if value is not None and value[0] == self._end_s else 0

    def acquire(self, key: str, cost_micros: int, now_s: float) -> Outcome:
        """Charge `cost_micros` unless it would exceed the budget; a rejection is not charged."""
        if not self._start_s <= now_s < self._end_s:
            self._roll(now_s)
        end_s = self._end_s
        value = self._get(key)
        spent = value[1] if value is not None and value[0] == end_s else 0
        after = spent + cost_micros
        reset_s = end_s - _floor(now_s)  # ceil(end - now) >= 1; also the next period's start
        if after > self._cap:
            left = self._budget - spent
            return Outcome(False, self._limit, self._window_s,
                           left // self._unit if left > 0 else 0, reset_s, reset_s, self._reason)
        self._put(key, (end_s, after))
        left = self._budget - after
        remaining = left // self._unit if left > 0 else 0
        if after >= self._first_stage:
            for trigger, warning, delay_ms in self._stages:
                if after >= trigger:
                    return Outcome(True, self._limit, self._window_s, remaining, reset_s,
                                   0, None, warning, delay_ms)
        return Outcome(True, self._limit, self._window_s, remaining, reset_s)

    def claim(self, key: str, cost_micros: int, now_s: float) -> tuple:
        """`acquire` as a strict claim for the store (pyengine/fleet/strict.lua): (key, "c",
        period end s, highest spend allowed after it, 0, cost). Staged warnings come from replay."""
        if not self._start_s <= now_s < self._end_s:
            self._roll(now_s)
        return (key, "c", self._end_s, self._cap, 0, cost_micros)

    def refund(self, key: str, cost_micros: int, charged_at_s: float, now_s: float) -> int:
        """Give back `cost_micros` charged at `charged_at_s`, only if that was in the current
        period (a past period's spend is gone already); never below 0. Returns spend after."""
        if not self._start_s <= now_s < self._end_s:
            self._roll(now_s)
        spent = self._spent(key)
        if not self._start_s <= charged_at_s < self._end_s or spent == 0:
            return spent
        spent = spent - cost_micros if spent > cost_micros else 0
        if spent:
            self._put(key, (self._end_s, spent))
        else:
            self._delete(key)  # a zero counter is the same as no state
        return spent

    def charge(self, key: str, cost_micros: int, now_s: float) -> int:
        """Add `cost_micros` without checking (settlement excess); may overdraw. Returns spend."""
        if not self._start_s <= now_s < self._end_s:
            self._roll(now_s)
        spent = self._spent(key) + cost_micros
        self._put(key, (self._end_s, spent))
        return spent

    def peek(self, key: str, now_s: float) -> int:
        """Micros left in the current period (negative when overdrawn). Changes nothing."""
        if not self._start_s <= now_s < self._end_s:
            self._roll(now_s)
        return self._budget - self._spent(key)
