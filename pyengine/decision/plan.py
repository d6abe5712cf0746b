"""A route's decision plan: its kill switches and matching policies' steps, compiled once per bundle.

One plan per (method, host, path, global shadow active), built by the bundle's RouteIndex the
first time the route is seen and run by Pipeline.decide for every request on it. The steps are
flat: each matching policy's rules in order, then its fallback rule, then its guards, each step
carrying what the pipeline used to re-derive per request (shadow or enforce, whether its keys
take the global-shadow mark, whether it opens a policy). The run loop is the only rule loop.
An enforcing step of a strict rule in fleet mode (rule.strict set) charges nothing there: it
becomes a claim, and a request with claims ends in a Pending that the store decides
(pyengine.decision.strict), after every local rule allowed it.
"""

import math

from .kill_hits import record_hit
from .trace import traced_steps, traced_switches
from .request import prefix_matches
from ..state import keys
from .verdict import Decision

KILL_SWITCH_RETRY_S = 3600
# One X-Fairvisor-Warning per response: the most severe wins (throttles over warnings).
SEVERITY = {None: 0, "budget_warn": 1, "loop_warn": 2, "budget_throttle": 3, "loop_throttle": 4}

# Step kinds. A step is a tuple (kind, rule, shadow, reshadow, opens):
#   rule      CompiledRule (RULE, FALLBACK) or PolicyGuards (GUARDS)
#   shadow    counts in its own state and never changes the Decision (a shadow policy, or any
#             policy while a global shadow is active)
#   reshadow  an enforce policy under a global shadow: its keys take keys.shadow()
#   opens     the policy's first step: resets "a rule matched" and the guards' charge mark
RULE, FALLBACK, GUARDS = 0, 1, 2


def undo(charged, at_s: float, now_s: float) -> None:
    for rule, key, amount in reversed(charged):
        rule.undo(key, amount, at_s, now_s)


def rejected(outcome, rule, key: str) -> Decision:
    return Decision(status=429, reason=outcome.reason, rule=rule.name, policy_id=rule.policy_id,
                    outcome=outcome if outcome.limit else None, retry_after_s=outcome.retry_after_s, key=key)


def _missing(rule) -> Decision:
    return Decision(status=429, reason="missing_limit_key", rule=rule.name, policy_id=rule.policy_id)


def allowed(charged: list, best, warning, delay_ms: int) -> Decision:
    """best: (ratio, rule, outcome) of the most restrictive allowing rule, or None."""
    d = Decision(warning=warning, delay_ms=delay_ms, charged=charged)
    if best is not None:
        d.rule = best[1].name
        d.policy_id = best[1].policy_id
        d.outcome = best[2]
    reserved = [c for c in charged if c[0].reserves]
    if reserved:
        d.reserved = reserved
    return d


def _killed(store, ks, now_s: float) -> Decision:
    retry = KILL_SWITCH_RETRY_S
    if ks.expires_at_s is not None:
        retry = max(1, min(retry, math.ceil(ks.expires_at_s - now_s)))
    record_hit(store, ks, now_s)
    # The switch's reason is for operators (decision log), never for the client.
    return Decision(status=429, reason="kill_switch_active", retry_after_s=retry, detail=ks.reason)


def _guard_with_claims(guards, view, reshadow: bool, charged: list, first: int, claims, now_s: float):
    """The guards of a policy with strict rules: the breaker meters their amounts too, although
    the store charges them only after the loop; what the guards charge goes into `charged`."""
    metered = charged[first:] + [(rule, key, amount) for rule, key, _, amount in claims]
    n = len(metered)
    hit = guards.check(view, reshadow, metered, 0, now_s)
    charged.extend(metered[n:])
    return hit


def policy_steps(policy, global_shadow: bool) -> list:
    """The steps of one matching policy, in the order the pipeline runs them."""
    shadow = policy.shadow or global_shadow
    reshadow = shadow and not policy.shadow
    steps = [(RULE, r, shadow, reshadow, False) for r in policy.rules]
    # The fallback runs when none of the policy's rules matched; a policy whose rules have no
    # `match` always matches, so it never needs one.
    if policy.fallback is not None and not policy.plain:
        steps.append((FALLBACK, policy.fallback, shadow, reshadow, False))
    if policy.guards is not None:
        steps.append((GUARDS, policy.guards, shadow, reshadow, False))
    if steps:
        kind, rule, *_ = steps[0]
        steps[0] = (kind, rule, shadow, reshadow, True)
    return steps


class Plan:
    """Immutable once built; all counters live in the store behind the rules."""

    __slots__ = ("policies", "kill_switches", "steps", "store")

    def __init__(self, bundle, policies: tuple, path: str, global_shadow: bool):
        self.policies = policies  # the matching policies, in bundle order (selftest, explain)
        # The bundle's switches that can hit this path (KillSwitch.hits still checks the rest).
        self.kill_switches = tuple(ks for ks in bundle.kill_switches
                                   if ks.route is None or prefix_matches(ks.route, path))
        self.steps = tuple(s for p in policies for s in policy_steps(p, global_shadow))
        self.store = bundle.store

    def traced(self, trace) -> "Plan":
        """This plan with its rules, guards and switches recording into `trace` (decision.trace)."""
        copy = object.__new__(Plan)
        copy.policies, copy.store = self.policies, self.store
        copy.kill_switches = traced_switches(self.kill_switches, trace)
        copy.steps = traced_steps(self.steps, trace)
        return copy

    def run(self, bundle, view, now_s: float, sink, runtime) -> Decision:
        """Kill switches (bundle's, then `runtime`), then the steps: all-or-nothing."""
        switches = self.kill_switches
        # kill_switch_override: every switch, runtime ones too, skipped until it expires.
        if (switches or runtime is not None) and not bundle.kill_switches_overridden(now_s):
            for ks in switches:
                if ks.hits(view, now_s):
                    return _killed(self.store, ks, now_s)
            if runtime is not None:
                ks = runtime.match(view, now_s)
                if ks is not None:
                    return _killed(self.store, ks, now_s)
        if not self.policies:
            sink.unmatched(view)  # pyengine.coverage
            return Decision()
        charged: list = []
        claims = None  # [(rule, key, store claims, amount)] of strict rules, decided by the store after the loop
        claims_first = 0  # where the current policy's strict claims start
        shadow_charged: list = []
        shadow_failed = False
        best = None  # (ratio, rule, outcome) of the most restrictive allowing rule
        warning = None
        delay_ms = 0
        matched = False  # a rule of the current policy matched (else its fallback runs)
        first = 0  # where the current policy's charges start (its guards meter them)
        try:
            for kind, rule, shadow, reshadow, opens in self.steps:
                # Ordered for the common step (an enforcing rule, not its policy's first): it
                # pays three truth tests before its key.
                if opens or shadow:
                    if shadow and shadow_failed:
                        continue  # a shadow policy would have rejected: later shadow counting stops
                    if opens:
                        matched = False
                        first = len(shadow_charged if shadow else charged)
                        claims_first = len(claims) if claims is not None else 0
                if kind:  # GUARDS or FALLBACK (RULE is 0)
                    if kind is FALLBACK:
                        if matched:
                            continue
                    else:
                        # Loop detection and the breaker run once the policy's rules allowed (pyengine.guards).
                        if claims is not None and len(claims) > claims_first and not shadow:
                            hit = _guard_with_claims(rule, view, reshadow, charged, first, claims[claims_first:], now_s)
                        else:
                            hit = rule.check(view, reshadow, shadow_charged if shadow else charged, first, now_s)
                        if hit is None:
                            continue
                        if hit.reason == "loop_detected":
                            sink.loop_detected(rule.policy_id, shadow)
                        if shadow:
                            if hit.reject:
                                sink.would_reject(rule.policy_id, hit.guard, hit.reason, hit.key, view)
                                shadow_failed = True
                        elif hit.reject:
                            undo(charged, now_s, now_s)
                            undo(shadow_charged, now_s, now_s)
                            return Decision(status=429, reason=hit.reason, rule=hit.guard, policy_id=rule.policy_id,
                                            retry_after_s=hit.retry_after_s, key=hit.key)
                        else:
                            if SEVERITY[hit.warning] > SEVERITY[warning]:
                                warning = hit.warning
                            if hit.delay_ms > delay_ms:
                                delay_ms = hit.delay_ms
                        continue
                elif rule.match and not rule.matches(view):
                    continue
                else:
                    matched = True
                key = rule.state_key(view)
                if key is None:
                    if rule.reject_missing:
                        if shadow:
                            sink.would_reject(rule.policy_id, rule.name, "missing_limit_key", "", view)
                            shadow_failed = True
                            continue
                        undo(charged, now_s, now_s)
                        undo(shadow_charged, now_s, now_s)
                        return _missing(rule)
                    sink.skipped(rule.policy_id, rule.name)
                    continue
                if shadow:
                    if reshadow:
                        key = keys.shadow(key)  # global shadow: keep enforce counters untouched
                    outcome, amount = rule.apply(view, key, now_s)
                    if outcome.allowed:
                        shadow_charged.append((rule, key, amount))
                    else:
                        sink.would_reject(rule.policy_id, rule.name, outcome.reason, key, view)
                        shadow_failed = True
                    continue
                if rule.strict is not None:
                    ops, amount, refusal = rule.claims(view, key, now_s)
                    if refusal is not None:  # a per-request cap or an unpriced model: no state read
                        undo(charged, now_s, now_s)
                        undo(shadow_charged, now_s, now_s)
                        return rejected(refusal, rule, key)
                    if claims is None:
                        claims = []
                    claims.append((rule, key, ops, amount))
                    continue
                outcome, amount = rule.apply(view, key, now_s)
                if not outcome.allowed:
                    undo(charged, now_s, now_s)
                    undo(shadow_charged, now_s, now_s)
                    return rejected(outcome, rule, key)
                charged.append((rule, key, amount))
                limit = outcome.limit
                if limit:
                    ratio = outcome.remaining / limit
                    if best is None or ratio < best[0]:
                        best = (ratio, rule, outcome)
                if outcome.warning is not None and SEVERITY[outcome.warning] > SEVERITY[warning]:
                    warning = outcome.warning
                if outcome.delay_ms > delay_ms:
                    delay_ms = outcome.delay_ms
        except BaseException:
            undo(charged, now_s, now_s)  # all-or-nothing holds for our own bugs too
            undo(shadow_charged, now_s, now_s)
            raise
        if shadow_failed:
            undo(shadow_charged, now_s, now_s)
        if claims is not None:
            return bundle.strict.pending(claims, charged, () if shadow_failed else shadow_charged, best,
                                         warning, delay_ms, view, now_s)
        if not charged:
            sink.unlimited(view)  # no rule limited it (pyengine.coverage)
        return allowed(charged, best, warning, delay_ms)
