"""Runtime kill switches and overrides shared by every engine of a fleet through the store.

A change answered by one engine's admin API is applied there at once and queued here; the
next round writes it to the store's two overlay hashes (pyengine.fleet.keyspace) and bumps
their version counter. Every engine reads the counter each round (~0.5 s) and, when it
moved, reads both hashes and makes its overlay exactly that: a change made on any engine of
any edge is in force everywhere within a second, and an edge restarted reads them back.
Changes queued while the store is unreachable are written once it is back, in order.
"""

import msgspec

from pyengine.fleet.keyspace import overlay_key, overlay_version_key
from pyengine.overlay.model import OverrideRecord, SwitchRecord
from pyengine.overlay.registry import OVERRIDES, SWITCHES

POLL_INTERVAL_S = 0.5  # contract §8: an admin change takes effect within 1 s
_encode = msgspec.msgpack.encode
_switch = msgspec.msgpack.Decoder(SwitchRecord)
_override = msgspec.msgpack.Decoder(OverrideRecord)


class OverlaySync:
    def __init__(self, engine):
        self.engine = engine
        self.outbox: list[tuple[str, str, bytes | None]] = []  # (kind, id, record or None = removed)
        self.version: int | None = None  # the store's counter as of the last read
        engine.overlay.on_change = self.changed

    def changed(self, kind: str, rec, removed: bool) -> None:
        self.outbox.append((kind, rec.id, None if removed else _encode(rec)))

    async def round(self, client) -> bool:
        """Write what is queued, then read back if anyone changed anything; True when this
        engine's overlay changed."""
        version_key = overlay_version_key()
        if self.outbox:
            pipe = client.pipeline(transaction=False)
            for kind, rec_id, packed in self.outbox:
                if packed is None:
                    pipe.hdel(overlay_key(kind), rec_id)
                else:
                    pipe.hset(overlay_key(kind), rec_id, packed)
            pipe.incr(version_key)
            await pipe.execute()
            self.outbox = []
        raw = await client.get(version_key)
        version = int(raw) if raw is not None else 0
        if version == self.version:
            return False
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(overlay_key(SWITCHES))
        pipe.hgetall(overlay_key(OVERRIDES))
        pipe.get(version_key)
        switches, overrides, raw = await pipe.execute()
        if self.outbox:
            return False  # changed meanwhile here: write that first, read at the next round
        now_s = self.engine.clock.now_s()
        live_s = [r for r in map(_switch.decode, switches.values())
                  if r.expires_at_s is None or r.expires_at_s > now_s]
        live_o = [r for r in map(_override.decode, overrides.values()) if r.expires_at_s > now_s]
        if version == 0 and not live_s and not live_o and self.version is None:
            # A store that never held an overlay: this engine's own records (its state dir,
            # from before fleet mode or an outage) are written there rather than dropped.
            o = self.engine.overlay
            self.outbox = [(SWITCHES, r.id, _encode(r)) for r in o.switches.values()] + \
                          [(OVERRIDES, r.id, _encode(r)) for r in o.overrides.values()]
            self.version = version
            return False
        self.version = int(raw) if raw is not None else 0
        return self.engine.overlay_replaced(live_s, live_o)
