"""Selector matching: which policies apply to a (method, host, path), with a bounded route cache."""

from ..memo import table


def prefix_matches(prefix: str, path: str) -> bool:
    """Segment-wise prefix: `/v1/` and `/v1` match `/v1` and `/v1/x`, never `/v1x`; `/` matches all."""
    base = prefix.rstrip("/")
    return not base or path == base or path.startswith(base + "/")


class Selector:
    __slots__ = ("path_prefix", "path_exact", "methods", "hosts")

    def __init__(self, path_prefix, path_exact, methods, hosts):
        self.path_prefix = path_prefix
        self.path_exact = path_exact
        self.methods = frozenset(m.upper() for m in methods) if methods else None
        self.hosts = frozenset(h.lower().split(":")[0] for h in hosts) if hosts else None

    def matches(self, method: str, host: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.hosts is not None and host not in self.hosts:
            return False
        if self.path_exact is not None and path != self.path_exact:
            return False
        if self.path_prefix is not None and not prefix_matches(self.path_prefix, path):
            return False
        return True


class RouteIndex:
    """All policies whose selector matches, in bundle order, compiled into the route's plan
    (pyengine.plan) the first time the route is seen. Plans are cached per route and per
    global-shadow state (a global shadow can expire while the bundle stays loaded).

    The cache is cleared whole when full: paths with ids in them cannot grow it without bound.
    """

    __slots__ = ("_entries", "_cache", "_build")

    def __init__(self, entries, build, memo=None):
        self._entries = tuple(entries)  # (Selector, policy)
        self._cache = table("route") if memo is None else memo  # this bundle's "route" table
        self._build = build  # (matching policies, path, global shadow active) -> plan

    @property
    def entries(self) -> tuple:
        """(Selector, policy) pairs in bundle order, for `fairvisor explain`."""
        return self._entries

    def plan(self, method: str, host: str, path: str, global_shadow: bool = False):
        """The compiled plan of this route: its `.policies` are the matching ones in bundle order."""
        key = (method, host, path, global_shadow)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found = tuple(p for sel, p in self._entries if sel.matches(method, host, path))
        return self._cache.remember(key, self._build(found, path, global_shadow))
