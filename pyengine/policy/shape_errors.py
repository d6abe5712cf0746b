"""Our wording for a value that does not fit its msgspec type: its JSON path and what was expected.

msgspec says *where* a conversion failed (the `$...` path at the end of its message) but its
English changes between releases, so only that path is taken from it. What was expected is
described from the type itself (msgspec.inspect), what was found from the document, e.g.
`$.bundle_version: must be an integer > 0 (got "1")`. `locate` re-checks from the node msgspec
named downwards and reports the first problem it sees; a Struct that fits its fields but was
refused by its own `__post_init__` keeps that ValueError's text, which is ours (schema.py).
"""

import json
import re
from datetime import datetime, timezone
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec
import msgspec.inspect as mi

# The one piece of msgspec's text relied on: its location suffix, " - at `$...`" (for a bad
# dict key, " - at `key` in `$...`"). Everything before it is shown only for a __post_init__.
_AT_RE = re.compile(r" - at `(?:key` in `)?(\$[^`]*)`$")
_STEP_RE = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SHOWN_CHARS = 60  # a long bad value is cut in the message, never echoed whole

Problem = tuple[str, str]  # (JSON path, message)


def locate(error: msgspec.ValidationError, value: Any, typ: type, base: str) -> Problem:
    """Explain why `msgspec.convert(value, typ)` raised `error`; paths are prefixed by `base`."""
    text = str(error)
    m = _AT_RE.search(text)
    path, node, info = base, value, _info(typ)
    for key, index in _steps(m.group(1)) if m else ():
        moved = _child(node, info, key, index)
        if moved is None:
            break  # e.g. a dict value `[...]`: the walk below finds which entry is wrong
        node, info = moved
        path = child_path(path, key) if key is not None else f"{path}[{index}]"
    found = problem(node, info, path)
    if found:
        return found
    if isinstance(_unwrap(node, info), mi.StructType):
        # Fields fit, so the Struct's own __post_init__ refused it: that text is ours.
        reason = text[:m.start()] if m else text
        return path, reason[:1].lower() + reason[1:]
    return path, f"must be {describe(info)} (got {shown(node)})"


def problem(value: Any, info: mi.Type, path: str) -> Problem | None:
    """The first place under `value` that does not fit `info`, or None when all of it does."""
    info = _unwrap(value, info)
    if value is None and _allows_none(info):
        return None
    if not _fits_kind(value, info):
        return path, f"must be {describe(info)} (got {shown(value)})"
    if isinstance(info, mi.StructType):
        return _struct_problem(value, info, path)
    if isinstance(info, mi.ListType):
        if not _length_ok(len(value), info):
            return path, f"must be {describe(info)} (got {shown(value)})"
        for i, item in enumerate(value):
            found = problem(item, info.item_type, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(info, mi.DictType):
        for key, item in value.items():  # keys are JSON object keys, so strings already
            found = problem(item, info.value_type, child_path(path, key))
            if found:
                return found
        return None
    reason = _scalar_problem(value, info)
    return (path, reason) if reason else None


def describe(info: mi.Type) -> str:
    """What a type accepts, in the words the docs use ("an integer > 0", "a non-empty array")."""
    if isinstance(info, mi.UnionType):
        return " or ".join(describe(t) for t in info.types if not isinstance(t, mi.NoneType))
    if isinstance(info, mi.IntType):
        return "an integer" + _bounds(info)
    if isinstance(info, mi.FloatType):
        return "a number" + _bounds(info)
    if isinstance(info, mi.StrType):
        return "a non-empty string" if info.min_length == 1 else "a string"
    if isinstance(info, mi.ListType):
        return "a non-empty array" if info.min_length == 1 else "an array"
    if isinstance(info, (mi.DictType, mi.StructType)):
        return "an object"
    if isinstance(info, mi.LiteralType):
        quoted = [json.dumps(v) for v in info.values]
        return f"one of {', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
    if isinstance(info, mi.BoolType):
        return "true or false"
    if isinstance(info, mi.DateTimeType):
        return "an RFC 3339 timestamp" + (" with a timezone offset" if info.tz else "")
    return "a valid value"


def shown(value: Any) -> str:
    """A bad value as JSON, cut at MAX_SHOWN_CHARS; a non-empty container by its kind only."""
    if isinstance(value, list):
        return "an array" if value else "[]"
    if isinstance(value, dict):
        return "an object" if value else "{}"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


def child_path(path: str, key: str) -> str:
    """`$.a` + `b` -> `$.a.b`; a key that is not an identifier is quoted: `$.a["x:y"]`."""
    if _IDENT_RE.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


# --- helpers -------------------------------------------------------------------------------

def _steps(location: str) -> list[tuple[str | None, str | None]]:
    """`$.a[0].b` -> [("a", None), (None, "0"), ("b", None)], stopping at a dict value `[...]`."""
    steps, pos = [], 1
    while m := _STEP_RE.match(location, pos):
        steps.append((m.group(1), m.group(2)))
        pos = m.end()
    return steps


@cache
def _info(typ: type) -> mi.Type:
    return mi.type_info(typ)


@cache
def _declared_literals(cls: type) -> dict[str, tuple]:
    """Literal values per field in the order schema.py lists them (msgspec.inspect sorts them)."""
    out = {}
    for name, hint in get_type_hints(cls).items():
        members = get_args(hint) if get_origin(hint) is Union else (hint,)
        for member in members:
            if get_origin(member) is Literal:
                out[name] = get_args(member)
    return out


def _field(info: mi.StructType, key: str) -> mi.Type | None:
    for f in info.fields:
        if f.encode_name == key:
            order = _declared_literals(info.cls).get(f.name)
            if not order:
                return f.type
            literal = mi.LiteralType(values=order)
            return mi.UnionType(types=(literal, mi.NoneType())) if _allows_none(f.type) else literal
    return None


def _child(node: Any, info: mi.Type, key: str | None,
           index: str | None) -> tuple[Any, mi.Type] | None:
    """One step down msgspec's path, in the document and in the type together."""
    info = _unwrap(node, info)
    if key is not None and isinstance(info, mi.StructType) and isinstance(node, dict) \
            and key in node:
        field = _field(info, key)
        return (node[key], field) if field is not None else None
    if index is not None and isinstance(info, mi.ListType) and isinstance(node, list):
        i = int(index)
        return (node[i], info.item_type) if i < len(node) else None
    return None


def _struct_problem(value: dict, info: mi.StructType, path: str) -> Problem | None:
    if info.forbid_unknown_fields:
        for key in value:
            if _field(info, key) is None:
                return child_path(path, key), "unknown field"
    for f in info.fields:
        if f.required and f.encode_name not in value:
            return child_path(path, f.encode_name), "required field missing"
    for key, item in value.items():
        found = problem(item, _field(info, key), child_path(path, key))  # type: ignore[arg-type]
        if found:
            return found
    return None


def _unwrap(value: Any, info: mi.Type) -> mi.Type:
    """For an optional field (X | None), the X; for other unions, the member `value` fits."""
    if not isinstance(info, mi.UnionType):
        return info
    members = [t for t in info.types if not isinstance(t, mi.NoneType)]
    if len(members) == 1:
        return mi.UnionType(types=(members[0], mi.NoneType())) if value is None else members[0]
    return next((t for t in members if _fits_kind(value, t)), info)


def _allows_none(info: mi.Type) -> bool:
    return isinstance(info, (mi.NoneType, mi.AnyType)) or (
        isinstance(info, mi.UnionType) and any(isinstance(t, mi.NoneType) for t in info.types))


def _fits_kind(value: Any, info: mi.Type) -> bool:
    """The JSON kind matches (numbers, strings, ...); bounds and formats are checked after."""
    if isinstance(info, mi.UnionType):
        return any(_fits_kind(value, t) for t in info.types)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    kinds: dict[type, bool] = {
        mi.IntType: isinstance(value, int) and not isinstance(value, bool),
        mi.FloatType: is_number,
        mi.StrType: isinstance(value, str),
        mi.BoolType: isinstance(value, bool),
        mi.ListType: isinstance(value, list),
        mi.DictType: isinstance(value, dict),
        mi.StructType: isinstance(value, dict),
        mi.DateTimeType: isinstance(value, str),
        mi.LiteralType: True,
        mi.NoneType: value is None,
    }
    return kinds.get(type(info), True)


def _scalar_problem(value: Any, info: mi.Type) -> str | None:
    if isinstance(info, (mi.IntType, mi.FloatType)) and not _in_bounds(value, info):
        return f"must be {describe(info)} (got {shown(value)})"
    if isinstance(info, mi.StrType) and not _length_ok(len(value), info):
        return f"must be {describe(info)} (got {shown(value)})"
    if isinstance(info, mi.LiteralType) and value not in info.values:
        return f"must be {describe(info)} (got {shown(value)})"
    if isinstance(info, mi.DateTimeType):
        return _timestamp_problem(value, info)
    return None


def _timestamp_problem(value: str, info: mi.DateTimeType) -> str | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return f"must be {describe(info)} (got {shown(value)})"
    if info.tz and moment.tzinfo is None:
        return f"must be {describe(info)} (got {shown(value)})"
    try:
        moment.astimezone(timezone.utc)
    except OverflowError:
        return f"must be between years 1 and 9999 once converted to UTC (got {shown(value)})"
    return None


def _in_bounds(value: float, info: mi.IntType | mi.FloatType) -> bool:
    # NaN compares false to every bound, so it is out of bounds.
    return all((
        info.gt is None or value > info.gt, info.ge is None or value >= info.ge,
        info.lt is None or value < info.lt, info.le is None or value <= info.le,
    ))


def _length_ok(n: int, info: mi.StrType | mi.ListType) -> bool:
    return (info.min_length is None or n >= info.min_length) and (
        info.max_length is None or n <= info.max_length)


def _bounds(info: mi.IntType | mi.FloatType) -> str:
    if info.ge is not None and info.le is not None and info.gt is None and info.lt is None:
        return f" from {_number(info.ge)} to {_number(info.le)}"
    pairs = ((">", info.gt), (">=", info.ge), ("<", info.lt), ("<=", info.le))
    parts = [f"{op} {_number(bound)}" for op, bound in pairs if bound is not None]
    return (" " + " and ".join(parts)) if parts else ""


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else f"{bound:g}"
