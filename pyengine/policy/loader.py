"""Load a policy bundle: JSON syntax, then structure (msgspec), then semantics; or PolicyError.

Each pass runs only when the one before found nothing, so a later pass never reports noise
caused by an earlier problem. The structural pass converts every policy, rule, algorithm
config and kill switch on its own, so one bad rule does not hide another's error (msgspec
itself stops at the first error within a single conversion). Every error is a string
`<source>: <json path>: <message>`, e.g.
`policy.json: $.policies[0].spec.rules[1].algorithm_config.burst: must be >= tokens_per_second (5)`.
"""

import ast
import hashlib
import json
import os
import re
import sys
from typing import Any, TypeVar, get_args

import msgspec

from pyengine.errors import PolicyError
from pyengine.policy.checks import check_bundle
from pyengine.policy.schema import (
    CONFIG_TYPES,
    Algorithm,
    Bundle,
    Estimator,
    FallbackRule,
    KillSwitch,
    Mode,
    ModelPrice,
    Period,
    Policy,
    Rule,
    StageAction,
)

T = TypeVar("T")
Errors = list[tuple[str, str]]

STDIN_SOURCE = "<stdin>"

# msgspec appends the location as " - at `$.a.b`" (or " - at `key` in `$.a`" for dict keys).
_AT_RE = re.compile(r"^(?P<msg>.*) - at `(?P<key>key` in `)?(?P<path>\$[^`]*)`$", re.DOTALL)
_FIELD_RE = re.compile(r"^Object (?P<what>contains unknown|missing required) field `(?P<f>.*)`$",
                       re.DOTALL)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BYTE_RE = re.compile(r"\(byte (\d+)\)$")
_ENUM_RE = re.compile(r"^Invalid enum value (?P<got>.*)$", re.DOTALL)
# msgspec does not say which values an enum allows; every Literal field name is listed here
# (loop_detection.action takes the same three values as a staged action).
_ENUM_CHOICES: dict[str, tuple[str, ...]] = {
    "algorithm": get_args(Algorithm),
    "mode": get_args(Mode),
    "period": get_args(Period),
    "action": get_args(StageAction),
    "estimator": get_args(Estimator),
}


MAX_USD_PER_MTOK = 1_000_000  # USD per million tokens


def load_bundle_bytes(data: bytes, source: str, now_s: float) -> Bundle:
    """Parse and validate a bundle; `source` names it in errors, `now_s` is for expiry."""
    errors: Errors = []
    doc = _parse_json(data, errors)
    bundle = None if errors else _structure(doc, errors)
    if bundle is not None and not errors:
        errors = check_bundle(bundle, now_s)
    if errors or bundle is None:
        errors = errors or [("$", "not a valid bundle")]  # unreachable: a None always has a cause
        raise PolicyError([f"{source}: {path}: {message}" for path, message in errors])
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
        raise PolicyError([f"{source}: $: cannot read file: {e.strerror or e}"]) from e
    return load_bundle_bytes(data, source, now_s)


def policy_hash(data: bytes) -> str:
    """First 16 hex digits of the SHA-256 of the raw bundle bytes (shown by /readyz, metrics)."""
    return hashlib.sha256(data).hexdigest()[:16]


def count_rules(bundle: Bundle) -> int:
    """Rules plus fallback limits, over all policies (the `validate` summary count)."""
    return sum(len(p.spec.rules) + (p.spec.fallback_limit is not None) for p in bundle.policies)


# --- pass 1: JSON syntax -------------------------------------------------------------------

def _parse_json(data: bytes, errors: Errors) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.ValidationError as e:  # e.g. "Number out of range" for 1e400
        errors.append(("$", f"invalid JSON: {_strip_location(str(e))}"))
    except msgspec.DecodeError as e:
        errors.append(("$", f"invalid JSON: {_with_line_column(str(e), data)}"))
    except UnicodeDecodeError:  # raised by msgspec for bad bytes inside a string
        errors.append(("$", "invalid JSON: not valid UTF-8"))
    except RecursionError:
        errors.append(("$", "invalid JSON: nested too deeply"))
    return None


def _with_line_column(message: str, data: bytes) -> str:
    """Add line and column to msgspec's "(byte N)" so an editor can jump to the problem."""
    message = _lower_first(message.removeprefix("JSON is "))
    m = _BYTE_RE.search(message)
    if not m:
        return message
    offset = int(m.group(1))
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"{message[:m.start()]}(line {line}, column {column})"


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
        pricing[model] = _convert(price, ModelPrice, f"$.pricing{_index(model)}", errors)
        for field in ("input_usd_per_mtok", "output_usd_per_mtok"):
            value = getattr(pricing[model], field, 0)
            if value > MAX_USD_PER_MTOK:  # a cost beyond it overflows to inf (found by fuzzing)
                errors.append((f"$.pricing{_index(model)}.{field}",
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
        errors.append(_locate(str(e), path))
    except RecursionError:
        errors.append((path, "nested too deeply"))
    return None


def _locate(message: str, base: str) -> tuple[str, str]:
    """Turn msgspec's "<msg> - at `$.x`" into (base + ".x", "<msg>"), path first.

    Unknown and missing fields point at the field itself: `$.policies[0].ruls: unknown field`.
    """
    path = base
    m = _AT_RE.match(message)
    if m:
        message = m.group("msg")
        path = base + m.group("path")[1:]
        if m.group("key"):
            message = f"invalid key: {_lower_first(message)}"
    field = _FIELD_RE.match(message)
    if field:
        name = field.group("f")
        path += f".{name}" if _IDENT_RE.match(name) else _index(name)
        unknown = field.group("what") == "contains unknown"
        return path, "unknown field" if unknown else "required field missing"
    enum = _ENUM_RE.match(message)
    choices = _ENUM_CHOICES.get(path.rsplit(".", 1)[-1])
    if enum and choices:
        return path, f"must be {_one_of(choices)} (got {_requote(enum.group('got'))})"
    return path, _lower_first(message)


def _one_of(choices: tuple[str, ...]) -> str:
    quoted = [json.dumps(c) for c in choices]
    return f"one of {', '.join(quoted[:-1])} or {quoted[-1]}"


def _requote(python_repr: str) -> str:
    """msgspec quotes the bad value Python-style ('x'); messages quote JSON-style ("x")."""
    try:
        return json.dumps(ast.literal_eval(python_repr), ensure_ascii=False)
    except (ValueError, SyntaxError):
        return python_repr


def _strip_location(message: str) -> str:
    m = _AT_RE.match(message)
    return _lower_first(m.group("msg") if m else message)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _index(key: str) -> str:
    return f"[{json.dumps(key, ensure_ascii=False)}]"
