"""A policy's loop detection and circuit breaker, as the pipeline runs them after its rules allowed."""

import logging

from ..decision.key_hash import shown
from ..decision.rules import MICROS, CostRule, LLMRule, key_value
from ..state import keys
from .breaker import CLOSED, HALF_OPEN, OPEN, SpendBreaker
from .fingerprint import fingerprint
from .loop import LoopDetector

log = logging.getLogger("fairvisor.guards")

LOOP = "loop_detection"  # the name guards carry where rules carry theirs (logs, metrics)
BREAKER = "circuit_breaker"


class GuardHit:
    """What a guard says about one request: a refusal, or a warning with an optional delay."""

    __slots__ = ("guard", "key", "reject", "reason", "retry_after_s", "warning", "delay_ms")

    def __init__(self, guard, key, reject, reason, retry_after_s=0, warning=None, delay_ms=0):
        self.guard = guard
        self.key = key  # the guard's state key (fingerprint or breaker key)
        self.reject = reject
        self.reason = reason  # loop_detected | circuit_breaker_open
        self.retry_after_s = retry_after_s
        self.warning = warning  # loop_warn | loop_throttle on allow
        self.delay_ms = delay_ms


def meter_of(rules) -> tuple[type | None, float]:
    """Which charges are the breaker's spend, and the factor from charge to spend unit.

    cost_based rules when the policy has any (charges are micro-units; spend in cost units),
    else token_bucket_llm rules (tokens), else token_bucket rules (their cost, usually 1 per
    request). A request's spend is its largest such charge: two budgets of one policy
    (say daily and monthly) meter the same money once.
    """
    kinds = {type(r) for r in rules}
    if CostRule in kinds:
        return CostRule, 1 / MICROS
    if LLMRule in kinds:
        return LLMRule, 1
    return (next(iter(kinds)) if kinds else None), 1


class PolicyGuards:
    """Compiled once per policy with loop detection or a breaker enabled (else the policy has
    none and pays nothing). Also stands in the pipeline's charge list for the breaker spend it
    counted, so a later refusal undoes that spend like any rule charge."""

    __slots__ = ("policy_id", "name", "reserves", "key_fns", "loop", "loop_action", "loop_prefixes",
                 "breaker", "breaker_prefixes", "primary", "meter", "meter_factor", "tripped", "alert")

    def __init__(self, policy_id: str, spec, rules, shadow: bool, store, tripped: dict):
        self.policy_id = policy_id
        self.name = BREAKER
        self.reserves = False
        # The policy's key values, in first-use order over its rules (fallback included).
        seen: dict[str, object] = {}
        for r in rules:
            for lk, fn in r.key_fns:
                seen.setdefault(lk, fn)
        self.key_fns = tuple(seen.items())
        ld = spec.loop_detection
        self.loop = None
        if ld is not None and ld.enabled:
            self.loop = LoopDetector(store, ld.window_seconds, ld.threshold_identical_requests)
            self.loop_action = ld.action
            # [under no global shadow, under a global shadow] (a shadow policy is always shadow).
            self.loop_prefixes = (keys.loop_prefix(policy_id, shadow), keys.loop_prefix(policy_id, True))
        cb = spec.circuit_breaker
        self.breaker = None
        self.alert = cb is not None and cb.alert
        self.tripped = tripped  # shared index of non-closed breaker keys -> policy id (gauges)
        if cb is not None and cb.enabled:
            self.meter, self.meter_factor = meter_of(rules)
            self.breaker = SpendBreaker(store, cb.spend_rate_threshold_per_minute / self.meter_factor,
                                        cb.auto_reset_after_minutes * 60)
            self.breaker_prefixes = (keys.breaker_prefix(policy_id, shadow), keys.breaker_prefix(policy_id, True))
            # The primary key: the first limit key of the policy's first rule.
            self.primary = rules[0].key_fns[0] if rules else None

    def check(self, view, global_shadow: bool, charges: list, first: int, now_s: float) -> GuardHit | None:
        """Run the guards for one request whose rules charged `charges[first:]`;
        `global_shadow`: an enforce policy counted in shadow state."""
        hit = None
        if self.loop is not None:
            values = [key_value(view, lk, fn) for lk, fn in self.key_fns]
            llm = view.llm  # the body as an LLM rule of this request decoded it, if one did
            key = keys.one_value(self.loop_prefixes[global_shadow],
                                 fingerprint(view.method, view.path, values, view.body,
                                             None if llm is None else llm.chat))
            if self.loop.hit(key, now_s):
                action = self.loop_action
                if action == "reject":
                    return GuardHit(LOOP, key, True, "loop_detected", self.loop.retry_after_s)
                if action == "throttle":
                    hit = GuardHit(LOOP, key, False, "loop_detected", 0, "loop_throttle", self.loop.delay_ms)
                else:
                    hit = GuardHit(LOOP, key, False, "loop_detected", 0, "loop_warn")
        if self.breaker is not None and self.primary is not None:
            value = key_value(view, *self.primary)
            if value is None:
                return hit  # like a rule whose key is missing: skipped, never refused
            key = keys.one_value(self.breaker_prefixes[global_shadow], value)
            spend = 0
            meter = self.meter
            for i in range(first, len(charges)):
                rule, _, amount = charges[i]
                if rule.__class__ is meter and amount > spend:
                    spend = amount
            retry_s, opened = self.breaker.check(key, spend, now_s)
            if retry_s:
                if opened:
                    self.tripped[key] = self.policy_id
                    # `alert: true` (fairvisor/edge's field): the opening is an ERROR line flagged alert=true.
                    log.log(logging.ERROR if self.alert else logging.WARNING,
                            "circuit breaker opened: policy=%s key=%s spend_per_min=%.6g threshold=%.6g alert=%s",
                            self.policy_id, shown(value), (self.breaker.rate(key, now_s) + spend) * self.meter_factor,
                            self.breaker.threshold * self.meter_factor, "true" if self.alert else "false")
                return GuardHit(BREAKER, key, True, "circuit_breaker_open", retry_s)
            if spend:
                charges.append((self, key, spend))
        return hit

    def undo(self, key: str, amount, at_s: float, now_s: float) -> None:
        self.breaker.undo(key, amount, at_s, now_s)


def breaker_counts(bundle, tripped: dict, store, now_s: float) -> dict[str, list[int]]:
    """{policy id: [open, half_open]} over enforcing breakers; forgets keys that closed.

    O(open + half-open keys): closed breakers are not indexed (closed is the absence of state).
    """
    breakers = {}
    for p in bundle.policies if bundle is not None else ():
        g = getattr(p, "guards", None)
        if g is not None and g.breaker is not None:
            breakers[p.id] = g.breaker
    counts = {pid: [0, 0] for pid in breakers}
    for key, pid in list(tripped.items()):
        breaker = breakers.get(pid)
        state = CLOSED if breaker is None else breaker.state_of(store.get(key), now_s)[0]
        if state == CLOSED:
            del tripped[key]
        elif not keys.is_shadow(key):
            counts[pid][0 if state == OPEN else 1] += 1
    return counts


def index_tripped(store_items, tripped: dict) -> None:
    """Rebuild the non-closed index from restored state (the caller drops stale ones later)."""
    for key, value in store_items:
        if value.__class__ is not tuple or len(value) != 6 or value[1] not in (OPEN, HALF_OPEN):
            continue
        try:
            parsed = keys.parse(key)
        except keys.KeyFormatError:
            continue
        if parsed.namespace == keys.BREAKER:
            tripped[key] = parsed.fields[0]
