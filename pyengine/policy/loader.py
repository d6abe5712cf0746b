"""Load a policy bundle: JSON syntax, then structure (msgspec), then semantics; or PolicyError.

Each pass runs only when the one before found nothing, so a later pass never reports noise
caused by an earlier problem. The structural pass converts every policy, rule, algorithm
config and kill switch on its own, so one bad rule does not hide another's error (msgspec
itself stops at the first error within a single conversion). Every error is a string
`<source>: <json path>: <message>`, e.g.
`policy.json: $.policies[0].spec.rules[1].algorithm_config.burst: must be >= tokens_per_second (5)`.
"""

import hashlib
import json
import os
import sys
from typing import Any, TypeVar

import msgspec

from pyengine.errors import PolicyError
from pyengine.policy.checks import check_bundle
from pyengine.policy.schema import CONFIG_TYPES, Bundle, FallbackRule, KillSwitch, ModelPrice, Policy, Rule
from pyengine.policy.shape_errors import child_path, locate

T = TypeVar("T")
Errors = list[tuple[str, str]]

STDIN_SOURCE = "<stdin>"


class _NotJSONConstant(ValueError):
    """NaN/Infinity: Python's json accepts them, JSON (and msgspec) does not."""


MAX_USD_PER_MTOK = 1_000_000  # USD per million tokens


def load_bundle_bytes(data: bytes, source: str, now_s: float) -> Bundle:
    """Parse and validate a bundle; `source` names it in errors, `now_s` is for expiry."""
    errors: Errors = []
    doc = parse_json(data, errors)
    bundle = None if errors else _structure(doc, errors)
    if bundle is not None and not errors:
        errors = check_bundle(bundle, now_s)
    if errors or bundle is None:
        errors = errors or [("$", "not a valid bundle")]  # unreachable: a None always has a cause
        raise PolicyError.at(source, errors)
    return bundle


def load_bundle_file(path: str, now_s: float) -> Bundle:
    """Load from a file, or from stdin when `path` is "-". Unreadable files are PolicyErrors."""
    if path == "-":
        return load_bundle_bytes(sys.stdin.buffer.read(), STDIN_SOURCE, now_s)
    source = os.path.basename(path) or path
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PolicyError.at(source, [("$", f"cannot read file: {e.strerror or e}")]) from e
    return load_bundle_bytes(data, source, now_s)


def policy_hash(data: bytes) -> str:
    """First 16 hex digits of the SHA-256 of the raw bundle bytes (shown by /readyz, metrics)."""
    return hashlib.sha256(data).hexdigest()[:16]


def count_rules(bundle: Bundle) -> int:
    """Rules plus fallback limits, over all policies (the `validate` summary count)."""
    return sum(len(p.spec.rules) + (p.spec.fallback_limit is not None) for p in bundle.policies)


# --- pass 1: JSON syntax -------------------------------------------------------------------

def parse_json(data: bytes, errors: Errors) -> Any:
    """Decode with msgspec; every message is ours, from our own checks of `data`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        errors.append(("$", f"invalid JSON: not valid UTF-8 (byte {e.start})"))
        return None
    if not text.strip():
        errors.append(("$", "invalid JSON: the document is empty"))
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.ValidationError:  # the only one an untyped decode raises: e.g. 1e400
        errors.append(("$", "invalid JSON: number out of range"))
    except msgspec.DecodeError:
        errors.append(("$", f"invalid JSON{_syntax_error_at(text)}"))
    except RecursionError:
        errors.append(("$", "invalid JSON: nested too deeply"))
    return None


def _syntax_error_at(text: str) -> str:
    """Where the syntax error is, found by Python's json (its positions, not its wording)."""
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        return f" at line {e.lineno}, column {e.colno}"
    except _NotJSONConstant as e:
        return f": {e.args[0]} is not a JSON value"
    except RecursionError:
        return ": nested too deeply"
    return ""  # msgspec refused what Python's json accepts: no position to give


def _refuse_constant(name: str) -> Any:
    raise _NotJSONConstant(name)


# --- pass 2: structure ---------------------------------------------------------------------

def _structure(doc: Any, errors: Errors) -> Bundle | None:
    """Convert `doc` piecewise, so each policy, rule and kill switch reports its own error."""
    if not isinstance(doc, dict):
        _convert(doc, Bundle, "$", errors)
        return None
    shell = dict(doc)
    raw_policies = _detach(shell, "policies", list, [])
    raw_switches = _detach(shell, "kill_switches", list, [])
    raw_pricing = _detach(shell, "pricing", dict, {})
    bundle = _convert(shell, Bundle, "$", errors)
    policies = [_policy(p, f"$.policies[{i}]", errors) for i, p in enumerate(raw_policies or [])]
    switches = [_convert(k, KillSwitch, f"$.kill_switches[{i}]", errors)
                for i, k in enumerate(raw_switches or [])]
    pricing = {}
    for model, price in (raw_pricing or {}).items():
        if model == "":
            errors.append(('$.pricing[""]', "model name must not be empty"))
        pricing[model] = _convert(price, ModelPrice, child_path("$.pricing", model), errors)
        for field in ("input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok",
                      "cache_write_usd_per_mtok"):
            value = getattr(pricing[model], field, 0) or 0
            if value > MAX_USD_PER_MTOK:  # a cost beyond it overflows to inf (found by fuzzing)
                errors.append((child_path(child_path("$.pricing", model), field),
                               f"must be at most {MAX_USD_PER_MTOK}, got {value}"))
    if bundle is None or errors:
        return None
    bundle.policies = policies  # type: ignore[assignment]  # no None left: errors is empty
    bundle.kill_switches = switches  # type: ignore[assignment]
    bundle.pricing = pricing  # type: ignore[assignment]
    return bundle


def _policy(raw: Any, path: str, errors: Errors) -> Policy | None:
    shell, raw_rules, raw_fallback = raw, None, None
    if isinstance(raw, dict) and isinstance(raw.get("spec"), dict):
        spec = dict(raw["spec"])
        raw_rules = _detach(spec, "rules", list, [])
        raw_fallback = _detach(spec, "fallback_limit", dict, None)
        shell = {**raw, "spec": spec}
    policy = _convert(shell, Policy, path, errors)
    rules = [_rule(r, f"{path}.spec.rules[{j}]", errors) for j, r in enumerate(raw_rules or [])]
    fallback = None
    if raw_fallback is not None:
        fallback = _rule(raw_fallback, f"{path}.spec.fallback_limit", errors, FallbackRule)
    if policy is None or None in rules or (raw_fallback is not None and fallback is None):
        return None
    policy.spec.rules = rules  # type: ignore[assignment]  # checked: no None
    if raw_fallback is not None:
        policy.spec.fallback_limit = fallback
    return policy


def _rule(raw: Any, path: str, errors: Errors, typ: type[Rule] = Rule) -> Rule | None:
    """Convert a rule, then its algorithm_config into the Struct its `algorithm` names."""
    rule = _convert(raw, typ, path, errors)
    if rule is None:
        return None
    raw_config = rule.algorithm_config
    if "algorithm" in raw_config:
        # fairvisor/edge bundles may repeat the rule's algorithm inside its config.
        raw_config = dict(raw_config)
        if raw_config.pop("algorithm") != rule.algorithm:
            errors.append((f"{path}.algorithm_config.algorithm",
                           f"must equal the rule's algorithm ({json.dumps(rule.algorithm)}) when given"))
            return None
    config = _convert(raw_config, CONFIG_TYPES[rule.algorithm],
                      f"{path}.algorithm_config", errors)
    if config is None:
        return None
    rule.algorithm_config = config  # type: ignore[assignment]
    return rule


def _detach(obj: dict[str, Any], key: str, kind: type, placeholder: Any) -> Any:
    """Swap a container out of `obj` for a placeholder (converted separately by the caller).

    Only a value of the expected kind is detached; anything else stays for msgspec to report.
    """
    value = obj.get(key)
    if not isinstance(value, kind):
        return None
    obj[key] = placeholder
    return value


def _convert(obj: Any, typ: type[T], path: str, errors: Errors) -> T | None:
    try:
        return msgspec.convert(obj, typ)
    except msgspec.ValidationError as e:
        errors.append(locate(e, obj, typ, path))
    except RecursionError:
        errors.append((path, "nested too deeply"))
    return None
