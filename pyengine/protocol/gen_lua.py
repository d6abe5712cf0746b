"""Generates lua-shim/fairvisor/proto.lua, the shim's copy of messages.py: tags, field positions, encoders.

Why generated: the shim reads a Verdict as an array and writes every request as one, so the
position of each field is knowledge shared by two languages. messages.py owns it; this module
writes it out for Lua, and tests/protocol/test_proto_lua.py fails when the committed file is not
what this module writes today.

    python -m pyengine.protocol.gen_lua            # rewrites lua-shim/fairvisor/proto.lua
    python -m pyengine.protocol.gen_lua --check    # exit 1 when it is out of date
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import typing

import msgspec

from . import messages

PROTO_LUA = pathlib.Path(__file__).resolve().parents[2] / "lua-shim" / "fairvisor" / "proto.lua"

_LUA_KEYWORDS = frozenset(
    "and break do else elseif end false for function goto if in local nil not or repeat return then true until "
    "while".split())
_RESERVED_KEYS = frozenset({"tag", "n"})  # keys of each message's table besides its fields
_CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]*$")


def lua_string(s: str | bytes) -> str:
    """A Lua string literal holding exactly these bytes (non-printable bytes as 3-digit escapes)."""
    raw = s.encode() if isinstance(s, str) else s
    out = []
    for b in raw:
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'


def lua_value(v) -> str:
    """A default value of a request field as a Lua expression."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (str, bytes)):
        return lua_string(v)
    raise TypeError(f"gen_lua: no Lua literal for default {v!r}")


def snake(name: str) -> str:
    """DebugSession -> debug_session: the name of a request's encoder."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _fields(cls) -> list:
    fields = list(msgspec.inspect.type_info(cls).fields)
    for f in fields:
        if not f.name.isidentifier() or f.name in _LUA_KEYWORDS or f.name in _RESERVED_KEYS:
            raise ValueError(f"gen_lua: field {cls.__name__}.{f.name} cannot be a Lua table key here")
    return fields


def _is_str(t) -> bool:
    """Whether the field goes out as msgpack str (the shim sends Lua strings as bin by default)."""
    if isinstance(t, msgspec.inspect.StrType):
        return True
    if isinstance(t, msgspec.inspect.UnionType) and any(isinstance(x, msgspec.inspect.StrType) for x in t.types):
        raise ValueError("gen_lua: a request field that may be str or something else is not supported")
    return False


def _wrap(start: str, parts: list[str], end: str, indent: str = "    ") -> str:
    """start + parts joined by ", " + end, broken into lines of at most 110 characters."""
    lines, line = [], start
    for i, p in enumerate(parts):
        piece = p + (", " if i < len(parts) - 1 else "")
        if len(line) + len(piece.rstrip()) > 110 and line.strip():
            lines.append(line.rstrip())
            line = indent * 2 if start.startswith(indent) else indent
        line += piece
    lines.append(line + end)
    return "\n".join(lines)


def _table(cls) -> str:
    """`_M.Verdict = { tag = 2, n = 14, status = 2, ... }`: the tag, the array length, each field's index."""
    fields = _fields(cls)
    parts = [f"tag = {cls.__struct_config__.tag}", f"n = {len(fields) + 1}"]
    parts += [f"{f.name} = {i + 2}" for i, f in enumerate(fields)]
    return _wrap(f"_M.{cls.__name__} = {{ ", parts, " }")


def _encoder(cls) -> str:
    """A function taking the fields in order and returning the message's msgpack body."""
    fields = _fields(cls)
    names = [f.name for f in fields]
    name = snake(cls.__name__)
    head = _wrap(f"function _M.{name}(", names, ")")
    body = []
    for f in fields:
        if not f.required and f.default is not None and f.default is not msgspec.NODEFAULT:
            body.append(f"    if {f.name} == nil then {f.name} = {lua_value(f.default)} end")
    items = [str(cls.__struct_config__.tag)] + [f"mp_str({f.name})" if _is_str(f.type) else f.name for f in fields]
    body.append(_wrap("    return encode({ ", items, f" }}, {len(fields) + 1})"))
    return "\n".join([head, *body, "end"])


def _constants() -> list[str]:
    out = []
    for name, value in vars(messages).items():
        if _CONSTANT.match(name) and isinstance(value, (int, str)) and not isinstance(value, bool):
            out.append(f"_M.{name} = {lua_value(value)}")
    return out


def render() -> str:
    """The whole text of proto.lua."""
    requests = typing.get_args(messages.Request)
    responses = typing.get_args(messages.Response)
    out = [
        "-- fairvisor.proto: the engine protocol's tags, field positions and request encoders.",
        "--",
        "-- GENERATED from pyengine/protocol/messages.py by `python -m pyengine.protocol.gen_lua`; do not edit.",
        "-- tests/protocol/test_proto_lua.py fails when this file is not what the generator writes.",
        "--",
        "-- A message is a msgpack array: [1] is its tag, then its fields in messages.py order, so",
        "-- _M.Verdict.status is the index of Verdict.status in a decoded Verdict (v[_M.Verdict.status]).",
        "-- Each request has an encoder taking its fields in order; it returns the frame body (msgpack",
        "-- bytes), fills the defaults of omitted fields, and sends `str` fields as msgpack str.",
        "",
        'local mp = require "fairvisor.msgpack"',
        "",
        "local encode, mp_str = mp.encode, mp.str",
        "",
        "local _M = {}",
        "",
        "_M.TAG = 1 -- every message's tag is its first item",
        *_constants(),
        "",
        "-- ---- engine -> shim: read by index ------------------------------------------------------",
        "",
    ]
    for cls in responses:
        out.append(_table(cls))
    out += ["", "-- ---- shim -> engine: indices, and an encoder per message ---------------------------------", ""]
    for cls in requests:
        out.append(_table(cls))
        out.append(_encoder(cls))
        out.append("")
    out.append("return _M")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    ap.add_argument("--out", type=pathlib.Path, default=PROTO_LUA)
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: python -m pyengine.protocol.gen_lua", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
