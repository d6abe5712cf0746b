"""Semantic pass over a structurally valid Bundle: cross-field rules, syntax of key strings.

Runs after msgspec accepted the types, so every field here has the right type. It collects
every problem it can find (it never stops at the first) as `(json_path, message)` pairs, and
canonicalises a few values in place so the matcher can compare verbatim: HTTP methods are
uppercased, hosts and header names lowercased, and timestamps converted to UTC.
"""

import math
import re
from datetime import datetime, timezone

import msgspec

from pyengine.decision.numbers import POLICY_MAX, POLICY_MIN_BUDGET, POLICY_MIN_RATE_PER_S
from pyengine.decision.strict import STRICT_ALGORITHMS
from pyengine.policy.limit_keys import (KEY_HELP as _KEY_HELP, canonical_key, check_key_value as _check_key_value,
                                         is_cost_ref as _is_cost_ref, is_limit_key, quoted as _q)
from pyengine.policy.schema import (
    Bundle,
    CircuitBreaker,
    ConcurrencyConfig,
    CostBasedConfig,
    KillSwitch,
    LoopDetection,
    Policy,
    PolicySpec,
    Rule,
    Selector,
    TokenBucketConfig,
    TokenBucketLLMConfig,
)

Errors = list[tuple[str, str]]

# `\Z`, not `$`: `$` also matches before a final "\n", which would let `"name\n"` through
# into a RateLimit header. RFC 9110 token: header field names and method names.
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# Policy ids and rule names end up in state keys, metric labels and RateLimit item names.
_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
_ID_HELP = 'must use only letters, digits, ".", "_" and "-" (at most 128)'
_HOST_RE = re.compile(r"^[^\s/?#@]+\Z")


def check_bundle(bundle: Bundle, now_s: float) -> Errors:
    """Return every semantic error in `bundle`; canonicalise case-insensitive values in place."""
    errors: Errors = []
    _check_finite(bundle, "$", errors)
    bundle.issued_at = _to_utc(bundle.issued_at, "$.issued_at", errors)
    bundle.expires_at = _to_utc(bundle.expires_at, "$.expires_at", errors)
    if bundle.global_shadow is not None:
        shadow = bundle.global_shadow
        shadow.expires_at = _to_utc(shadow.expires_at, "$.global_shadow.expires_at", errors)
    if bundle.kill_switch_override is not None:
        ko = bundle.kill_switch_override
        ko.expires_at = _to_utc(ko.expires_at, "$.kill_switch_override.expires_at", errors)
    if bundle.issued_at and bundle.expires_at and bundle.expires_at <= bundle.issued_at:
        errors.append(("$.expires_at", f"must be after issued_at ({_fmt_time(bundle.issued_at)})"))
    if bundle.expires_at and bundle.expires_at.timestamp() <= now_s:
        errors.append(("$.expires_at", f"bundle expired at {_fmt_time(bundle.expires_at)}"))
    seen_ids: set[str] = set()
    for i, policy in enumerate(bundle.policies):
        path = f"$.policies[{i}]"
        if not _ID_RE.match(policy.id):
            errors.append((f"{path}.id", _ID_HELP))
        elif policy.id in seen_ids:
            errors.append((f"{path}.id", f"duplicate policy id {_q(policy.id)}"))
        seen_ids.add(policy.id)
        _check_policy(policy, path, errors)
    for i, switch in enumerate(bundle.kill_switches):
        _check_kill_switch(switch, f"$.kill_switches[{i}]", errors)
    return errors


def _check_policy(policy: Policy, path: str, errors: Errors) -> None:
    spec = policy.spec
    _check_selector(spec.selector, f"{path}.spec.selector", errors)
    _check_guards(spec, f"{path}.spec", errors)
    if spec.loop_detection is not None:
        _check_bounds(spec.loop_detection, f"{path}.spec.loop_detection", errors)
    if spec.circuit_breaker is not None:
        _check_bounds(spec.circuit_breaker, f"{path}.spec.circuit_breaker", errors)
    # State is keyed by (policy id, rule name): the fallback shares the namespace.
    named = [(rule, f"{path}.spec.rules[{j}]") for j, rule in enumerate(spec.rules)]
    if spec.fallback_limit is not None:
        named.append((spec.fallback_limit, f"{path}.spec.fallback_limit"))
        if spec.fallback_limit.match is not None:
            errors.append((f"{path}.spec.fallback_limit.match", "not allowed on fallback_limit"))
    seen_names: set[str] = set()
    for rule, rule_path in named:
        if not _ID_RE.match(rule.name):
            errors.append((f"{rule_path}.name", _ID_HELP))
        elif rule.name in seen_names:
            errors.append((f"{rule_path}.name", f"duplicate rule name {_q(rule.name)}"))
        seen_names.add(rule.name)
        _check_rule(rule, rule_path, errors)


def _check_guards(spec: PolicySpec, path: str, errors: Errors) -> None:
    """loop_detection and circuit_breaker: a disabled block is ignored (fairvisor/edge's
    meaning), an enabled one needs its numbers; values with no meaning here are refused."""
    ld = spec.loop_detection
    if ld is not None:
        if ld.similarity != "exact":
            errors.append((f"{path}.loop_detection.similarity",
                           f'must be "exact" (got {_q(ld.similarity)}): fingerprints compare requests exactly'))
        if ld.enabled:
            for field in ("window_seconds", "threshold_identical_requests"):
                if getattr(ld, field) is None:
                    errors.append((f"{path}.loop_detection.{field}", "required when enabled is true"))
    cb = spec.circuit_breaker
    if cb is not None:
        if cb.action != "reject":
            errors.append((f"{path}.circuit_breaker.action",
                           f'must be "reject" (got {_q(cb.action)}): an open breaker refuses requests'))
        if cb.enabled:
            if cb.spend_rate_threshold_per_minute is None:
                errors.append((f"{path}.circuit_breaker.spend_rate_threshold_per_minute",
                               "required when enabled is true"))
            if not cb.auto_reset_after_minutes:  # absent or 0: fairvisor/edge's "never reset"
                errors.append((f"{path}.circuit_breaker.auto_reset_after_minutes",
                               "required when enabled is true, and must be > 0: this edge has no manual "
                               "breaker reset, so a breaker that never resets would refuse its key for good"))


def _check_selector(sel: Selector, path: str, errors: Errors) -> None:
    if (sel.pathPrefix is None) == (sel.pathExact is None):
        errors.append((path, "exactly one of pathPrefix or pathExact is required"))
    for field in ("pathPrefix", "pathExact"):
        value = getattr(sel, field)
        if value is not None:
            _check_route(value, f"{path}.{field}", errors)
    if sel.methods is not None:
        if not sel.methods:
            errors.append((f"{path}.methods", "must not be empty (omit it to match any method)"))
        for k, method in enumerate(sel.methods):
            if not _TOKEN_RE.match(method):
                errors.append((f"{path}.methods[{k}]", f"invalid HTTP method {_q(method)}"))
        sel.methods = [m.upper() for m in sel.methods]
    if sel.hosts is not None:
        if not sel.hosts:
            errors.append((f"{path}.hosts", "must not be empty (omit it to match any host)"))
        for k, host in enumerate(sel.hosts):
            if not _HOST_RE.match(host):
                errors.append((f"{path}.hosts[{k}]", f"invalid host {_q(host)}"))
            elif re.search(r":\d*$", host) and not host.startswith("["):
                errors.append((f"{path}.hosts[{k}]", "must not include a port"))
        sel.hosts = [h.lower() for h in sel.hosts]


def _check_route(value: str, path: str, errors: Errors) -> None:
    if not value.startswith("/"):
        errors.append((path, 'must start with "/"'))
    elif "?" in value or "#" in value:
        errors.append((path, "must not contain a query string or fragment"))


def _check_rule(rule: Rule, path: str, errors: Errors) -> None:
    seen: set[str] = set()
    for k, key in enumerate(rule.limit_keys):
        key = rule.limit_keys[k] = canonical_key(key)
        if not is_limit_key(key):
            errors.append((f"{path}.limit_keys[{k}]", f"invalid limit key {_q(key)} ({_KEY_HELP})"))
        elif key in seen:
            errors.append((f"{path}.limit_keys[{k}]", f"duplicate limit key {_q(key)}"))
        seen.add(key)
    if rule.match is not None:
        written = rule.match
        rule.match = {canonical_key(k): v for k, v in written.items()}
        for raw_key, value in written.items():
            key, key_path = canonical_key(raw_key), f"{path}.match{_index(raw_key)}"
            if key not in seen:
                errors.append((key_path, f"{_q(key)} is not one of the rule's limit_keys"))
            else:
                _check_key_value(key, value, key_path, errors)
    if rule.consistency == "strict" and rule.algorithm not in STRICT_ALGORITHMS:
        errors.append((f"{path}.consistency", f'"strict" is not available for {rule.algorithm} '
                                              f'(only {", ".join(STRICT_ALGORITHMS)})'))
    cfg = rule.algorithm_config
    cfg_path = f"{path}.algorithm_config"
    _check_bounds(cfg, cfg_path, errors)
    if isinstance(cfg, TokenBucketConfig):
        _check_token_bucket(cfg, cfg_path, errors)
    elif isinstance(cfg, TokenBucketLLMConfig):
        _fold_completion_alias(cfg, cfg_path, errors)
        assert cfg.burst_tokens is not None  # defaulted in __post_init__
        if cfg.burst_tokens < cfg.tokens_per_minute:
            errors.append((f"{cfg_path}.burst_tokens",
                           f"must be >= tokens_per_minute ({cfg.tokens_per_minute})"))
    elif isinstance(cfg, CostBasedConfig):
        _check_cost_based(cfg, cfg_path, errors)


def _check_token_bucket(cfg: TokenBucketConfig, path: str, errors: Errors) -> None:
    rate = cfg.tokens_per_second
    assert rate is not None  # the rps alias is resolved in __post_init__
    if cfg.burst < rate:
        errors.append((f"{path}.burst", f"must be >= tokens_per_second ({_num(rate)})"))
    cfg.cost_source = canonical_key(cfg.cost_source)
    if not _is_cost_ref(cfg.cost_source):
        errors.append((f"{path}.cost_source",
                       f'must be "fixed", "header:<name>" or "query:<name>" '
                       f"(got {_q(cfg.cost_source)})"))
    elif cfg.cost_source == "fixed" and cfg.fixed_cost > cfg.burst:
        # Such a bucket could never admit a single request.
        errors.append((f"{path}.fixed_cost", f"must be <= burst ({_num(cfg.burst)})"))


def _check_cost_based(cfg: CostBasedConfig, path: str, errors: Errors) -> None:
    cfg.cost_key = canonical_key(cfg.cost_key)
    if cfg.cost_key != "llm_usd" and not _is_cost_ref(cfg.cost_key):
        errors.append((f"{path}.cost_key",
                       f'must be "fixed", "header:<name>", "query:<name>" or "llm_usd" '
                       f"(got {_q(cfg.cost_key)})"))
    previous: float | None = None
    for k, stage in enumerate(cfg.staged_actions):
        stage_path = f"{path}.staged_actions[{k}]"
        if previous is not None and stage.threshold_percent <= previous:
            errors.append((f"{stage_path}.threshold_percent",
                           f"must be greater than the previous threshold ({_num(previous)})"))
        previous = stage.threshold_percent
        if stage.action == "throttle" and stage.delay_ms is None:
            errors.append((f"{stage_path}.delay_ms", 'required when action is "throttle"'))
        elif stage.action != "throttle" and stage.delay_ms is not None:
            errors.append((f"{stage_path}.delay_ms", 'only allowed when action is "throttle"'))
    if not any(s.action == "reject" and s.threshold_percent == 100 for s in cfg.staged_actions):
        errors.append((f"{path}.staged_actions",
                       "a reject action at threshold_percent 100 is required"))


def _check_kill_switch(switch: KillSwitch, path: str, errors: Errors) -> None:
    switch.expires_at = _to_utc(switch.expires_at, f"{path}.expires_at", errors)
    switch.scope_key = canonical_key(switch.scope_key)
    if not is_limit_key(switch.scope_key):
        errors.append((f"{path}.scope_key",
                       f"invalid limit key {_q(switch.scope_key)} ({_KEY_HELP})"))
    if switch.scope_value == "":
        errors.append((f"{path}.scope_value", "must not be empty"))
    else:
        _check_key_value(switch.scope_key, switch.scope_value, f"{path}.scope_value", errors)
    if switch.route is not None:
        _check_route(switch.route, f"{path}.route", errors)


def _fold_completion_alias(cfg: TokenBucketLLMConfig, path: str, errors: Errors) -> None:
    """fairvisor/edge's example spells default_max_completion as default_max_completion_tokens."""
    alias = cfg.default_max_completion_tokens
    if alias is None:
        return
    cfg.default_max_completion_tokens = None
    if cfg.default_max_completion not in (1000, alias):  # 1000: the default, i.e. not written
        errors.append((f"{path}.default_max_completion_tokens",
                       f"is an alias of default_max_completion ({cfg.default_max_completion}): give one"))
    cfg.default_max_completion = alias


_BOUNDED = (TokenBucketConfig, TokenBucketLLMConfig, CostBasedConfig, ConcurrencyConfig, LoopDetection, CircuitBreaker)


def _check_bounds(cfg, path: str, errors: Errors) -> None:
    """Every rate, capacity, cost and duration is at most POLICY_MAX, and a token bucket refills
    at least POLICY_MIN_RATE_PER_S (pyengine.decision.numbers): limiter arithmetic can then never overflow,
    and a clamped client amount still exceeds every capacity."""
    assert isinstance(cfg, _BOUNDED)
    for name in cfg.__struct_fields__:
        value = getattr(cfg, name)
        if name == "burst_tokens" and value == getattr(cfg, "tokens_per_minute"):
            continue  # defaulted from tokens_per_minute, whose own error says it
        if value.__class__ in (int, float) and math.isfinite(value) and value > POLICY_MAX:
            errors.append((f"{path}.{name}", f"must be <= {POLICY_MAX:.0e} (got {value:g})"))
    if isinstance(cfg, CostBasedConfig) and cfg.budget < POLICY_MIN_BUDGET:
        errors.append((f"{path}.budget", f"must be >= {POLICY_MIN_BUDGET:.0e}, one micro-unit (got {cfg.budget:g})"))
    if isinstance(cfg, TokenBucketConfig) and cfg.tokens_per_second is not None \
            and cfg.tokens_per_second < POLICY_MIN_RATE_PER_S:
        errors.append((f"{path}.tokens_per_second",
                       f"must be >= {POLICY_MIN_RATE_PER_S:.0e} tokens per second (got {cfg.tokens_per_second:g})"))


def _to_utc(t: datetime | None, path: str, errors: Errors) -> datetime | None:
    """Store timestamps in UTC; refuse ones that leave datetime's range once converted."""
    if t is None:
        return None
    try:
        return t.astimezone(timezone.utc)
    except OverflowError:
        errors.append((path, "out of range once converted to UTC"))
        return None


def _check_finite(value: object, path: str, errors: Errors) -> None:
    """Refuse inf/NaN anywhere. JSON cannot spell them, but a Bundle can arrive by convert()."""
    if isinstance(value, float):
        if not math.isfinite(value):
            errors.append((path, "must be a finite number"))
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            _check_finite(getattr(value, name), f"{path}.{name}", errors)
    elif isinstance(value, list):
        for k, item in enumerate(value):
            _check_finite(item, f"{path}[{k}]", errors)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{path}{_index(key)}", errors)


def _index(key: str) -> str:
    return f"[{_q(key)}]"


def _num(x: float) -> str:
    """5.0 -> "5", 0.5 -> "0.5": numbers in messages read as the user wrote them."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _fmt_time(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")  # already UTC (see _to_utc)


# For the admin API's runtime kill switches (pyengine.overlay.model): the bundle's route check.
check_route = _check_route
