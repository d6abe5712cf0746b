"""The decision path: kill switches, then every matching policy's rules, all-or-nothing.

Order (contract §1): a request with a repeated header that must have one value is refused
first (400 ambiguous_header, pyengine.header_lines), before any key is read; then kill
switches; then, per matching policy in bundle order, its rules whose `match` holds (or its
fallback). The first enforcing rule that rejects ends the request;
every charge made before it is undone, so a rejected request is never charged; so is every
charge made before an exception (the engine then answers engine_error, pyengine.engine_errors).
Shadow policies (and every policy under an active global shadow) count in their own state and
never change the Decision; their would-be rejections go to metrics and the decision log.
A rule without a key value for this request is skipped, counted on its shared key, or refuses
the request (missing_limit_key), as its on_missing_key says.
"""

import math

from .guards.kill_hits import record_hit
from .state import keys
from .verdict import Decision

KILL_SWITCH_RETRY_S = 3600
# One X-Fairvisor-Warning per response: the most severe wins (throttles over warnings).
_SEVERITY = {None: 0, "budget_warn": 1, "loop_warn": 2, "budget_throttle": 3, "loop_throttle": 4}


def _undo(charged, at_s: float, now_s: float) -> None:
    for rule, key, amount in reversed(charged):
        rule.undo(key, amount, at_s, now_s)


def _rejected(outcome, rule) -> Decision:
    return Decision(status=429, reason=outcome.reason, rule=rule.name, policy_id=rule.policy_id,
                    outcome=outcome if outcome.limit else None, retry_after_s=outcome.retry_after_s)


def _ambiguous(bundle, view, now_s: float, sink, runtime) -> Decision | None:
    """The refusal of a request that repeated a header read as one value, or None when only
    shadow state reads those headers (the would-be refusal is counted; they read as absent).
    Kill switches, the bundle's and the runtime ones (`runtime`), are never in shadow."""
    global_shadow = bundle.global_shadow is not None and bundle.global_shadow_active(now_s)
    switched = runtime.headers() if runtime is not None and runtime.by_key else ()
    for name in view.ambiguous:
        if name in bundle.single_always or (name in bundle.single_enforced and not global_shadow) \
                or name in switched or name not in bundle.header_index:
            # The header's name (from the policy or the engine, never a client value) is for operators.
            return Decision(status=400, reason="ambiguous_header", detail=name)
    sink.would_reject("", "", "ambiguous_header", "", view)
    return None


def _missing(rule) -> Decision:
    return Decision(status=429, reason="missing_limit_key", rule=rule.name, policy_id=rule.policy_id)


def _allowed(charged: list, best, warning, delay_ms: int) -> Decision:
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


def _decide_straight(rules: tuple, view, now_s: float, sink) -> Decision:
    """The loop of Pipeline.decide for enforce-mode policies without a fallback rule or guards
    (the common case), with the shadow, fallback and guard branches left out: same decisions
    (tests/engine/test_straight_path.py), about half the per-request glue."""
    charged: list = []
    best = None
    warning = None
    delay_ms = 0
    try:
        for rule in rules:
            if rule.match and not rule.matches(view):
                continue
            key = rule.state_key(view)
            if key is None:
                if rule.reject_missing:
                    _undo(charged, now_s, now_s)
                    return _missing(rule)
                sink.skipped(rule.policy_id, rule.name)
                continue
            outcome, amount = rule.apply(view, key, now_s)
            if not outcome.allowed:
                _undo(charged, now_s, now_s)
                return _rejected(outcome, rule)
            charged.append((rule, key, amount))
            limit = outcome.limit
            if limit:
                ratio = outcome.remaining / limit
                if best is None or ratio < best[0]:
                    best = (ratio, rule, outcome)
            if outcome.warning is not None and _SEVERITY[outcome.warning] > _SEVERITY[warning]:
                warning = outcome.warning
            if outcome.delay_ms > delay_ms:
                delay_ms = outcome.delay_ms
    except BaseException:
        _undo(charged, now_s, now_s)  # all-or-nothing holds for our own bugs too
        raise
    if not charged:
        sink.unlimited(view)  # no rule limited it (pyengine.coverage)
    return _allowed(charged, best, warning, delay_ms)


def _killed(bundle, ks, now_s: float) -> Decision:
    retry = KILL_SWITCH_RETRY_S
    if ks.expires_at_s is not None:
        retry = max(1, min(retry, math.ceil(ks.expires_at_s - now_s)))
    record_hit(bundle.store, ks, now_s)
    # The switch's reason is for operators (decision log), never for the client.
    return Decision(status=429, reason="kill_switch_active", retry_after_s=retry, detail=ks.reason)


class Pipeline:
    """Stateless apart from its metrics sink; all counters live in the store behind the rules."""

    def __init__(self, sink, runtime_switches=None):
        # .skipped(policy, rule) .would_reject(policy, rule, reason, key, view)
        # .unmatched(view) .unlimited(view): allowed with no policy / no rule limiting it
        self.sink = sink
        # Kill switches added through the admin API (pyengine.overlay.switches.SwitchIndex);
        # None while there are none, so the common path tests one attribute (Engine.sync_runtime).
        self.runtime_switches = runtime_switches

    def decide(self, bundle, view, now_s: float) -> Decision:
        if view.ambiguous is not None:
            refusal = _ambiguous(bundle, view, now_s, self.sink, self.runtime_switches)
            if refusal is not None:
                return refusal
        switches = bundle.kill_switches
        runtime = self.runtime_switches
        # kill_switch_override: every switch, runtime ones too, skipped until it expires.
        if (switches or runtime is not None) and not bundle.kill_switches_overridden(now_s):
            for ks in switches:
                if ks.hits(view, now_s):
                    return _killed(bundle, ks, now_s)
            if runtime is not None:
                ks = runtime.match(view, now_s)
                if ks is not None:
                    return _killed(bundle, ks, now_s)

        policies, straight = bundle.routes.plan(view.method, view.host, view.path)
        if not policies:
            self.sink.unmatched(view)  # pyengine.coverage
            return Decision()
        global_shadow = bundle.global_shadow_active(now_s) if bundle.global_shadow is not None else False
        if straight is not None and not global_shadow:
            return _decide_straight(straight, view, now_s, self.sink)
        sink = self.sink
        charged: list = []
        shadow_charged: list = []
        shadow_failed = False
        best = None  # (ratio, rule, outcome) of the most restrictive allowing rule
        warning = None
        delay_ms = 0

        try:
            for policy in policies:
                shadow = policy.shadow or global_shadow
                if shadow and shadow_failed:
                    continue
                guards = policy.guards
                if guards is not None:
                    first = len(shadow_charged if shadow else charged)
                for rule in (policy.rules if policy.plain else policy.applicable(view)):
                    key = rule.state_key(view)
                    if key is None:
                        if rule.reject_missing:
                            if shadow:
                                sink.would_reject(policy.id, rule.name, "missing_limit_key", "", view)
                                shadow_failed = True
                                break
                            _undo(charged, now_s, now_s)
                            _undo(shadow_charged, now_s, now_s)
                            return _missing(rule)
                        sink.skipped(policy.id, rule.name)
                        continue
                    if shadow and not policy.shadow:
                        key = keys.shadow(key)  # global shadow: keep enforce counters untouched
                    outcome, amount = rule.apply(view, key, now_s)
                    if shadow:
                        if outcome.allowed:
                            shadow_charged.append((rule, key, amount))
                            continue
                        sink.would_reject(policy.id, rule.name, outcome.reason, key, view)
                        shadow_failed = True
                        break
                    if not outcome.allowed:
                        _undo(charged, now_s, now_s)
                        _undo(shadow_charged, now_s, now_s)
                        return _rejected(outcome, rule)
                    charged.append((rule, key, amount))
                    if outcome.limit:
                        ratio = outcome.remaining / outcome.limit
                        if best is None or ratio < best[0]:
                            best = (ratio, rule, outcome)
                    if outcome.warning is not None and _SEVERITY[outcome.warning] > _SEVERITY[warning]:
                        warning = outcome.warning
                    if outcome.delay_ms > delay_ms:
                        delay_ms = outcome.delay_ms

                # Loop detection and the breaker run once the policy's rules allowed (pyengine.guards).
                if guards is not None and not (shadow and shadow_failed):
                    hit = guards.check(view, shadow and not policy.shadow,
                                       shadow_charged if shadow else charged, first, now_s)
                    if hit is not None:
                        if hit.reason == "loop_detected":
                            sink.loop_detected(policy.id, shadow)
                        if shadow:
                            if hit.reject:
                                sink.would_reject(policy.id, hit.guard, hit.reason, hit.key, view)
                                shadow_failed = True
                        elif hit.reject:
                            _undo(charged, now_s, now_s)
                            _undo(shadow_charged, now_s, now_s)
                            return Decision(status=429, reason=hit.reason, rule=hit.guard, policy_id=policy.id,
                                            retry_after_s=hit.retry_after_s)
                        else:
                            if _SEVERITY[hit.warning] > _SEVERITY[warning]:
                                warning = hit.warning
                            if hit.delay_ms > delay_ms:
                                delay_ms = hit.delay_ms
        except BaseException:
            _undo(charged, now_s, now_s)  # all-or-nothing holds for our own bugs too
            _undo(shadow_charged, now_s, now_s)
            raise
        if shadow_failed:
            _undo(shadow_charged, now_s, now_s)
        if not charged:
            sink.unlimited(view)
        return _allowed(charged, best, warning, delay_ms)
