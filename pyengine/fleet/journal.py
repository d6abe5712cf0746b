"""The local state store of a fleet engine: a MemoryStore that also journals what each write meant.

Decisions read and write local values exactly as in embedded mode (the hot path stays a dict
lookup for reads). Every write of shared state also folds its delta into the journal
(pyengine.fleet.kinds), which the sync takes every interval and pushes to the store. Values
learned from the store are written with `mirror`, which journals nothing: they are already
there.
"""

from pyengine.fleet import kinds
from pyengine.state.memory import MemoryStore


class FleetStore(MemoryStore):
    """Single-threaded like every store. `clock()` is the engine clock's now (UTC epoch s)."""

    def __init__(self, clock, max_keys: int) -> None:
        super().__init__(track_dirty=False, max_keys=max_keys)
        self.put = self._journaled_put  # MemoryStore bound dict.__setitem__ here; shadow it again
        self._now_s = clock
        # key -> (kind, accumulator): the deltas made since the sync last took them
        self.pending: dict[str, tuple[str, list]] = {}
        # () -> None, called when a shared key is written that this engine held no value for:
        # the node then syncs early, so a key new here learns its shared value within a
        # round trip instead of a whole interval (pyengine.fleet.node).
        self.on_first_sight = None

    def _journaled_put(self, key: str, value) -> None:
        data = self._data
        old = data.get(key)
        data[key] = value
        entry = self.pending.get(key)
        if entry is None:
            kind = kinds.kind_of(key, value)
            if kind is None:
                return
            self.pending[key] = (kind, kinds.note(None, kind, old, value, self._now_s()))
            if old is None and self.on_first_sight is not None:
                self.on_first_sight()
        else:
            kinds.note(entry[1], entry[0], old, value, self._now_s())

    def delete(self, key: str) -> None:
        old = self._data.get(key)
        if old is None:
            return
        now_s = self._now_s()
        live = old.__class__ is float and old > now_s or old.__class__ is not float and old[0] > now_s
        super().delete(key)
        if not live:
            return
        entry = self.pending.get(key)
        if entry is None:
            kind = kinds.kind_of(key, old)
            if kind is None:
                return
            self.pending[key] = (kind, kinds.note(None, kind, old, None, now_s))
        else:
            kinds.note(entry[1], entry[0], old, None, now_s)

    def mirror(self, key: str, value) -> None:
        """Write a value the store already holds (a sync's or a strict call's answer)."""
        self._data[key] = value

    def take(self) -> dict[str, tuple[str, list]]:
        """The journal since the previous take; the next writes start a new one."""
        pending = self.pending
        self.pending = {}
        return pending
