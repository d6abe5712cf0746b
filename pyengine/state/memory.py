"""In-process state store: one plain dict, with incremental expiry sweeping."""

from itertools import islice

from pyengine.state.store import Value

# When the already-visited part of the sweep's key list holds this many stale slots, squeeze
# them out mid-walk (a pointer memmove, no object touched) instead of waiting for the walk end.
_COMPACT_SLOTS = 1 << 16
# Entries held before the sweep evicts live ones (FAIRVISOR_MAX_STATE_KEYS): about 0.8 GiB of
# limiter state (~160 bytes per key, docs/performance.md). A flood of random keys cannot
# exhaust memory.
DEFAULT_MAX_KEYS = 5_000_000


class MemoryStore:
    """A `Store` over a dict. Single-threaded by contract (see pyengine.state.store).

    Sweeping without a long pause: a live dict iterator cannot be resumed once the dict changes
    size, and copying a million keys costs ~50 ms, so the store keeps its own list of keys for
    the sweep to walk. Only `sweep` ever removes a key from the dict (`delete` overwrites the
    value with an expired one), hence the entries added since the previous sweep call are
    exactly the newest ``len(dict) - known`` ones, which `reversed(dict)` yields first. Every
    call therefore touches only the new keys plus `max_items` others, and the hot path is
    untouched. Costs 8 bytes (one pointer) per key.

    Bounded: when a sweep finds more than ``max_keys`` entries, after dropping the expired ones
    it evicts live entries in walk order (the keys it has not visited for longest, about the
    oldest inserted) until ``max_keys`` remain, and counts them in ``evictions``. The cap is
    enforced once per sweep, not per put, so the hot path stays a bare dict operation; between
    sweeps the store can exceed it by the keys added meanwhile.

    With ``track_dirty=True`` every key written, deleted or swept since the last ``take_dirty()``
    is remembered, for a durable snapshot to persist only what changed. It is off by default so
    the hot path stays a bare dict operation.
    """

    def __init__(self, track_dirty: bool = False, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._data: dict[str, Value] = {}
        self.max_keys = max_keys
        self.evictions = 0  # live entries evicted by the cap, ever (a counter)
        self._dirty: set[str] | None = set() if track_dirty else None
        # Sweep state: every key exactly once, in _keys[:_write] (visited this walk) or
        # _keys[_read:] (not yet); _keys[_write:_read] are stale slots. _known is len(_data)
        # as of the end of the previous sweep call.
        self._keys: list[str] = []
        self._read = 0
        self._write = 0
        self._known = 0
        if self._dirty is None:
            # Shadow the methods below with the dict's own C methods: `get`/`put` then cost one
            # dict operation and no Python frame, which is most of a limiter call's budget.
            self.get = self._data.get  # type: ignore[method-assign]
            self.put = self._data.__setitem__  # type: ignore[method-assign]

    def get(self, key: str) -> Value | None:
        return self._data.get(key)

    def put(self, key: str, value: Value) -> None:
        # Only reached when tracking dirty keys; otherwise dict.__setitem__ is bound instead.
        self._data[key] = value
        self._dirty.add(key)  # type: ignore[union-attr]

    def mirror(self, key: str, value: Value) -> None:
        """This store is the authoritative state: a mirrored value is simply a write."""
        self.put(key, value)

    def delete(self, key: str) -> None:
        """Make `key` read as absent by storing an already-expired value of the same kind.

        The entry itself goes at the next sweep: see the class docstring for why only the
        sweep may shrink the dict.
        """
        value = self._data.get(key)
        if value is None:
            return
        self._data[key] = 0.0 if value.__class__ is float else (0.0,)
        if self._dirty is not None:
            self._dirty.add(key)

    def sweep(self, now_s: float, max_items: int) -> int:
        """Visit up to `max_items` keys, drop the expired ones, return how many were dropped.

        Successive calls walk every key round-robin, new keys included; a call costs
        O(max_items + keys added since the previous call).
        """
        data = self._data
        keys = self._keys
        added = len(data) - self._known
        if added > 0:
            new = list(islice(reversed(data), added))
            new.reverse()  # oldest first, so the cap evicts in insertion order
            keys += new
        dirty = self._dirty
        read = self._read
        write = self._write
        stop = min(read + max(max_items, 0), len(keys))
        dropped = 0
        for i in range(read, stop):
            key = keys[i]
            value = data[key]
            if (value if value.__class__ is float else value[0]) <= now_s:
                del data[key]
                dropped += 1
                if dirty is not None:
                    dirty.add(key)
            else:
                keys[write] = key
                write += 1
        read = stop
        if len(data) > self.max_keys:
            read, write = self._evict(read, write)
        if read == len(keys):
            del keys[write:]  # walk finished: drop the stale slots, start over
            read = write = 0
        elif read - write >= _COMPACT_SLOTS:
            del keys[write:read]
            read = write
        self._read = read
        self._write = write
        self._known = len(data)
        return dropped

    def _evict(self, read: int, write: int) -> tuple[int, int]:
        """Continue the walk, deleting every key it reaches, until the cap holds.

        Every key is in _keys[:write] or _keys[read:] (class invariant), so this terminates."""
        data = self._data
        keys = self._keys
        dirty = self._dirty
        excess = len(data) - self.max_keys
        self.evictions += excess
        while excess > 0:
            if read == len(keys):
                del keys[write:]
                read = write = 0
            stop = min(read + excess, len(keys))
            for i in range(read, stop):
                del data[keys[i]]
            if dirty is not None:
                dirty.update(keys[read:stop])
            excess -= stop - read
            read = stop
        return read, write

    def take_dirty(self) -> set[str]:
        """Keys written, deleted or swept since the previous call; resets the set.

        A key in the set that is now absent or expired was removed. Raises RuntimeError when
        the store was built without ``track_dirty=True``: silently answering "nothing changed"
        would make a snapshot lose data.
        """
        if self._dirty is None:
            raise RuntimeError("take_dirty() needs MemoryStore(track_dirty=True)")
        dirty = self._dirty
        self._dirty = set()
        return dirty

    def as_dict(self) -> dict[str, Value]:
        """The backing dict itself, expired entries included, for snapshots (msgspec encodes
        it in C: ~80 ms per million entries). Read-only; do not keep it across store calls."""
        return self._data

    def __len__(self) -> int:
        """Entries held, including expired and deleted ones not yet swept."""
        return len(self._data)
