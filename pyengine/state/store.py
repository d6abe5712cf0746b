"""The state-store interface every limiter talks to, and the shape of the values it holds.

Value invariant
---------------
A value is one of:

* a ``float`` -- its own expiry time in UTC epoch seconds. Token buckets store their GCRA
  theoretical arrival time (the instant the bucket is full again) this way: once that instant
  has passed, the bucket is indistinguishable from a brand-new one.
* a ``tuple`` whose item 0 is its expiry time in UTC epoch seconds (int or float). Period
  counters store ``(period_end_s, used)`` this way: at the period's end the counter is void.

An entry whose expiry is ``<= now_s`` is equivalent to an absent one. Readers must treat it so
(every limiter does); ``sweep`` may drop it at any time. This is what lets a store reclaim
memory without knowing anything about the algorithms.

Contract
--------
* Single-threaded: the engine is one process with one event loop, so a store is never called
  concurrently and needs no locking. A read-modify-write inside one limiter call is atomic
  because nothing else runs in between.
* ``get``/``put`` sit on the per-request hot path and must be O(1) and allocate nothing of their own.
* ``delete`` is called on refunds that empty a counter and by admin paths; O(1). Afterwards
  the key reads as absent: ``get`` returns None or an expired value.
* ``sweep`` is called by the server from a periodic timer (never from the decision path) with
  a small ``max_items`` so one call is a short pause. Repeated calls must eventually visit
  every key, including keys added after the walk began. After a bulk load (snapshot restore),
  call ``sweep(now_s, 0)`` once before serving so the store can index the loaded keys.
* Errors: an implementation backed by anything that can fail raises
  ``pyengine.errors.StoreError``; the decision path applies the fail mode once.
"""

from typing import Protocol

# See the module docstring: a float expiry, or a tuple whose item 0 is the expiry.
Value = float | tuple


def expiry_s(value: Value) -> float:
    """The expiry time (UTC epoch seconds) encoded in a stored value."""
    return value if value.__class__ is float else value[0]


class Store(Protocol):
    """Key-value state for limiters; see the module docstring for values and the contract.

    Besides get/put/delete (the limiters' whole interface) the engine uses exactly these
    capabilities: `sweep` and `evictions` (upkeep), `as_dict` (snapshots, the breaker index
    at start, tests) and `mirror` (a value the shared store decided: pyengine.fleet)."""

    evictions: int  # live entries dropped by the store's own bound, ever (a counter)

    def get(self, key: str) -> Value | None:
        """The stored value, or None. May return an expired value: callers compare its expiry."""
        ...

    def put(self, key: str, value: Value) -> None:
        """Store `value` under `key`, replacing any previous value."""
        ...

    def delete(self, key: str) -> None:
        """Make `key` read as absent (None or an expired value); a missing key is not an error."""
        ...

    def mirror(self, key: str, value: Value) -> None:
        """Store a value that the authoritative state already holds: in fleet mode the shared
        store's answer, which must not be pushed back as a change; otherwise the same as put."""
        ...

    def as_dict(self) -> dict[str, Value]:
        """Every entry (expired ones included), read-only, valid until the next store call."""
        ...

    def sweep(self, now_s: float, max_items: int) -> int:
        """Examine up to `max_items` entries, drop the expired ones, return how many were dropped."""
        ...

    def __len__(self) -> int:
        """Number of entries held, expired-but-not-swept ones included."""
        ...
