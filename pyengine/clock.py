"""Time sources: the real wall clock for production, a frozen clock for tests.

Every algorithm takes `now_s` (UTC epoch seconds, float) from the decision path, which reads
the clock once per request so all rules of one request see the same instant.
"""

import time


class SystemClock:
    """UTC wall time that never goes backwards.

    Periods (days, months) are aligned to UTC, so the wall clock is the right source; a step
    backwards (NTP) is clamped to the last value seen, so no bucket refills twice.
    """

    __slots__ = ("_last_s",)

    def __init__(self) -> None:
        self._last_s = 0.0

    def now_s(self) -> float:
        t = time.time()
        if t < self._last_s:
            return self._last_s
        self._last_s = t
        return t


class FakeClock:
    """A clock that moves only when a test tells it to."""

    __slots__ = ("t",)

    def __init__(self, start_s: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.t = float(start_s)

    def now_s(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def set(self, t_s: float) -> None:
        self.t = float(t_s)
