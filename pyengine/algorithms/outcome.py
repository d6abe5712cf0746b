"""The verdict one limiter returns for one request: allow/reject plus its RateLimit numbers."""

import msgspec


MAX_DELAY_MS = 30_000  # contract §1: a throttle delays a request at most 30 s (the one owner of that cap)

class Outcome(msgspec.Struct, gc=False):
    """One limiter's answer. A rejection is a value, never an exception.

    The numbers map one-to-one onto draft-ietf-httpapi-ratelimit-headers-11 and the legacy
    RateLimit-* trio, so the pipeline copies them without arithmetic. msgspec.Struct with
    gc=False because one is built per rule per request: it is ~3x cheaper to construct than a
    __slots__ class and is never part of a reference cycle.
    """

    allowed: bool
    # Quota units in the window (draft-11 `q`); tokens, requests or header money units.
    limit: int
    # Window length in seconds (draft-11 `w`).
    window_s: int
    # Units left after this request (draft-11 `r`): floor, >= 0. On reject: what is left now.
    remaining: int
    # Seconds until the quota is fully restored / the period resets (draft-11 `t`): ceil, >= 0.
    # On reject it equals retry_after_s.
    reset_s: int
    # Retry-After in seconds: >= 1 on reject, 0 on allow.
    retry_after_s: int = 0
    # Reason code on reject (contract §4), e.g. "rate_limit_exceeded"; None on allow.
    reason: str | None = None
    # X-Fairvisor-Warning on allow: "budget_warn" | "budget_throttle" | None.
    warning: str | None = None
    # Throttle delay before allowing, milliseconds, 0..MAX_DELAY_MS.
    delay_ms: int = 0
