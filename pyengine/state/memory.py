"""In-process state store: one plain dict, with incremental expiry sweeping."""

from itertools import islice

from pyengine.state.store import Value

# When the already-visited part of the sweep's key list holds this many stale slots, squeeze
# them out mid-walk (a pointer memmove, no object touched) instead of waiting for the walk end.
_COMPACT_SLOTS = 1 << 16


class MemoryStore:
    """A `Store` over a dict. Single-threaded by contract (see pyengine.state.store).

    Sweeping without a long pause: a live dict iterator cannot be resumed once the dict changes
    size, and copying a million keys costs ~50 ms, so the store keeps its own list of keys for
    the sweep to walk. Only `sweep` ever removes a key from the dict (`delete` overwrites the
    value with an expired one), hence the entries added since the previous sweep call are
    exactly the newest ``len(dict) - known`` ones, which `reversed(dict)` yields first. Every
    call therefore touches only the new keys plus `max_items` others, and the hot path is
    untouched. Costs 8 bytes (one pointer) per key.

    With ``track_dirty=True`` every key written, deleted or swept since the last ``take_dirty()``
    is remembered, for a durable snapshot to persist only what changed. It is off by default so
    the hot path stays a bare dict operation.
    """

    def __init__(self, track_dirty: bool = False) -> None:
        self._data: dict[str, Value] = {}
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
            keys.extend(islice(reversed(data), added))
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
