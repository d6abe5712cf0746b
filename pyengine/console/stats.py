"""The status page's figures, in bounded structures fed off the decision path.

The decision path pays one call per allowed decision (`seen`: one in `stride` is kept, so the
sample is evenly spread over a tick and small enough that the cycle collector never has
thousands of held decisions to visit; the stride follows the last tick's rate); everything
else happens in `tick` (the engine's upkeep, about every second) and in the decision log's
flush, which hands over the rejections it drained:

* decisions per second by action: deltas of fairvisor_decisions_total, in BUCKETS buckets of
  BUCKET_S seconds (15 minutes);
* top tenants: requests, tokens and spend of the allowed decisions in `recent` (at most
  SAMPLE_MAX a tick, evenly spread over what it holds, each scaled to the tick's total),
  rejections from the decision log; per limit-key value, in WINDOWS tables of WINDOW_S
  seconds, each at most TENANT_ROWS rows (Misra-Gries: a flood of new keys cannot grow it);
* budgets: the (rule, key) pairs charged by budget rules lately, at most BUDGET_KEYS, with
  their spend rate, for "closest to exhaustion";
* the last LAST_REJECTIONS rejections.
"""

import collections
import itertools

from ..decision.memo import table
from ..decision_log import shown_values
from ..decision.rules import CostRule, LLMRule, TokenBucketRule

BUCKET_S = 5
BUCKETS = 180  # 15 minutes
ACTIONS = ("allow", "reject", "throttle", "warn", "would_reject")
SAMPLE_MAX = 128  # allowed decisions counted per tick at most, evenly spread, scaled to the tick's total
RECENT_MAX = 2 * SAMPLE_MAX  # held between ticks: room for a tick twice as busy as the last
WINDOW_S = 300
WINDOWS = 3  # tenants over the last 10 to 15 minutes
TENANT_ROWS = 256
BUDGET_KEYS = 500
LAST_REJECTIONS = 50
_RULES = (TokenBucketRule, LLMRule, CostRule)


class TenantTable:
    """{(limit keys, value): [requests, tokens, spend_micros, rejections]}, bounded."""

    def __init__(self, capacity: int = TENANT_ROWS):
        self.capacity = capacity
        self.rows: dict[tuple, list] = {}

    def add(self, row: tuple, requests: float, tokens: float, spend: float, rejections: int) -> None:
        cur = self.rows.get(row)
        if cur is None:
            weight = requests + rejections
            if len(self.rows) >= self.capacity:
                # Weighted Misra-Gries: every row and the newcomer lose the lightest weight of
                # them all, and rows left at none go; heavy tenants stay, a flood of new keys
                # cannot grow the table. Each pass removes a row or the newcomer.
                cut = min(weight, min(r[0] + r[3] for r in self.rows.values()))
                for k in list(self.rows):
                    r = self.rows[k]
                    if r[0] >= cut:
                        r[0] -= cut
                    else:
                        r[3] -= cut - r[0]
                        r[0] = 0
                    if r[0] + r[3] <= 0:
                        del self.rows[k]
                if weight <= cut or len(self.rows) >= self.capacity:
                    return
                requests, rejections = max(0, requests - cut), rejections - max(0, cut - requests)
            cur = self.rows[row] = [0, 0, 0, 0]
        cur[0] += requests
        cur[1] += tokens
        cur[2] += spend
        cur[3] += rejections


class ConsoleStats:
    def __init__(self, metrics, hasher, values_memo=None):
        self.metrics = metrics
        self.hasher = hasher  # shows key values like the decision log (pyengine.decision.key_hash)
        self.recent: collections.deque = collections.deque(maxlen=RECENT_MAX)  # of `seen`
        self.stride = 1  # keep one allowed decision in this many (from the last tick's count)
        self._countdown = 1
        self.series = {a: [0] * BUCKETS for a in ACTIONS}
        self.bucket_at_s: list[int] = [0] * BUCKETS  # the bucket's start (epoch s), to tell stale from fresh
        self._totals: dict[str, float] = dict.fromkeys(ACTIONS, 0.0)
        self._allowed_total = 0.0
        self.windows: collections.deque = collections.deque(maxlen=WINDOWS)  # (start_s, TenantTable)
        self.budgets: dict[tuple, list] = {}  # (id(rule), key) -> [rule, key, window_start_s, spent, prev_rate]
        self.last_rejections: collections.deque = collections.deque(maxlen=LAST_REJECTIONS)
        self._names: dict[int, str] = {}  # id(rule) -> its limit keys joined, for display
        # state key -> its values joined as the decision log does (the engine's memo table)
        self._values = table("shown_values") if values_memo is None else values_memo

    # -- fed by the engine -----------------------------------------------------------

    def seen(self, d) -> None:
        """An allowed decision (the engine's decision path)."""
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = self.stride
            self.recent.append(d)

    def tick(self, now_s: float) -> None:
        totals = {a: 0.0 for a in ACTIONS}
        for labels, v in self.metrics.decisions.values.items():
            if labels[0] in totals:
                totals[labels[0]] += v
        prev, self._totals = self._totals, totals
        start = int(now_s) // BUCKET_S * BUCKET_S
        i = start // BUCKET_S % BUCKETS
        if self.bucket_at_s[i] != start:
            self.bucket_at_s[i] = start
            for a in ACTIONS:
                self.series[a][i] = 0
        for a in ACTIONS:
            self.series[a][i] += int(totals[a] - prev[a])
        allowed = totals["allow"] + totals["throttle"] + totals["warn"]
        n_allowed = allowed - self._allowed_total
        self._allowed_total = allowed
        self._tenants(now_s, n_allowed)
        self.stride = max(1, -(-int(n_allowed) // SAMPLE_MAX))

    def _table(self, now_s: float) -> TenantTable:
        start = int(now_s) // WINDOW_S * WINDOW_S
        if not self.windows or self.windows[-1][0] != start:
            self.windows.append((start, TenantTable()))
        return self.windows[-1][1]

    def _tenants(self, now_s: float, n_allowed: float) -> None:
        recent = self.recent
        if not recent:
            return
        table = self._table(now_s)
        stride = -(-len(recent) // SAMPLE_MAX)
        sample = list(itertools.islice(recent, 0, None, stride))
        recent.clear()
        weight = max(1.0, n_allowed / len(sample))  # each counted decision stands for this many
        names = self._names
        for d in sample:
            seen = {}
            for rule, key, amount in d.charged or ():
                if rule.__class__ not in _RULES:
                    continue  # a breaker's spend is the same request's, counted by its rule
                rid = id(rule)
                kn = names.get(rid)
                if kn is None:
                    kn = names[rid] = "+".join(lk for lk, _ in rule.key_fns)
                v = self._values.get(key)
                if v is None:
                    v = self._values.remember(key, shown_values(key))
                row = (kn, v)
                t = seen.setdefault(row, [0, 0])
                if rule.__class__ is LLMRule:
                    t[0] = max(t[0], amount)
                elif rule.__class__ is CostRule:
                    t[1] = max(t[1], amount)
                    self._budget_seen(rule, key, amount * weight, now_s)
                if rule.__class__ is LLMRule and rule.limiter.tpd is not None:
                    self._budget_seen(rule, key, amount * weight, now_s)
            for row, (tokens, spend) in seen.items():
                table.add(row, weight, tokens * weight, spend * weight, 0)
        if len(names) > 4 * TENANT_ROWS:
            names.clear()  # rules of old bundles

    def _budget_seen(self, rule, key: str, amount: float, now_s: float) -> None:
        b = self.budgets.get((id(rule), key))
        if b is None:
            if len(self.budgets) >= BUDGET_KEYS:
                del self.budgets[next(iter(self.budgets))]  # the longest known: O(1), never a scan
            b = self.budgets[(id(rule), key)] = [rule, key, now_s, 0, None]
        elif now_s - b[2] >= WINDOW_S:
            b[4] = b[3] / max(1.0, now_s - b[2])
            b[2], b[3] = now_s, 0
        b[3] += amount

    def rejected(self, records) -> None:
        """Drained decision-log records (keys already shown as configured)."""
        table = None
        for rec in records:
            if rec.event != "reject":
                continue
            self.last_rejections.append(rec)
            if rec.key:
                if table is None:
                    table = self._table_for_records()
                table.add(("", rec.key), 0, 0, 0, 1)

    def _table_for_records(self) -> TenantTable:
        # Rejections land in the newest window (created by tick; the first one makes it).
        if not self.windows:
            self.windows.append((0, TenantTable()))
        return self.windows[-1][1]

    # -- read by the summary ----------------------------------------------------------

    def rate_series(self, now_s: float) -> dict:
        """{"bucket_s", "start_s", action: [per-second rate, oldest first]} over 15 minutes."""
        end = int(now_s) // BUCKET_S * BUCKET_S
        starts = [end - (BUCKETS - 1 - j) * BUCKET_S for j in range(BUCKETS)]
        out = {"bucket_s": BUCKET_S, "start_s": starts[0]}
        for a in ACTIONS:
            s = self.series[a]
            out[a] = [round(s[t // BUCKET_S % BUCKETS] / BUCKET_S, 2) if self.bucket_at_s[t // BUCKET_S % BUCKETS] == t
                      else 0 for t in starts]
        return out

    def top_tenants(self, n: int = 10) -> dict:
        """Rows merged over the windows, shown (hashed unless raw), top n by each measure."""
        merged: dict[str, list] = {}
        for _, window in self.windows:
            for (kn, value), r in window.rows.items():
                # Rejection rows (kn "") hold the decision log's shown key already.
                shown = self.hasher.show(value) if kn else value
                m = merged.setdefault(shown, [kn, 0, 0, 0, 0])
                if kn and not m[0]:
                    m[0] = kn
                for j in range(4):
                    m[j + 1] += r[j]
        rows = [{"key": k, "limit_keys": v[0], "requests": int(v[1]), "tokens": int(v[2]),
                 "spend_micros": int(v[3]), "rejections": int(v[4])} for k, v in merged.items()]
        return {m: sorted((r for r in rows if r[m] > 0), key=lambda r: (-r[m], r["key"]))[:n]
                for m in ("requests", "tokens", "spend_micros", "rejections")}
