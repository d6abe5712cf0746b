"""Spend circuit breaker: closed / open / half-open over a sliding minute of spend, per key."""

import math

from pyengine.state.store import Store

# Stored and exported state codes (the fairvisor_circuit_state gauge uses the same numbers).
CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}
WINDOW_S = 60  # the sliding minute
MAX_PROBATION_S = 60.0  # half-open lasts min(reset, one sliding minute)


class SpendBreaker:
    """Trips when a key's spend over the sliding minute would exceed `threshold` (spend units).

    Spend rate: a sliding-window counter over minute buckets aligned to the UTC minute grid,
    ``rate = prev * (1 - elapsed_in_bucket / 60) + cur``; bounded state, at most
    prev + cur of error in the weighting, never an under-count of the current bucket.

    Transitions (``check`` on each request, with the request's spend):
      * closed / half-open: if rate + spend > threshold, the breaker opens: the request is
        refused and not counted, and the window is cleared (half-open then measures afresh).
        Otherwise the spend is counted and the request passes.
      * open: every request is refused with Retry-After = seconds until half-open.
      * open for `reset_s` -> half-open; half-open for `probation_s` without tripping -> closed.
    Time-driven transitions are derived on read, never by a timer.

    State: ``(expiry_s, state, since_s, bucket_start_s, prev, cur)``. `since_s` is when the
    stored state began. expiry_s is when the entry means nothing any more (closed, empty
    window), so the store can drop it (invariant: expired == absent == closed, no spend).
    """

    __slots__ = ("_get", "_put", "threshold", "reset_s", "probation_s")

    def __init__(self, store: Store, threshold: float, reset_s: float) -> None:
        if not (0 < threshold < math.inf and 0 < reset_s < math.inf):
            raise ValueError(f"threshold and reset_s must be positive and finite, got {threshold!r}, {reset_s!r}")
        self._get = store.get
        self._put = store.put
        self.threshold = threshold
        self.reset_s = float(reset_s)
        self.probation_s = min(self.reset_s, MAX_PROBATION_S)

    def state_of(self, value, now_s: float) -> tuple[int, float]:
        """(effective state, since_s) of a stored value at `now_s`."""
        if value is None or value[0] <= now_s:
            return CLOSED, now_s
        state, since_s = value[1], value[2]
        if state == OPEN:
            if now_s < since_s + self.reset_s:
                return OPEN, since_s
            state, since_s = HALF_OPEN, since_s + self.reset_s
        if state == HALF_OPEN:
            if now_s < since_s + self.probation_s:
                return HALF_OPEN, since_s
            return CLOSED, since_s + self.probation_s
        return state, since_s

    @staticmethod
    def _window(value, now_s: float) -> tuple[int, float, float]:
        """(bucket_start_s, prev, cur) rolled forward to the bucket containing `now_s`."""
        start = int(now_s // WINDOW_S) * WINDOW_S
        if value is None or value[0] <= now_s:
            return start, 0, 0
        stored = value[3]
        if stored == start:
            return start, value[4], value[5]
        if stored == start - WINDOW_S:
            return start, value[5], 0
        return start, 0, 0

    def rate(self, key: str, now_s: float) -> float:
        """Spend over the sliding minute ending now (spend units). Changes nothing."""
        start, prev, cur = self._window(self._get(key), now_s)
        return prev * (1 - (now_s - start) / WINDOW_S) + cur

    def _store(self, key: str, state: int, since_s: float, start: int, prev, cur) -> None:
        expiry = start + 2 * WINDOW_S if (prev or cur) else 0
        if state == OPEN:
            expiry = max(expiry, since_s + self.reset_s + self.probation_s)
        elif state == HALF_OPEN:
            expiry = max(expiry, since_s + self.probation_s)
        self._put(key, (expiry, state, since_s, start, prev, cur))

    def check(self, key: str, spend, now_s: float) -> tuple[int, bool]:
        """Count `spend` for one request. Returns (retry_after_s, opened): 0 = allowed;
        `opened` is True when this very request tripped the breaker."""
        value = self._get(key)
        state, since_s = self.state_of(value, now_s)
        if state == OPEN:
            return max(1, math.ceil(since_s + self.reset_s - now_s)), False
        start, prev, cur = self._window(value, now_s)
        rate = prev * (1 - (now_s - start) / WINDOW_S) + cur
        if rate + spend > self.threshold:
            self._store(key, OPEN, now_s, start, 0, 0)
            return max(1, math.ceil(self.reset_s)), True
        if spend or (value is not None and value[1] != state):
            self._store(key, state, since_s, start, prev, cur + spend)
        return 0, False

    def undo(self, key: str, spend, at_s: float, now_s: float) -> None:
        """Take back `spend` counted at `at_s` (a later rule of the same request refused it)."""
        value = self._get(key)
        if value is None or value[0] <= now_s:
            return
        state, since_s = self.state_of(value, now_s)
        start, prev, cur = self._window(value, now_s)
        at_start = int(at_s // WINDOW_S) * WINDOW_S
        if at_start == start:
            cur = max(0, cur - spend)
        elif at_start == start - WINDOW_S:
            prev = max(0, prev - spend)
        else:
            return
        self._store(key, state, since_s, start, prev, cur)

    def peek(self, key: str, now_s: float) -> tuple[int, float]:
        """(state, rate) of `key` now. Changes nothing."""
        value = self._get(key)
        start, prev, cur = self._window(value, now_s)
        return self.state_of(value, now_s)[0], prev * (1 - (now_s - start) / WINDOW_S) + cur
