"""Retry-After jitter: each client is told a slightly different wait, so rejected clients do not
all retry in the same second (a kill switch used to send every client 3600).

    Retry-After = base + floor(u * MAX_RATIO * base)        u in [0, 1), per client

* Deterministic: `u` is a keyed hash of who is asking (the rejecting policy, rule and reason,
  the rejecting limiter's state key, which holds this client's key values, and the client
  address), so one client hears the same number every time and different clients hear
  different ones. Only what decided goes in: not whichever other keys the request happened to
  be read for (a kill switch added on another header must not move every client's wait).
* Never earlier: the result is >= base, and base is the RateLimit `t` (contract §4), so
  Retry-After is never earlier than `t`; it stays an integer >= 1.
* floor, not ceil: a base of 1 s stays 1 (nothing shorter than a second can be said), and small
  bases move by whole seconds only.
* Budgets (`budget_exhausted`): the base is the time to the period reset; the jitter is further
  capped at BUDGET_WINDOW_SHARE of the period, so every retry lands early in the new window
  (within its first tenth) instead of up to half a month late on a monthly budget.
"""

import hashlib

MAX_RATIO = 0.5  # at most +50 % of the base
BUDGET_WINDOW_SHARE = 0.1  # budgets: jitter at most this share of the budget period
_KEY = b"fairvisor-retry-after-jitter-v1"
_SCALE = float(1 << 64)


def unit(identity: str) -> float:
    """A uniform number in [0, 1) from `identity` (BLAKE2b, keyed: stable across engines and restarts)."""
    digest = hashlib.blake2b(identity.encode("utf-8", "surrogatepass"), digest_size=8, key=_KEY).digest()
    return int.from_bytes(digest, "big") / _SCALE


def jittered_s(base_s: int, identity: str, window_s: int = 0) -> int:
    """base_s plus this identity's share of up to MAX_RATIO x base_s (capped by BUDGET_WINDOW_SHARE
    x window_s when window_s > 0). Never less than base_s, never less than 1."""
    spread = MAX_RATIO * base_s
    if window_s > 0:
        spread = min(spread, BUDGET_WINDOW_SHARE * window_s)
    return max(1, base_s + int(unit(identity) * spread))


def identity_of(d, view, client_ip) -> str:
    """Who is being told to wait: the rejection's policy, rule and reason, the rejecting
    limiter's state key (length-prefixed values, pyengine.state.keys) and the client address
    (`client_ip(view)`: the bundle's ip:address extractor, so behind trusted proxies it is the
    real client). The parts are joined with a group separator; a client value holding one could at
    worst share another client's jitter, never a counter."""
    client = client_ip(view) or ""
    return "\x1d".join((d.policy_id or "", d.rule or "", d.reason or "", d.key or "", client))


def apply(d, view, client_ip) -> None:
    """Jitter a rejecting Decision's Retry-After in place (the one call site: Engine.decide)."""
    if d.retry_after_s <= 1:
        return  # floor(u * 0.5 * 1) is always 0
    window_s = d.outcome.window_s if d.reason == "budget_exhausted" and d.outcome is not None else 0
    d.retry_after_s = jittered_s(d.retry_after_s, identity_of(d, view, client_ip), window_s)
