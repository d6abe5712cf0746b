"""What a change to a local state value means to the shared store: one delta kind per value shape.

In fleet mode an engine decides from its local values (pyengine.state.store shapes) and the
sync (pyengine.fleet.sync) pushes what changed as deltas, never as values: two engines that
each admitted a request must add up, not overwrite each other. Each kind is one value shape:

====  ===========================  ==================================  ============================
kind  local value                  delta accumulated between syncs     merged in the store
====  ===========================  ==================================  ============================
G     float TAT (token buckets)    seconds of debt added (refund < 0)  tat = max(tat, now) + debt
P     (end_s:int, n:int) period    (end_s, n added in that period)     n += added (same period)
S     (expiry, end_1..) leases     lease ends added / released         set of (end, engine) pairs
W     (expiry, t_1..) loop window  attempt times added                 set of (t, engine) pairs
B     breaker tuple (6 items)      window spend added, opening         newest opening wins; sums
====  ===========================  ==================================  ============================

Kill-switch hit counters (K) and self-test scratch counters (T) stay local: they are this
engine's statistics and a run's private scratch, not budgets.

`merge` is the store's rule applied in Python: the sync rebases a local value on the merged
one the store returns, plus whatever this engine changed while the answer was in flight.
pyengine/fleet/merge.lua is the same rule inside Redis; tests/fleet/test_merge_lua.py drives
both with the same random deltas against a real redis-server.
"""

from pyengine.guards.breaker import OPEN, WINDOW_S
from pyengine.state import keys

G, P, S, W, B = "G", "P", "S", "W", "B"
_CLOSED = 0
# The shape of an absent time set / breaker once merged to nothing: an expired value.
_GONE = (0.0,)


def kind_of(key: str, value) -> str | None:
    """The delta kind of `key` holding `value` (a live value, never a delete marker), or None
    for state that is never shared."""
    ns = key[0]
    if ns == keys.SHADOW or ns == keys.DAY:
        ns = keys.unmodified(key)[:1]
    if ns == keys.RULE:
        if value.__class__ is float:
            return G
        return P if value[0].__class__ is int else S
    if ns == keys.LOOP:
        return W
    if ns == keys.BREAKER:
        return B
    return None


def _members(value, now_s: float) -> tuple:
    if value is None or len(value) < 2 or value[0] <= now_s:
        return ()
    return value[1:]


def _diff(old: tuple, new: tuple) -> tuple[list, list]:
    """(in new not old, in old not new) of two ascending tuples, as multisets: two leases may
    end at the same instant and are still two."""
    added: list = []
    gone: list = []
    i = j = 0
    n_old, n_new = len(old), len(new)
    while i < n_old and j < n_new:
        a, b = old[i], new[j]
        if a == b:
            i += 1
            j += 1
        elif a < b:
            gone.append(a)
            i += 1
        else:
            added.append(b)
            j += 1
    gone.extend(old[i:])
    added.extend(new[j:])
    return added, gone


def _rolled(value, start: int, now_s: float) -> tuple:
    """A breaker value's (prev, cur) spend seen from the bucket starting at `start`."""
    if value is None or value[0] <= now_s or len(value) < 6:
        return 0, 0
    if value[3] == start:
        return value[4], value[5]
    if value[3] == start - WINDOW_S:
        return value[5], 0
    return 0, 0


def note(acc, kind: str, old, new, now_s: float):
    """Fold the change old -> new (made at `now_s`) into `acc` (None = nothing yet); returns acc.

    `new` None means the key was deleted (its old value was live)."""
    if kind == G:
        base = old if old is not None and old > now_s else now_s
        after = new if new is not None else now_s
        if acc is None:
            return [G, after - base]
        acc[1] += after - base
        return acc
    if kind == P:
        if new is None:
            end, n = old[0], 0
        else:
            end, n = new
        before = old[1] if old is not None and len(old) > 1 and old[0] == end else 0
        if acc is None or acc[1] != end:
            if acc is not None and acc[1] > end:
                return acc  # a refund into a past period: that period is gone already
            acc = [P, end, 0]
        acc[2] += n - before
        return acc
    if kind == S or kind == W:
        old_m = _members(old, now_s)
        new_m = () if new is None else _members(new, now_s)
        if acc is None:
            acc = [kind, 0.0, [], []]
        if new_m:
            acc[1] = new[0] - new_m[-1]  # how long a member counts after its time
        added, gone = _diff(old_m, new_m)
        acc[2].extend(added)
        if kind == S:
            for t in gone:
                if t <= now_s:
                    continue  # expired, not released: the store drops it by itself
                if t in acc[2]:
                    acc[2].remove(t)  # taken and released between two syncs
                else:
                    acc[3].append(t)
        return acc
    # B: the breaker tuple (expiry, state, since, bucket_start, prev, cur)
    if new is None:
        return acc
    start = new[3]
    if acc is None:
        acc = [B, start, 0, 0, -1.0, 0.0]
    elif acc[1] != start:
        if start == acc[1] + WINDOW_S:
            acc[2], acc[3] = acc[3], 0
        else:
            acc[2] = acc[3] = 0
        acc[1] = start
    opened = new[1] == OPEN and (old is None or old[0] <= now_s or old[1] != OPEN or old[2] != new[2])
    if opened:
        acc[4] = new[2]
        acc[2], acc[3] = new[4], new[5]
    else:
        prev, cur = _rolled(old, start, now_s)
        acc[2] += new[4] - prev
        acc[3] += new[5] - cur
    if new[0] > acc[5]:
        acc[5] = new[0]
    return acc


def merge(kind: str, value, acc, now_s: float, engine: str | None = None):
    """`acc` applied to `value` the way merge.lua applies it in the store.

    For S/W the stored value is ``[retain_s, [[t, engine], ...]]``; `engine` names this
    engine's members. Returns the store's shape (see to_local for the local one)."""
    if kind == G:
        base = value if value is not None and value > now_s else now_s
        after = base + acc[1]
        return after if after > now_s else now_s
    if kind == P:
        end, added = acc[1], acc[2]
        if value is None or value[0] < end:
            n = added
        elif value[0] == end:
            n = value[1] + added
        else:
            return value
        return [end, n if n > 0 else 0]
    if kind == S or kind == W:
        retain = acc[1]
        members = [] if value is None else [m for m in value[1] if m[0] + retain > now_s]
        members.extend([t, engine] for t in acc[2])
        for t in acc[3]:
            try:
                members.remove([t, engine])
            except ValueError:
                pass
        members.sort()
        return [retain, members]
    start, dprev, dcur, open_since, expiry = acc[1], acc[2], acc[3], acc[4], acc[5]
    if value is None or value[0] <= now_s:
        v = [0.0, _CLOSED, now_s, start, 0, 0]
    else:
        v = list(value)
    if v[3] == start - WINDOW_S:
        v[4], v[5] = v[5], 0
    elif v[3] < start - WINDOW_S:
        v[4] = v[5] = 0
    elif v[3] == start + WINDOW_S:
        dprev, dcur = dcur, 0  # the store is a bucket ahead: our current one is its previous
        start = v[3]
    elif v[3] != start:
        dprev = dcur = 0
        start = v[3]
    v[3] = start
    if open_since >= 0 and (v[1] != OPEN or open_since > v[2]):
        v[1], v[2], v[4], v[5] = OPEN, open_since, 0, 0
    v[4] = max(0, v[4] + dprev)
    v[5] = max(0, v[5] + dcur)
    if expiry > v[0]:
        v[0] = expiry
    return v


def to_local(kind: str, stored):
    """The store's merged value in the local shape (pyengine.state.store)."""
    if kind == G:
        return float(stored)
    if kind == P:
        return (int(stored[0]), int(stored[1]))
    if kind == S or kind == W:
        ts = [m[0] for m in stored[1]]
        if not ts:
            return _GONE
        return (ts[-1] + stored[0],) + tuple(ts)
    return tuple(stored)
