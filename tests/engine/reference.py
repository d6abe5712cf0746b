"""A plain reference decider for tests: contract §1's order written out as one loop, no plan, no memo.

It walks the bundle's policies on every request (no route cache, no compiled steps), reads
every key value afresh (no per-request key memo) and builds state keys from the rules' key
functions directly. Limiters, guards and kill-switch hit counters are the engine's own (the
algorithms have their own tests); what this checks is the plan: which rules run, in which
order, with which key, and what the request's Decision is. `use_reference(engine)` swaps it in.
"""

import math

from pyengine.decision.kill_hits import record_hit
from pyengine.state import keys
from pyengine.decision.verdict import Decision

SEVERITY = {None: 0, "budget_warn": 1, "loop_warn": 2, "budget_throttle": 3, "loop_throttle": 4}


def _read(view, limit_key, fn):
    """A key value, read afresh, and noted in view.keys as the engine's extractors note it."""
    v = fn(view)
    view.keys.setdefault(limit_key, v)
    return v


def _matches(rule, view) -> bool:
    return all(_read(view, lk, fn) == want for lk, fn, want in rule.match)


def _state_key(rule, view):
    values = []
    for lk, fn in rule.key_fns:
        v = _read(view, lk, fn)
        if v is None:
            return rule.missing_key
        values.append(v)
    return keys.values_key(rule.prefix, values)


def _applicable(policy, view) -> list:
    rules = [r for r in policy.rules if _matches(r, view)]
    if not policy.rules or any(r.match for r in policy.rules):
        if not rules and policy.fallback is not None:
            return [policy.fallback]
    return rules


def _kill(bundle, ks, now_s):
    retry = 3600
    if ks.expires_at_s is not None:
        retry = max(1, min(retry, math.ceil(ks.expires_at_s - now_s)))
    record_hit(bundle.store, ks, now_s)
    return Decision(status=429, reason="kill_switch_active", retry_after_s=retry, detail=ks.reason)


def reference_decide(bundle, view, now_s, sink, runtime, ambiguous) -> Decision:
    """`ambiguous`: the pipeline's repeated-header check (not the rule loop under test)."""
    if view.ambiguous is not None:
        refusal = ambiguous(bundle, view, now_s, sink, runtime)
        if refusal is not None:
            return refusal
    if not bundle.kill_switches_overridden(now_s):
        for ks in bundle.kill_switches:
            if ks.hits(view, now_s):
                return _kill(bundle, ks, now_s)
        if runtime is not None:
            ks = runtime.match(view, now_s)
            if ks is not None:
                return _kill(bundle, ks, now_s)
    policies = [p for sel, p in bundle.routes.entries if sel.matches(view.method, view.host, view.path)]
    if not policies:
        sink.unmatched(view)
        return Decision()
    global_shadow = bundle.global_shadow_active(now_s)
    enforce, counted = [], []  # (rule, key, amount) charged in enforce / shadow state
    shadow_failed = False
    best, warning, delay_ms = None, None, 0

    def undo_all():
        for rule, key, amount in reversed(enforce):
            rule.undo(key, amount, now_s, now_s)
        for rule, key, amount in reversed(counted):
            rule.undo(key, amount, now_s, now_s)

    for policy in policies:
        shadow = policy.shadow or global_shadow
        if shadow and shadow_failed:
            continue
        mine = counted if shadow else enforce
        first = len(mine)
        failed_here = False
        for rule in _applicable(policy, view):
            key = _state_key(rule, view)
            if key is None:
                if not rule.reject_missing:
                    sink.skipped(policy.id, rule.name)
                    continue
                if not shadow:
                    undo_all()
                    return Decision(status=429, reason="missing_limit_key", rule=rule.name, policy_id=policy.id)
                sink.would_reject(policy.id, rule.name, "missing_limit_key", "", view)
                failed_here = True
                break
            if shadow and not policy.shadow:
                key = keys.shadow(key)
            outcome, amount = rule.apply(view, key, now_s)
            if not outcome.allowed:
                if not shadow:
                    undo_all()
                    return Decision(status=429, reason=outcome.reason, rule=rule.name, policy_id=policy.id,
                                    outcome=outcome if outcome.limit else None,
                                    retry_after_s=outcome.retry_after_s, key=key)
                sink.would_reject(policy.id, rule.name, outcome.reason, key, view)
                failed_here = True
                break
            mine.append((rule, key, amount))
            if shadow:
                continue
            if outcome.limit and (best is None or outcome.remaining / outcome.limit < best[0]):
                best = (outcome.remaining / outcome.limit, rule, outcome)
            if SEVERITY[outcome.warning] > SEVERITY[warning]:
                warning = outcome.warning
            delay_ms = max(delay_ms, outcome.delay_ms)
        if failed_here:
            shadow_failed = True
            continue
        if policy.guards is None:
            continue
        hit = policy.guards.check(view, shadow and not policy.shadow, mine, first, now_s)
        if hit is None:
            continue
        if hit.reason == "loop_detected":
            sink.loop_detected(policy.id, shadow)
        if hit.reject and shadow:
            sink.would_reject(policy.id, hit.guard, hit.reason, hit.key, view)
            shadow_failed = True
        elif hit.reject:
            undo_all()
            return Decision(status=429, reason=hit.reason, rule=hit.guard, policy_id=policy.id,
                            retry_after_s=hit.retry_after_s, key=hit.key)
        elif not shadow:
            if SEVERITY[hit.warning] > SEVERITY[warning]:
                warning = hit.warning
            delay_ms = max(delay_ms, hit.delay_ms)
    if shadow_failed:
        for rule, key, amount in reversed(counted):
            rule.undo(key, amount, now_s, now_s)
    if not enforce:
        sink.unlimited(view)
    d = Decision(warning=warning, delay_ms=delay_ms, charged=enforce)
    if best is not None:
        d.rule, d.policy_id, d.outcome = best[1].name, best[1].policy_id, best[2]
    reserved = [c for c in enforce if c[0].reserves]
    if reserved:
        d.reserved = reserved
    return d


def use_reference(engine) -> None:
    """Make `engine` decide with reference_decide instead of its compiled plans."""
    from pyengine.decision import pipeline

    p = engine.pipeline

    def decide(bundle, view, now_s, tracer=None):  # the reference records no trace
        return reference_decide(bundle, view, now_s, p.sink, p.runtime_switches, pipeline._ambiguous)
    p.decide = decide
