"""Compiles a validated Bundle into the immutable form the decision path runs on."""

import calendar

from ..config import ADMIN_OFF
from ..decision.kill_hits import hits_key
from ..guards.policy_guards import PolicyGuards
from ..decision.header_lines import HeaderNeeds
from ..decision.keys import TrustedProxies, headers_needed, make_extractor
from ..llm.pricing import Pricing
from ..llm.request import LLM_HEADERS
from ..decision.memo import Memo
from ..decision.plan import Plan
from ..decision.request import REQUEST_HEADER_FAMILIES, SELFTEST_HEADER, described_headers
from ..state import keys
from .matcher import RouteIndex, Selector, prefix_matches
from ..decision.rules import ConcurrencyRule, CostRule, LLMRule, TokenBucketRule, key_value


def _epoch_s(dt) -> float | None:
    return None if dt is None else calendar.timegm(dt.utctimetuple()) + dt.microsecond / 1e6


class KillSwitch:
    __slots__ = ("limit_key", "key_fn", "value", "route", "reason", "expires_at_s", "hits_key")

    def __init__(self, limit_key: str, key_fn, value, route, reason, expires_at_s):
        self.limit_key = limit_key  # its scope key: the value is extracted once per request, shared with rules
        self.key_fn = key_fn
        self.value = value
        self.route = route
        self.reason = reason
        self.expires_at_s = expires_at_s
        self.hits_key = None  # durable hit counter, see pyengine.decision.kill_hits

    def hits(self, view, now_s: float) -> bool:
        if self.expires_at_s is not None and now_s >= self.expires_at_s:
            return False
        if self.route is not None and not prefix_matches(self.route, view.path):
            return False
        return key_value(view, self.limit_key, self.key_fn) == self.value


class CompiledPolicy:
    __slots__ = ("id", "shadow", "rules", "fallback", "spec", "plain", "guards", "all_rules")

    def __init__(self, pid, shadow, rules, fallback, spec):
        self.id = pid
        self.shadow = shadow  # mode == "shadow"
        self.rules = rules  # tuple of CompiledRule
        self.fallback = fallback  # CompiledRule or None
        self.all_rules = rules + ((fallback,) if fallback is not None else ())  # the rules, then the fallback
        self.spec = spec  # the validated PolicySpec (loop detection, breaker: later features)
        # No rule has a `match`: every rule always applies (the common case, kept cheap).
        self.plain = bool(rules) and all(not r.match for r in rules)
        self.guards = None  # PolicyGuards when loop detection or a breaker is enabled


class CompiledBundle:
    """Everything derived from one policy file; replaced whole on reload, never mutated."""

    def __init__(self, bundle, policy_hash: str, generation: int, store, settings, tripped=None,
                 extra_headers=(), memo=None, strict=None):
        """`extra_headers`: read by runtime kill switches (pyengine.overlay), sent by the shim too.
        `memo`: the engine's memo tables (pyengine.decision.memo); this bundle gets fresh route and price ones.
        `strict`: fleet mode's strict path (pyengine.decision.strict.Strict); None decides every
        rule locally, `consistency: strict` included (embedded state is exact already)."""
        self.strict = strict
        self.source = bundle  # the validated Bundle, for recompiling with runtime changes
        memo = Memo() if memo is None else memo
        proxies = TrustedProxies(settings.trusted_proxies, memo)
        # The client address behind trusted proxies, for whoever needs it outside a rule (jitter).
        self.client_ip = make_extractor("ip:address", proxies)
        self.store = store
        self.tripped = {} if tripped is None else tripped
        self.version = bundle.bundle_version
        self.hash = policy_hash
        self.generation = generation
        self.pricing = Pricing(bundle.pricing, memo.fresh("price"))  # the bundle's prices, then the catalogue's, then "*"
        self.global_shadow = bundle.global_shadow
        self.global_shadow_until_s = _epoch_s(bundle.global_shadow.expires_at) if bundle.global_shadow else None
        ko = bundle.kill_switch_override
        # Kill switches are skipped until this time (UTC epoch s; inf = no expiry); None = never.
        self.kill_switch_override_until_s = (None if ko is None or not ko.enabled else
                                             _epoch_s(ko.expires_at) if ko.expires_at else float("inf"))
        needed = HeaderNeeds()  # what the shim sends, and who reads it (pyengine.decision.header_lines)
        # The header family that describes a request to the decision service (FAIRVISOR_REQUEST_HEADERS).
        self.family = REQUEST_HEADER_FAMILIES[settings.request_headers]
        if settings.mode == "decision_service":
            needed.add(described_headers(settings.request_headers))
        if settings.debug_session_secret:
            needed.add(("cookie",))  # debug sessions only: otherwise cookies never leave nginx
        # Runtime kill switches: read whatever the shadow state. Only names are known here, so a
        # list header among them (ip:address reads X-Forwarded-For) stays a joined list.
        needed.add(sorted(extra_headers))
        if settings.admin_listen != ADMIN_OFF:  # self-test runs start there (pyengine.selftest)
            needed.add((SELFTEST_HEADER,))
        needs_body = False

        def extractor(limit_key: str):
            nonlocal needs_body
            needed.add(headers_needed(limit_key), raw=limit_key.startswith("header:"))
            if limit_key == "llm:model":  # the model is in the body (or a Gemini path)
                needs_body = True
                needed.add(LLM_HEADERS)
            return make_extractor(limit_key, proxies)

        def compile_rule(policy, rule, shadow: bool):
            compiled = compile_limiter(policy, rule, shadow, store)
            if strict is not None and rule.consistency == "strict" and not shadow:
                compiled.strict = strict.twin(lambda scratch: compile_limiter(policy, rule, shadow, scratch))
            return compiled

        def compile_limiter(policy, rule, shadow: bool, store):
            nonlocal needs_body
            prefix = keys.rule_prefix(policy.id, rule.name, shadow)
            key_fns = tuple((k, extractor(k)) for k in rule.limit_keys)
            match = tuple((k, extractor(k), v) for k, v in (rule.match or {}).items())
            cfg = rule.algorithm_config
            missing = rule.on_missing_key
            if rule.algorithm == "token_bucket":
                if cfg.cost_source.startswith("header:"):
                    needed.add((cfg.cost_source[7:].lower(),), raw=True)
                return TokenBucketRule(rule.name, policy.id, key_fns, match, prefix, store, cfg, missing)
            if rule.algorithm == "concurrency":
                return ConcurrencyRule(rule.name, policy.id, key_fns, match, prefix, store, cfg, missing)
            if rule.algorithm == "token_bucket_llm":
                needs_body = True
                needed.add(LLM_HEADERS)
                return LLMRule(rule.name, policy.id, key_fns, match, prefix, store, cfg, missing)
            if cfg.cost_key.startswith("header:"):
                needed.add((cfg.cost_key[7:].lower(),), raw=True)
            if cfg.cost_key == "llm_usd":
                needs_body = True
                needed.add(LLM_HEADERS)
            return CostRule(rule.name, policy.id, key_fns, match, prefix, store, cfg, self.pricing, missing)

        policies = []
        for p in bundle.policies:
            spec = p.spec
            shadow = spec.mode == "shadow"
            needed.reader = "shadow" if shadow else "enforced"
            rules = tuple(compile_rule(p, r, shadow) for r in spec.rules)
            fallback = compile_rule(p, spec.fallback_limit, shadow) if spec.fallback_limit else None
            if spec.loop_detection is not None and spec.loop_detection.enabled:
                needs_body = True
            sel = spec.selector
            cp = CompiledPolicy(p.id, shadow, rules, fallback, spec)
            if (spec.loop_detection is not None and spec.loop_detection.enabled) or \
                    (spec.circuit_breaker is not None and spec.circuit_breaker.enabled):
                # `tripped`: the engine's index of open breakers, kept across reloads.
                cp.guards = PolicyGuards(p.id, spec, cp.all_rules, shadow, store,
                                         self.tripped)
            policies.append((Selector(sel.pathPrefix, sel.pathExact, sel.methods, sel.hosts), cp))
        self.routes = RouteIndex(policies, lambda found, path, shadow: Plan(self, found, path, shadow),
                                 memo.fresh("route"))
        self.policies = tuple(cp for _, cp in policies)
        needed.reader = "always"
        self.kill_switches = tuple(
            KillSwitch(ks.scope_key, extractor(ks.scope_key), ks.scope_value, ks.route, ks.reason,
                       _epoch_s(ks.expires_at))
            for ks in bundle.kill_switches
        )
        for compiled_ks, ks in zip(self.kill_switches, bundle.kill_switches):
            compiled_ks.hits_key = hits_key(ks.scope_key, ks.scope_value, ks.route)
        # Repeated lines at the `header_joins` positions are joined; of a header in `single_always`
        # (or `single_enforced`, unless a global shadow is active), refused (pyengine.decision.pipeline).
        self.header_names, self.header_index, self.header_joins, self.single_always, self.single_enforced = \
            needed.plan()
        self.needs_body = needs_body

    def kill_switches_overridden(self, now_s: float) -> bool:
        """An enabled, unexpired `kill_switch_override`: every kill switch is skipped."""
        until = self.kill_switch_override_until_s
        return until is not None and now_s < until

    def global_shadow_active(self, now_s: float) -> bool:
        gs = self.global_shadow
        if gs is None or not gs.enabled:
            return False
        return self.global_shadow_until_s is None or now_s < self.global_shadow_until_s
