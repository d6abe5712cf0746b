"""Bounds on numbers: what a policy may configure (validated) and what a client may claim (clamped).

A client-supplied amount (a cost header or query parameter, a requested max_tokens, a usage
report) is clamped to CLIENT_MAX before any arithmetic. CLIENT_MAX is far above POLICY_MAX,
the largest capacity a policy can configure, so a clamped amount still exceeds every limit
and is rejected: clamping can make a number finite, never make it fit. With rates at least
POLICY_MIN_RATE_PER_S, every deficit / rate stays a finite float (<= 1e21 s), so no limiter
arithmetic can overflow.
"""

import math

POLICY_MAX = 1e12  # largest rate, burst, budget, token count or price a policy may set
POLICY_MIN_RATE_PER_S = 1e-6  # slowest refill: one token per ~11.6 days
POLICY_MIN_BUDGET = 1e-6  # smallest budget: one micro-unit, the unit budgets are counted in
CLIENT_MAX = 1e15  # any client amount above this (or infinite) counts as this
CLIENT_MAX_TOKENS = 10**15  # the same bound for integer token counts


def client_amount(raw: str | None, default: float) -> float:
    """A cost from client text: a finite number in [0, CLIENT_MAX]; `default` when absent,
    not a number, NaN or negative. Never raises."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        return default
    if value > CLIENT_MAX:  # "1e999" parses as inf: absurdly large, not absent
        return CLIENT_MAX
    return value if value >= 0 else default  # NaN fails the comparison too


def client_tokens(value) -> int:
    """A token count from a client: an int in [0, CLIENT_MAX_TOKENS] (others count as 0)."""
    if value.__class__ is not int:
        if isinstance(value, float) and math.isfinite(value) and value > 0:
            value = math.ceil(value)
        else:
            return 0
    if value < 0:
        return 0
    return value if value <= CLIENT_MAX_TOKENS else CLIENT_MAX_TOKENS
