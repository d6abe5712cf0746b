"""The sync: every interval, push this engine's journal to the store and rebase local values on the answer.

One round = one pipeline of merge.lua calls, each carrying up to CHUNK_KEYS changed keys (on
a Redis Cluster, the keys of one hash slot: a script may only touch one), never a round trip
per request. Exactly once: a round carries this engine's next sequence number, and the
script skips a key it already applied that number to; a failed round is resent whole, with
the same number, before anything newer. So an outage loses nothing (the journal and the
unsent round wait, local counters keep enforcing) and a round that half-reached the store is
not counted twice. The answer is each key's merged value; the local value becomes that plus
whatever this engine changed while the round was in flight (pyengine.fleet.kinds.merge).
"""

import logging
import os
from pathlib import Path

import msgspec

from redis.crc import key_slot

from pyengine.fleet import kinds
from pyengine.fleet.keyspace import remote_key

log = logging.getLogger("fairvisor.fleet")

MERGE_LUA = (Path(__file__).parent / "merge.lua").read_text()
CHUNK_KEYS = 500  # keys per merge call: bounds one script's run in Redis (~1 ms) and its reply
# How long the store keeps a value (and the sequence numbers applied to it) past its expiry:
# a round resent within this time after its reply was lost is still recognised.
SLACK_S = 3600
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode


def new_engine_id(index: int) -> str:
    """This process's name in the store's sequence fields: unique per start (a restarted
    engine starts its sequence afresh)."""
    return f"{index}-{os.urandom(6).hex()}"


class Sync:
    """The rounds of one engine; `client` is a redis.asyncio client (single node or cluster)."""

    def __init__(self, store, engine_id: str, clock, metrics=None, by_slot: bool = False):
        self.store = store  # pyengine.fleet.journal.FleetStore
        self.engine_id = engine_id
        self.clock = clock  # () -> UTC epoch s
        self.metrics = metrics  # pyengine.fleet.node.FleetMetrics or None
        self.by_slot = by_slot  # a Redis Cluster: one merge call per hash slot
        self.seq = 0
        self.unsent: tuple[int, dict] | None = None  # a failed round, resent as it was
        self.sha: str | None = None
        self.last_ok_s: float | None = None
        self.last_error: str | None = None

    @property
    def backlog_keys(self) -> int:
        """Keys changed here that the store has not confirmed yet."""
        return len(self.store.pending) + (len(self.unsent[1]) if self.unsent else 0)

    async def load_script(self, client) -> None:
        self.sha = await client.script_load(MERGE_LUA)

    async def round(self, client) -> int:
        """Push what is due; returns the keys confirmed. Raises on a store error (the round
        then waits in `unsent`)."""
        if self.unsent is None:
            batch = self.store.take()
            if not batch:
                self.last_ok_s = self.clock()
                return 0
            self.seq += 1
            self.unsent = (self.seq, batch)
            return await self._push(client)
        done = await self._push(client)  # the resent round first, then what came meanwhile
        return done + await self.round(client)

    def _calls(self, items: list) -> list[list]:
        """The round's keys split into merge calls: chunks, or per hash slot on a cluster."""
        if not self.by_slot:
            return [items[i:i + CHUNK_KEYS] for i in range(0, len(items), CHUNK_KEYS)]
        groups: dict[int, list] = {}
        for item in items:
            groups.setdefault(key_slot(remote_key(item[0])), []).append(item)
        return [g[i:i + CHUNK_KEYS] for g in groups.values() for i in range(0, len(g), CHUNK_KEYS)]

    async def _push(self, client) -> int:
        seq, batch = self.unsent
        items = list(batch.items())
        calls = self._calls(items)
        head = (self.engine_id, seq, repr(self.clock()), SLACK_S)
        pipe = client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(self.sha, len(call), *[remote_key(key) for key, _ in call], *head,
                         *[_encode(acc) for _, (_, acc) in call])
        replies = await pipe.execute(raise_on_error=False)
        failed = None
        for call, reply in zip(calls, replies):
            if isinstance(reply, Exception):
                failed = failed or reply
            else:
                self._rebase(call, reply)
        if failed is not None:
            raise failed
        self.unsent = None
        self.last_ok_s = self.clock()
        self.last_error = None
        if self.metrics is not None:
            self.metrics.keys_synced.inc((), len(items))
        return len(items)

    def _rebase(self, call, replies) -> None:
        store = self.store
        pending = store.pending
        now_s = self.clock()
        for (key, (kind, _)), raw in zip(call, replies):
            merged = _decode(raw)
            later = pending.get(key)
            if later is not None and later[0] == kind:
                merged = kinds.merge(kind, merged, later[1], now_s, self.engine_id)
            store.mirror(key, kinds.to_local(kind, merged))

    def failed(self, exc: BaseException) -> None:
        text = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else "no detail given")
        self.last_error = f"{type(exc).__name__}: {text}"[:300]
        if self.metrics is not None:
            self.metrics.sync_errors.inc(())
