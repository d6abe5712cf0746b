"""Coverage since start: the traffic no policy limited, counted by route in bounded memory.

Two tables, both keyed by route (method and the first PREFIX_SEGMENTS path segments):
requests that matched no policy at all, and requests that matched a policy but that no rule
limited (every applicable rule skipped for a missing key, none of the rules' `match` held, or
only shadow policies applied). Each holds at most MAX_ROUTES routes; requests of further
routes count under OTHER, so a client inventing paths grows a counter, never the table.
Rules skipped for a missing key are metrics.rule_skipped; the decision total is
metrics.decisions: nothing here costs the decisions that a rule limited.
"""

import time

import msgspec

from .memo import table

from .protocol.messages import Reply

MAX_ROUTES = 1000  # distinct routes per table; then OTHER
OTHER = "other"
PREFIX_SEGMENTS = 2  # "/v1beta/models/gemini-pro:generateContent" -> "/v1beta/models"
MAX_PREFIX_CHARS = 64
MAX_METHOD_CHARS = 16
_json = msgspec.json.Encoder()


def route_of(method: str, path: str) -> str:
    """`METHOD /seg1/seg2`, bounded in length; characters that are not printable show as "?"
    (client bytes end up on an operator's terminal)."""
    i = path.find("/", 1)
    if i > 0:
        j = path.find("/", i + 1)
        if j > 0:
            path = path[:j]
    route = f"{method[:MAX_METHOD_CHARS]} {path[:MAX_PREFIX_CHARS]}"
    if not route.isprintable():
        route = "".join(c if c.isprintable() else "?" for c in route)
    return route


class RouteCounts:
    """route -> requests, at most `capacity` routes, the rest under OTHER."""

    __slots__ = ("capacity", "counts", "total", "_memo")

    def __init__(self, capacity: int = MAX_ROUTES, memo=None):
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.total = 0
        # (method, path) -> route (the engine's memo table): repeat paths skip route_of
        self._memo = table("coverage_route") if memo is None else memo

    def add(self, view) -> None:
        self.total += 1
        at = (view.method, view.path)
        memo = self._memo
        route = memo.get(at)
        if route is None:
            route = memo.remember(at, route_of(view.method, view.path))
        counts = self.counts
        n = counts.get(route)
        if n is not None:
            counts[route] = n + 1
        elif len(counts) < self.capacity:
            counts[route] = 1
        else:
            counts[OTHER] = counts.get(OTHER, 0) + 1  # OTHER is the one entry past capacity

    def top(self) -> list[dict]:
        return [{"route": r, "requests": n} for r, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))]


class Coverage:
    """The engine's coverage counters; the pipeline's sink calls `unmatched` and `unlimited`."""

    def __init__(self, capacity: int = MAX_ROUTES, memo=None):
        self.started_at_s = time.time()
        self.no_policy = RouteCounts(capacity, memo)
        self.no_rule = RouteCounts(capacity, memo)
        self.unmatched = self.no_policy.add  # bound once: one call per such decision
        self.unlimited = self.no_rule.add

    def report(self, metrics) -> dict:
        """The JSON body of GET /v1/admin/coverage (docs/cli.md, fairvisor coverage)."""
        decisions = int(sum(n for (action, _r, _p), n in metrics.decisions.values.items()
                            if action != "would_reject"))
        unlimited = self.no_policy.total + self.no_rule.total
        skipped = [{"policy": p, "rule": r, "skipped": int(n)}
                   for (p, r), n in sorted(metrics.rule_skipped.values.items(), key=lambda kv: (-kv[1], kv[0]))]
        return {
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at_s)),
            "decisions": decisions,
            "unlimited": unlimited,
            "unlimited_pct": round(100.0 * unlimited / decisions, 2) if decisions else 0.0,
            "no_policy": {"requests": self.no_policy.total, "routes": self.no_policy.top()},
            "no_rule_applied": {"requests": self.no_rule.total, "routes": self.no_rule.top()},
            "rules_skipped": skipped,
            "max_routes": self.no_policy.capacity,
        }


def reply(engine) -> Reply:
    return Reply(status=200, content_type="application/json",
                 body=_json.encode(engine.coverage.report(engine.metrics)).decode())
