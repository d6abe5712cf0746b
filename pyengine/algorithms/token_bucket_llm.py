"""LLM token limits: tokens per minute (bucket), tokens per UTC day (counter), per-request caps."""

import math

from pyengine.algorithms.cost_based import CostBudget
from pyengine.algorithms.outcome import Outcome
from pyengine.algorithms.token_bucket import TokenBucket
from pyengine.state import keys
from pyengine.state.store import Store

# The TPM bucket is stored under `key`, the TPD counter under keys.day(key) (pyengine.state.keys).
_day = keys.day


class LLMTokenLimiter:
    """Reserve-then-settle limiter for LLM tokens.

    * TPM: a token bucket of `burst_tokens` refilling at tokens_per_minute / 60 per second,
      reason ``tpm_exceeded``; its headers say q=tokens_per_minute, w=60.
    * TPD (optional): a counter reset at 00:00 UTC, state ``(day_end_s, used_tokens)``, reason
      ``tpd_exceeded`` with Retry-After = seconds to the next UTC midnight.

    `reserve` is all-or-nothing: TPD is checked (and charged) first, then TPM; a TPM reject
    rolls the TPD charge back at the same instant. So when both are exhausted the client gets
    ``tpd_exceeded`` and the Retry-After that actually helps (midnight), not one TPM refill.

    `tpm` (TokenBucket) and `tpd` (CostBudget in tokens, or None) are the two underlying
    limiters, exposed read-only for peeking at one of them.
    """

    __slots__ = ("tpm", "tpd")

    def __init__(self, store: Store, tokens_per_minute: int, burst_tokens: int,
                 tokens_per_day: int | None = None) -> None:
        self.tpm = TokenBucket(store, tokens_per_minute / 60, burst_tokens, "tpm_exceeded",
                                header_limit=int(tokens_per_minute), header_window_s=60)
        self.tpd = None if tokens_per_day is None else CostBudget(
            store, int(tokens_per_day), "1d", [(100, "reject", 0)],
            micros_per_header_unit=1, reason="tpd_exceeded")

    @staticmethod
    def check_request(prompt_tokens: int, completion_tokens: int,
                      max_prompt_tokens: int | None,
                      max_tokens_per_request: int | None) -> str | None:
        """Per-request caps, checked before any reservation; a None cap is not configured.

        Returns ``prompt_tokens_exceeded`` or ``max_tokens_per_request_exceeded`` (prompt plus
        completion above the cap), prompt first; None when the request fits.
        """
        if max_prompt_tokens is not None and prompt_tokens > max_prompt_tokens:
            return "prompt_tokens_exceeded"
        if max_tokens_per_request is not None and \
                prompt_tokens + completion_tokens > max_tokens_per_request:
            return "max_tokens_per_request_exceeded"
        return None

    def reserve(self, key: str, tokens: int, now_s: float) -> Outcome:
        """Reserve `tokens` against TPM and TPD, all or nothing.

        The allowed Outcome carries the headers of whichever limit is more restrictive
        (lower remaining/limit; TPM on a tie).
        """
        tpd = self.tpd
        if tpd is None:
            return self.tpm.acquire(key, tokens, now_s)
        day_key = _day(key)
        day = tpd.acquire(day_key, tokens, now_s)
        if not day.allowed:
            return day
        minute = self.tpm.acquire(key, tokens, now_s)
        if not minute.allowed:
            tpd.refund(day_key, tokens, now_s, now_s)
            return minute
        # Compare remaining/limit ratios by cross-multiplying: exact, no division.
        return day if day.remaining * minute.limit < minute.remaining * day.limit else minute

    def claims(self, key: str, tokens: int, now_s: float) -> tuple:
        """`reserve` as strict claims for the store, in reserve's order: TPD, then TPM."""
        minute = self.tpm.claim(key, tokens)
        return (minute,) if self.tpd is None else (self.tpd.claim(_day(key), tokens, now_s), minute)

    def settle(self, key: str, reserved_tokens: int, actual_tokens: int,
               reserved_at_s: float, now_s: float) -> None:
        """True the reservation up to actual usage.

        Unused tokens are refunded (TPM never above burst; TPD only if still the same UTC day
        as `reserved_at_s`). Excess is charged without checking: TPM may go into debt, which
        delays later requests, and TPD counts it in today's total.
        """
        excess = actual_tokens - reserved_tokens
        if excess < 0:
            self.refund(key, -excess, reserved_at_s, now_s)
        elif excess > 0:
            self.tpm.charge(key, excess, now_s)
            if self.tpd is not None:
                self.tpd.charge(_day(key), excess, now_s)

    def refund(self, key: str, tokens: int, reserved_at_s: float, now_s: float) -> None:
        """Give back `tokens` reserved at `reserved_at_s` (full rollback, or settle's unused part)."""
        self.tpm.refund(key, tokens, now_s)
        if self.tpd is not None:
            self.tpd.refund(_day(key), tokens, reserved_at_s, now_s)

    def peek(self, key: str, now_s: float) -> int:
        """Whole tokens a request could use now: the lower of TPM and TPD headroom, >= 0."""
        available = math.floor(self.tpm.peek(key, now_s))
        if self.tpd is not None:
            available = min(available, self.tpd.peek(_day(key), now_s))
        return available if available > 0 else 0
