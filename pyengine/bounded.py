"""Bounded memo tables for the hot path: plain dicts that are cleared whole when full.

The engine memoises pure functions of client input (JWT payloads, client addresses, request
targets, routes, rendered verdicts, key hashes). Clients repeat a handful of values, so the
hit rate is high; an attacker sending endless distinct values only makes misses. Clearing the
whole dict when it reaches its cap keeps memory bounded without any LRU bookkeeping on hits:
a hit stays one `dict.get` at the call site, and only a miss calls `remember`.
"""


def remember(table: dict, max_entries: int, key, value):
    """Store `value` under `key` (clearing `table` first when it holds `max_entries`); returns value."""
    if len(table) >= max_entries:
        table.clear()
    table[key] = value
    return value
