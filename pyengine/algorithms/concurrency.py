"""Requests in flight per key, each holding a lease that its end releases or that expires by itself."""

import math

from pyengine.algorithms.outcome import Outcome
from pyengine.state.store import Store

MAX_IN_FLIGHT = 10_000  # per key: the leases live in one tuple, copied on each acquire and release
RETRY_AFTER_S = 1  # contract §1: a slot frees when any request ends, which is soon or never known


class InFlight:
    """At most `max_in_flight` requests per key at once; a request that is never reported
    finished stops counting `lease_s` seconds after it started.

    State: the tuple ``(expiry_s, end_1, ..., end_n)``: the lease end times (UTC epoch s) of the
    requests in flight, ascending; item 0 is the latest of them (the store expiry: once every
    lease has ended, the entry reads as absent and the sweep reclaims it). A lease is known by
    its end time, which `acquire` returns as the charged amount and `release` takes back.
    """

    __slots__ = ("_get", "_put", "_delete", "_max", "_lease_s")

    def __init__(self, store: Store, max_in_flight: int, lease_s: float) -> None:
        if not 1 <= max_in_flight <= MAX_IN_FLIGHT or not 0 < lease_s < math.inf:
            raise ValueError(f"max_in_flight must be 1..{MAX_IN_FLIGHT} and lease_s positive and finite")
        self._get, self._put, self._delete = store.get, store.put, store.delete
        self._max = max_in_flight
        self._lease_s = lease_s

    def _live(self, key: str, now_s: float) -> tuple:
        """The lease ends still running at now_s, ascending."""
        v = self._get(key)
        if v is None or v[0] <= now_s:
            return ()
        ends = v[1:]
        if ends[0] > now_s:
            return ends
        return tuple(e for e in ends if e > now_s)

    def acquire(self, key: str, now_s: float) -> tuple[Outcome, float]:
        """(Outcome, the lease's end time); the lease is taken only on allow."""
        ends = self._live(key, now_s)
        n = len(ends)
        if n >= self._max:
            return Outcome(allowed=False, limit=self._max, window_s=self._window(), remaining=0,
                           reset_s=RETRY_AFTER_S, retry_after_s=RETRY_AFTER_S, reason="concurrency_exceeded"), 0.0
        end = now_s + self._lease_s
        ends = ends + (end,)  # now_s never steps back, so this stays ascending
        self._put(key, (end,) + ends)
        return Outcome(allowed=True, limit=self._max, window_s=self._window(), remaining=self._max - n - 1,
                       reset_s=0), end

    def release(self, key: str, lease_end_s: float, now_s: float) -> bool:
        """End the lease `acquire` returned; False when it had ended already (expired or released)."""
        v = self._get(key)
        if v is None or lease_end_s <= now_s:
            return False
        ends = list(v[1:])
        try:
            ends.remove(lease_end_s)
        except ValueError:
            return False
        ends = [e for e in ends if e > now_s]
        if ends:
            self._put(key, (ends[-1],) + tuple(ends))
        else:
            self._delete(key)
        return True

    def in_flight(self, key: str, now_s: float) -> int:
        return len(self._live(key, now_s))

    def _window(self) -> int:
        return max(1, math.ceil(self._lease_s))
