"""Strict rules in the store: one atomic strict.lua call per hash slot, all or nothing by compensation.

`StrictStore.acquire(ops, now_s)` is the backend of pyengine.decision.strict. An op is what a
limiter's `claim` builds: (state key, kind, a, b, c, cost); strict.lua documents the kinds.

Redis Cluster: the keys of one script call must share a hash slot. Every remote key carries the
hash tag of its limit key (keyspace.remote_key: a TPM bucket and its TPD counter share it), so
one strict rule is always one slot, but two strict rules of one request usually are not. The
request's ops are grouped by slot, in request order: one group is one atomic call (exact
all-or-nothing, the case of a single strict rule and of any plain Redis); several groups are
called one after the other, and when a later group refuses (or fails), the groups already
committed are refunded by a second call each (all-or-nothing by compensation). Between the
two, another engine can see the earlier groups charged: it may be refused by a charge that is
about to be refunded, never allowed by one that is not there.

Failure: a call that errs or takes longer than `timeout_s` raises StoreError (the decision
path then enforces on local counters). After an error, or timeouts with no answer for
SILENT_TIMEOUTS deadlines, every acquire raises at once for `retry_s` instead of waiting on a
store that is away. A call that timed out may still have
committed in the store: that request is then counted twice (in the store and locally, which
syncs later), an error towards refusing, never towards allowing.
"""

import asyncio
import logging
import time
from pathlib import Path

import msgspec
from redis.crc import key_slot
from redis.exceptions import RedisError

from ..errors import StoreError
from .batch import ScriptBatch
from .kinds import G, P, to_local
from .keyspace import remote_key
from .sync import SLACK_S

log = logging.getLogger("fairvisor.fleet.strict")

LUA = (Path(__file__).parent / "strict.lua").read_text()
# A value outlives its own expiry in the store by the sync's slack: the HASH also holds the
# sync's sequence numbers (pyengine.fleet.sync), which a strict write must not cut short.
EXPIRY_SLACK_MS = SLACK_S * 1000
# After a failed call, strict requests go local at once for this long, then one tries the store
# again: an outage costs one timeout per RETRY_S, not one per request.
RETRY_S = 0.25
SILENT_TIMEOUTS = 3  # deadlines without any answer before a timeout counts as the store being away
_INVERSE = {"g": "G", "c": "C"}
_KINDS = {"g": G, "G": G, "c": P, "C": P}  # strict.lua's op kinds -> the value kinds of pyengine.fleet.kinds
_decode = msgspec.msgpack.decode


def local_value(kind: str, raw: bytes | None):
    """A stored `v` in the engine's local shape (pyengine.fleet.kinds.to_local)."""
    if raw is None:
        return None
    return to_local(_KINDS[kind], _decode(raw))


def timeout_s(engine_timeout_ms: int) -> float:
    """A strict call's deadline: a third of FAIRVISOR_ENGINE_TIMEOUT_MS (33 ms by default), so that
    a slow store leaves the engine the time to decide locally before the shim gives up on it."""
    return min(max(engine_timeout_ms / 3000, 0.005), 1.0)


class StrictStore:
    """The strict backend over a Remote (pyengine.fleet.url): `.client`, `.is_cluster`.

    Built with remote=None while the store has not been reached yet (`attach` it later): until
    then every acquire raises StoreError, and strict rules are enforced locally."""

    def __init__(self, remote, timeout_s: float, retry_s: float = RETRY_S, clock=time.monotonic):
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.clock = clock
        self.script = None
        self._down_until = 0.0
        self._last_ok_s = 0.0  # when the store last answered a strict call (clock)
        self.compensations = 0  # groups refunded because a later slot refused (tests, status)
        if remote is not None:
            self.attach(remote)

    def attach(self, remote) -> None:
        self.client = remote.client
        self.is_cluster = remote.is_cluster
        self.script = ScriptBatch(self.client, LUA, self.timeout_s)  # one round trip per loop iteration

    async def acquire(self, ops, now_s: float):
        """(index of the refusing op or None, the value found per op; None when absent or not read)."""
        if self.script is None:
            raise StoreError("state store not reached yet")
        if self._down_until and self.clock() < self._down_until:
            raise StoreError("state store unavailable (strict calls resume shortly)")
        remote = [remote_key(op[0]) for op in ops]
        found = [None] * len(ops)
        done = []
        try:
            for group in self._groups(remote):
                status, values = await self._call(remote, ops, group, now_s, refund=False)
                for i, raw in zip(group, values):
                    found[i] = local_value(ops[i][1], raw)
                if status:
                    await self._refund(remote, ops, done, now_s)
                    return group[status - 1], found
                done.append(group)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)
            if done:
                await self._refund(remote, ops, done, now_s)
            raise StoreError(f"strict call failed: {type(exc).__name__}") from None
        self._down_until = 0.0
        self._last_ok_s = self.clock()
        return None, found

    def _failed(self, exc: BaseException) -> None:
        """An error means the store is away: every strict request goes local for retry_s. A late
        answer alone does not, while other answers still arrive: under CPU load the lateness is
        often this engine's own (its event loop behind), and one late call must not move a
        quarter second of requests off the store. Silence for SILENT_TIMEOUTS deadlines does."""
        now = self.clock()
        if isinstance(exc, asyncio.TimeoutError) and now - self._last_ok_s < SILENT_TIMEOUTS * self.timeout_s:
            return
        if not self._down_until:
            log.warning("strict rules enforced locally for %.2f s: the state store failed a call (%s)",
                        self.retry_s, type(exc).__name__)
        self._down_until = now + self.retry_s

    def _groups(self, remote) -> list[list[int]]:
        if not self.is_cluster or len(remote) == 1:
            return [list(range(len(remote)))]
        by_slot: dict[int, list[int]] = {}
        for i, key in enumerate(remote):
            by_slot.setdefault(key_slot(key), []).append(i)
        return list(by_slot.values())  # dicts keep first-appearance order: request order

    async def _call(self, remote, ops, group, now_s: float, refund: bool):
        args = [repr(now_s), EXPIRY_SLACK_MS]
        for i in group:
            _, kind, a, b, c, cost = ops[i]
            args += (_INVERSE[kind] if refund else kind, repr(a), repr(b), repr(c), repr(cost))
        reply = await self.script.call([remote[i] for i in group], args)
        return reply[0], reply[1:]

    async def _refund(self, remote, ops, groups, now_s: float) -> None:
        """Give back what the committed `groups` took (best effort: a failure is logged, and the
        charge then stays, an error towards refusing)."""
        for group in groups:
            self.compensations += 1
            try:
                await self._call(remote, ops, group, now_s, refund=True)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("strict compensation failed, %d ops stay charged: %s", len(group), type(exc).__name__)


async def attach_when_reachable(store: StrictStore, url: str, connect, retry_s: float = 1.0) -> None:
    """Connect `store` to `url` (pyengine.fleet.url.connect), trying again every `retry_s` while the
    store cannot be reached: an engine starts, and enforces locally, without its store."""
    while True:
        try:
            remote = await connect(url)
            store.attach(remote)
            await store.script.load()
            return
        except ConnectionError as exc:  # RemoteError: the message shows the URL masked
            log.warning("strict rules enforced locally until the state store answers: %s", exc)
            await asyncio.sleep(retry_s)
