"""The engine's memo tables, one object per engine: every table named, sized and counted here.

The engine memoises pure functions of client input (JWT payloads, client addresses, request
targets, User-Agent classes, routes, prices, rendered verdicts, shown key hashes). Clients
repeat a handful of values, so the hit rate is high; an attacker sending endless distinct
values only makes misses. A table is a plain dict cleared whole when it reaches its size:
memory stays bounded without LRU bookkeeping on hits, a hit stays one `dict.get` at the call
site, and only a miss calls `remember`.

Tables that hold objects of one bundle (routes -> compiled plans, model -> price) are
`fresh`-made for each compiled bundle, so a bundle never sees another's entries; the memo
counts the newest one.
"""

# name -> entries at most; what the table maps, and its one user.
SIZES = {
    "jwt": 4096,  # bearer token -> claims or None (pyengine.decision.keys)
    "trusted": 16384,  # address -> is a trusted proxy (pyengine.decision.keys.TrustedProxies)
    "client_ip": 16384,  # (remote address, X-Forwarded-For) -> client address (same)
    "bot": 4096,  # User-Agent -> bot category or None (pyengine.decision.bots)
    "target": 8192,  # (uri, host, ...) -> parsed request target (pyengine.decision.request)
    "route": 8192,  # (method, host, path, global shadow) -> Plan, per bundle (pyengine.policy.matcher)
    "price": 4096,  # model -> Price or None, per bundle (pyengine.llm.pricing)
    "verdict": 8192,  # Decision's shared fields -> rendered Verdict (pyengine.decision.verdict)
    "coverage_route": 4096,  # (method, path) -> route label (pyengine.coverage)
    "key_hash": 16384,  # key value -> its shown hash (pyengine.decision.key_hash)
    "shown_values": 16384,  # state key -> its values as shown (the decision log and the console)
}


class Table(dict):
    """A dict with a size: `remember` clears it whole when full. Reads are plain dict reads."""

    __slots__ = ("name", "max_entries", "clears")

    def __init__(self, name: str, max_entries: int):
        super().__init__()
        self.name = name
        self.max_entries = max_entries
        self.clears = 0  # times the table was full and cleared (high: too small, or a key flood)

    def remember(self, key, value):
        """Store `value` under `key` (clearing the table first when full); returns value."""
        if len(self) >= self.max_entries:
            self.clear()
            self.clears += 1
        self[key] = value
        return value


def table(name: str) -> Table:
    """A stand-alone table of the named kind, for callers outside an engine (tools, tests)."""
    return Table(name, SIZES[name])


class Memo:
    """All memo tables of one engine. `tables[name]` is the table in use for each name."""

    __slots__ = ("tables",)

    def __init__(self):
        self.tables = {name: Table(name, size) for name, size in SIZES.items()}

    def __getattr__(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise AttributeError(name) from None

    def fresh(self, name: str) -> Table:
        """A new, empty table for `name` (a newly compiled bundle's), counted from now on."""
        t = self.tables[name] = Table(name, SIZES[name])
        return t

    def counts(self) -> dict[str, dict]:
        """name -> entries, size and clears: the one place that says how big the memo is."""
        return {name: {"entries": len(t), "max_entries": t.max_entries, "clears": t.clears}
                for name, t in self.tables.items()}
