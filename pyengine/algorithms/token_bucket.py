"""Token bucket in GCRA form: one float per key, continuous refill, charge only on allow."""

import math

from pyengine.algorithms.outcome import Outcome
from pyengine.state.store import Store

# math.floor/ceil rather than int(): a type call is ~2x slower than a builtin function call.
_ceil = math.ceil
_floor = math.floor

# Float tolerance, in seconds of refill. Buckets store an absolute epoch-seconds float whose
# resolution today is 2**-22 s (~2.4e-7 s, until 2038; 4.8e-7 s until 2106), so every stored
# state carries up to half that as rounding error. A microsecond of refill absorbs it: token
# counts within that distance of an integer are snapped to it (so errors cannot accumulate
# across a burst), and a request short by less than that is allowed.
_TOLERANCE_S = 1e-6


class TokenBucket:
    """A bucket of `burst` tokens refilling at `rate_per_s` tokens per second, keyed by string.

    State: the stored value is the theoretical arrival time `tat` (UTC epoch seconds), the
    instant the bucket is full again. Tokens available at `now` are
    ``burst - max(0, tat - now) * rate``; a missing or expired `tat` means a full bucket, which
    is why a new bucket starts full. Charging `cost` tokens moves `tat` to
    ``now + (burst - (tokens - cost)) / rate``.

    Costs are in tokens (>= 0; any float, usually an int). The pipeline validates them.
    """

    __slots__ = ("_get", "_put", "_rate", "_burst", "_eps_tokens", "_eps_s",
                 "_limit", "_window_s", "_reason")

    def __init__(self, store: Store, rate_per_s: float, burst: float,
                 reason: str = "rate_limit_exceeded", *,
                 header_limit: int | None = None, header_window_s: int | None = None) -> None:
        if not (0 < rate_per_s < math.inf and 0 < burst < math.inf):
            raise ValueError(f"rate_per_s and burst must be positive and finite, "
                             f"got {rate_per_s!r} and {burst!r}")
        # Bound once: the hot path then skips an attribute lookup on the store.
        self._get = store.get
        self._put = store.put
        self._rate = float(rate_per_s)
        self._burst = float(burst)
        # Capped below half a token so that snapping never rounds a real half-token away.
        self._eps_tokens = min(0.25, self._rate * _TOLERANCE_S)
        self._eps_s = self._eps_tokens / self._rate
        # Header numbers (draft-11 q and w). The LLM limiter overrides them with TPM / 60 s.
        self._limit = int(burst) if header_limit is None else header_limit
        self._window_s = _ceil(burst / self._rate) if header_window_s is None else header_window_s
        self._reason = reason

    def acquire(self, key: str, cost: float, now_s: float) -> Outcome:
        """Take `cost` tokens if available now; a rejected request is not charged."""
        tat = self._get(key)
        burst = self._burst
        eps = self._eps_tokens
        if tat is None or tat <= now_s:
            tokens = burst
        else:
            tokens = burst - (tat - now_s) * self._rate
            # Nearest integer without a function call: adding 1.5 * 2**52 pushes the fraction
            # out of the mantissa (round-half-even), valid for |tokens| < 2**51. Past that,
            # `whole` is merely off and the snap is skipped, which only costs exactness.
            whole = (tokens + 6755399441055744.0) - 6755399441055744.0
            if -eps < tokens - whole < eps:
                tokens = whole
        after = tokens - cost
        if after > -eps:
            debt_s = (burst - after) / self._rate  # time until full again
            self._put(key, now_s + debt_s)
            return Outcome(True, self._limit, self._window_s,
                           _floor(after + eps) if after > 0 else 0, _ceil(debt_s - self._eps_s))
        # Reject: the deficit refills at `rate`; never advertise less than one second.
        retry_s = _ceil((-after - eps) / self._rate)
        if retry_s < 1:
            retry_s = 1
        return Outcome(False, self._limit, self._window_s,
                       _floor(tokens) if tokens > 0 else 0, retry_s, retry_s, self._reason)

    def claim(self, key: str, cost: float) -> tuple:
        """`acquire` as a strict claim for the store (pyengine/fleet/strict.lua runs the same
        arithmetic there): (key, "g", rate per s, burst, tolerance in tokens, cost)."""
        return (key, "g", self._rate, self._burst, self._eps_tokens, float(cost))

    def _tokens(self, key: str, now_s: float) -> float:
        """Tokens available now, snapped like in acquire; may be negative after `charge`."""
        tat = self._get(key)
        if tat is None or tat <= now_s:
            return self._burst
        tokens = self._burst - (tat - now_s) * self._rate
        whole = round(tokens)
        return float(whole) if abs(tokens - whole) < self._eps_tokens else tokens

    def _store(self, key: str, tokens: float, now_s: float) -> None:
        # A full bucket stores tat = now: already expired, i.e. the same as no state at all.
        debt_s = (self._burst - tokens) / self._rate
        self._put(key, now_s + debt_s if debt_s > 0 else now_s)

    def peek(self, key: str, now_s: float) -> float:
        """Tokens available now (<= burst; negative while in debt). Changes nothing."""
        return self._tokens(key, now_s)

    def refund(self, key: str, cost: float, now_s: float) -> float:
        """Give back `cost` tokens (uncommit), never above burst. Returns tokens available after.

        At the same instant as the acquire it undoes, this restores the exact prior state.
        """
        tokens = self._tokens(key, now_s) + cost
        if tokens > self._burst:
            tokens = self._burst
        self._store(key, tokens, now_s)
        return tokens

    def charge(self, key: str, cost: float, now_s: float) -> float:
        """Take `cost` tokens without checking; may leave the bucket in debt (settlement).

        Returns tokens available after (negative while in debt).
        """
        tokens = self._tokens(key, now_s) - cost
        self._store(key, tokens, now_s)
        return tokens
