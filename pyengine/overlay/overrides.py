"""Limit overrides for one key value: the rule's limiter answers other limits for that value's state key.

A rule with no override keeps its own limiter and pays nothing. A rule with one gets a
KeyedLimiter in its place: one dict lookup per call, then the overriding limiter for that
state key while the override has not expired, else the rule's own. Both work on the same
state key, so switching keeps what was used: a budget's spend stays spent; a bucket's debt
(seconds to full) is kept, so with a multiplier its fill fraction carries over exactly.

An override applies to every single-key rule keyed on its scope key (narrowed to one policy,
or one rule, when given). Where several overrides cover one rule and value, the narrowest
wins (rule, then policy, then all), the newest among equals.
"""

from ..algorithms.cost_based import CostBudget
from ..algorithms.token_bucket import TokenBucket
from ..algorithms.token_bucket_llm import LLMTokenLimiter
from ..decision.rules import MICROS, CostRule, LLMRule, TokenBucketRule
from ..state import keys
from .model import LIMIT_FIELDS

_SLOT = {TokenBucketRule: "bucket", LLMRule: "limiter", CostRule: "budget"}
_ALGORITHM = {TokenBucketRule: "token_bucket", LLMRule: "token_bucket_llm", CostRule: "cost_based"}


def _dispatching(name: str):
    def call(self, key, *args):
        o = self.by_key.get(key)
        # Every limiter method takes now_s last.
        limiter = self.base if o is None or args[-1] >= o[0] else o[1]
        return getattr(limiter, name)(key, *args)
    call.__name__ = name
    return call


class KeyedLimiter:
    """Stands in a rule's limiter slot: {state key: (expires_at_s, limiter)} over `base`."""

    __slots__ = ("base", "by_key")

    def __init__(self, base):
        self.base = base
        self.by_key: dict[str, tuple[float, object]] = {}

    acquire = _dispatching("acquire")
    reserve = _dispatching("reserve")
    refund = _dispatching("refund")
    charge = _dispatching("charge")
    settle = _dispatching("settle")
    peek = _dispatching("peek")

    def __getattr__(self, name):  # tpm, tpd, check_request: the rule's own
        return getattr(self.base, name)


def _scaled(value: float, factor: float, whole: bool):
    v = value * factor
    return max(1, round(v)) if whole else v


def build_limiter(rule, spec_cfg, rec, store):
    """The limiter `rule` uses for the override `rec`; `spec_cfg` is the rule's algorithm_config."""
    m = rec.multiplier
    lim = rec.limits or {}
    if rule.__class__ is TokenBucketRule:
        rate = spec_cfg.tokens_per_second
        burst = spec_cfg.burst
        if m is not None:
            rate, burst = rate * m, burst * m
        else:
            new_rate = lim.get("tokens_per_second", rate)
            burst = lim.get("burst", burst * new_rate / rate)  # a rate alone keeps burst's ratio to it
            rate = new_rate
        return TokenBucket(store, rate, burst)
    if rule.__class__ is LLMRule:
        tpm, burst, tpd = spec_cfg.tokens_per_minute, spec_cfg.burst_tokens, spec_cfg.tokens_per_day
        if m is not None:
            tpm, burst = _scaled(tpm, m, True), _scaled(burst, m, True)
            tpd = _scaled(tpd, m, True) if tpd is not None else None
        else:
            new_tpm = int(lim.get("tokens_per_minute", tpm))
            burst = int(lim.get("burst_tokens", _scaled(burst, new_tpm / tpm, True)))
            tpm = new_tpm
            tpd = int(lim["tokens_per_day"]) if "tokens_per_day" in lim else tpd
        return LLMTokenLimiter(store, max(1, tpm), max(1, burst), tpd)
    budget = spec_cfg.budget * m if m is not None else lim.get("budget", spec_cfg.budget)
    stages = [(s.threshold_percent, s.action, s.delay_ms or 0) for s in spec_cfg.staged_actions]
    per_unit = 10_000 if rule.llm_usd else MICROS
    return CostBudget(store, max(1, int(round(budget * MICROS))), spec_cfg.period, stages, per_unit)


def _specificity(rec) -> tuple:
    return (rec.rule is not None, rec.policy is not None, rec.created_at_s)


def applies(rec, rule) -> bool:
    if len(rule.key_fns) != 1 or rule.key_fns[0][0] != rec.scope_key:
        return False
    if rec.policy is not None and rule.policy_id != rec.policy:
        return False
    if rec.rule is not None and rule.name != rec.rule:
        return False
    if rec.limits is not None and not set(rec.limits) & set(_fields(rule)):
        return False  # absolute limits this algorithm does not have: nothing to change
    return True


def _fields(rule) -> tuple:
    return LIMIT_FIELDS[_ALGORITHM[rule.__class__]]


def _rules_of(bundle):
    """(compiled rule, its algorithm_config) for every overridable rule of a compiled bundle."""
    specs = {}
    for p in bundle.source.policies:
        for r in p.spec.rules + ([p.spec.fallback_limit] if p.spec.fallback_limit else []):
            specs[(p.id, r.name)] = r.algorithm_config
    for cp in bundle.policies:
        for rule in cp.all_rules:
            if rule.__class__ in _SLOT:
                yield rule, specs[(rule.policy_id, rule.name)]


def _unwrap(rule) -> KeyedLimiter:
    slot = _SLOT[rule.__class__]
    current = getattr(rule, slot)
    if current.__class__ is not KeyedLimiter:
        current = KeyedLimiter(current)
        setattr(rule, slot, current)
    return current


def install(bundle, overrides, store, scope=None) -> list[tuple[str, str]]:
    """Put `overrides` (OverrideRecord, all active) into the rules of a compiled bundle.
    With `scope` (scope_key, value), only that value's entries are recomputed (one change).
    Returns the (policy, rule) pairs now overridden for the changed records."""
    touched = []
    by_key: dict[str, list] = {}  # scope key -> its overrides: a rule looks only at its own key's
    for rec in overrides:
        if scope is None or (rec.scope_key, rec.scope_value) == scope:
            by_key.setdefault(rec.scope_key, []).append(rec)
    for rule, cfg in _rules_of(bundle):
        lk = rule.key_fns[0][0] if len(rule.key_fns) == 1 else None
        if lk is None or (scope is not None and lk != scope[0]):
            continue
        best: dict[str, object] = {}
        for rec in by_key.get(lk, ()):
            if not applies(rec, rule):
                continue
            cur = best.get(rec.scope_value)
            if cur is None or _specificity(rec) > _specificity(cur):
                best[rec.scope_value] = rec
        values = [scope[1]] if scope is not None else list(best)
        if not values:
            continue
        keyed = _unwrap(rule)
        for value in values:
            key = keys.one_value(rule.prefix, value)
            rec = best.get(value)
            for k in (key, keys.shadow(key)) if not keys.is_shadow(key) else (key,):
                if rec is None:
                    keyed.by_key.pop(k, None)
                else:
                    keyed.by_key[k] = (rec.expires_at_s, build_limiter(rule, cfg, rec, store))
            if rec is not None:
                touched.append((rule.policy_id, rule.name))
        if not keyed.by_key:
            setattr(rule, _SLOT[rule.__class__], keyed.base)  # no override left: the plain path again
    return touched


def targets(bundle, rec) -> list[str]:
    """"policy/rule" of every rule of `bundle` the override `rec` applies to."""
    if bundle is None:
        return []
    return [f"{rule.policy_id}/{rule.name}" for rule, _ in _rules_of(bundle) if applies(rec, rule)]
