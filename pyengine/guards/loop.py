"""Loop detection: an exact sliding window of identical-request timestamps per fingerprint."""

import math

from pyengine.algorithms.outcome import MAX_DELAY_MS
from pyengine.state.store import Store



class LoopDetector:
    """Flags the `threshold`-th identical request seen within any `window_s` span.

    State per fingerprint key: ``(expiry_s, t_1, ..., t_k)``: the k <= threshold - 1 most
    recent attempt times (UTC epoch s, ascending). An attempt at `now` counts the stored
    times with ``t > now - window_s``; it is a loop when there are threshold - 1 of them.
    Older times can never count again, so only threshold - 1 are kept, and the expiry
    ``t_k + window_s`` is exactly when none is left (store invariant: expired == absent).

    Every attempt is recorded, including the ones flagged: an agent that keeps repeating stays
    flagged until it pauses for a whole window, which is what Retry-After tells it.
    Cost: O(threshold) per call, one get and one put.
    """

    __slots__ = ("_get", "_put", "window_s", "keep", "retry_after_s", "delay_ms")

    def __init__(self, store: Store, window_s: float, threshold: int) -> None:
        if not (0 < window_s < math.inf) or threshold < 2:
            raise ValueError(f"need window_s > 0 and threshold >= 2, got {window_s!r}, {threshold!r}")
        self._get = store.get
        self._put = store.put
        self.window_s = float(window_s)
        self.keep = threshold - 1
        # Reason loop_detected carries Retry-After = the window (whole seconds, >= 1).
        self.retry_after_s = max(1, math.ceil(window_s))
        # Throttle: the spacing at which identical requests stop tripping the detector
        # (threshold - 1 gaps of this length span a full window), capped like budget throttles.
        self.delay_ms = min(MAX_DELAY_MS, math.ceil(window_s * 1000 / self.keep))

    def hit(self, key: str, now_s: float) -> bool:
        """Record one attempt at `now_s`; True when it is a loop (threshold reached in window)."""
        value = self._get(key)
        if value is None or value[0] <= now_s:
            recent: tuple = ()
        else:
            cutoff = now_s - self.window_s
            i, n = 1, len(value)
            while i < n and value[i] <= cutoff:
                i += 1
            recent = value[i:]
        looping = len(recent) >= self.keep
        recent = (recent + (now_s,))[-self.keep:]
        self._put(key, (now_s + self.window_s,) + recent)
        return looping

    def count(self, key: str, now_s: float) -> int:
        """Attempts currently inside the window (at most threshold - 1). Changes nothing."""
        value = self._get(key)
        if value is None or value[0] <= now_s:
            return 0
        cutoff = now_s - self.window_s
        return sum(1 for t in value[1:] if t > cutoff)
