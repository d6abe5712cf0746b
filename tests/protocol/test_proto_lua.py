"""lua-shim/fairvisor/proto.lua is what gen_lua writes from messages.py, and it encodes and reads the golden frames."""

import shutil
import subprocess
import typing

import msgspec
import pytest

from pyengine.protocol import gen_lua, messages
from pyengine.protocol.framing import encode_frame
from pyengine.protocol.messages import DebugSession
from tests.integration.test_lua_msgpack import ROOT, lua_literal

from .golden_cases import CASES

CHECK = ROOT / "tests" / "integration" / "lua" / "check_proto.lua"
ALL_MESSAGES = {c.__name__ for c in typing.get_args(messages.Request) + typing.get_args(messages.Response)}


def test_committed_proto_lua_is_what_the_generator_writes():
    assert gen_lua.PROTO_LUA.read_text() == gen_lua.render(), "run: python -m pyengine.protocol.gen_lua"


def test_check_mode_fails_on_a_stale_file_and_passes_on_a_current_one(tmp_path, capsys):
    out = tmp_path / "proto.lua"
    out.write_text(gen_lua.render().replace("tag = 2", "tag = 3", 1))
    assert gen_lua.main(["--check", "--out", str(out)]) == 1
    assert gen_lua.main(["--out", str(out)]) == 0
    assert gen_lua.main(["--check", "--out", str(out)]) == 0
    assert out.read_text() == gen_lua.render()


def test_every_field_index_follows_messages_py_order():
    text = gen_lua.render()
    for name in ALL_MESSAGES:
        cls = getattr(messages, name)
        parts = [f"tag = {cls.__struct_config__.tag}", f"n = {len(cls.__struct_fields__) + 1}"]
        parts += [f"{f} = {i + 2}" for i, f in enumerate(cls.__struct_fields__)]
        line = " ".join(text.split(f"_M.{name} = {{ ", 1)[1].split(" }", 1)[0].split())
        assert line == ", ".join(parts)


def test_lua_string_keeps_every_byte():
    assert gen_lua.lua_string("\0T\0") == '"\\000T\\000"'  # not "\0T": a digit after \0 would be read with it
    assert gen_lua.lua_string('a"\\\n\xff') == '"a\\"\\\\\\010\\195\\191"'


def _request_case(name: str, msg, args: list) -> str:
    return (f"{{name={lua_literal(name)}, direction=\"request\", encoder={lua_literal(gen_lua.snake(type(msg).__name__))}, "
            f"args={lua_literal(args)}, frame={lua_literal(encode_frame(msg))}}}")


def _response_case(name: str, msg) -> str:
    names = list(msg.__struct_fields__)
    values = [getattr(msg, f) for f in names]
    return (f"{{name={lua_literal(name)}, direction=\"response\", message={lua_literal(type(msg).__name__)}, "
            f"names={{{', '.join(lua_literal(n) for n in names)}}}, values={lua_literal(values)}, "
            f"frame={lua_literal(encode_frame(msg))}}}")


def lua_cases() -> tuple[list[str], set[str]]:
    """Every golden frame, each request again with only its required fields (the encoder fills the
    defaults), and DebugSession (not in the golden file)."""
    msgs = [(name, msg) for name, _, msg in CASES]
    msgs += [("debug_session", DebugSession(kind=0, method=b"POST", secret=b"s\xff")),
             ("debug_logout_no_secret", DebugSession(kind=1, method=b"GET"))]
    cases, covered = [], set()
    for name, msg in msgs:
        cls = type(msg)
        covered.add(cls.__name__)
        if typing.get_args(messages.Request).count(cls):
            info = msgspec.inspect.type_info(cls).fields
            cases.append(_request_case(name, msg, [getattr(msg, f.name) for f in info]))
            required = {f.name: getattr(msg, f.name) for f in info if f.required}
            cases.append(_request_case(name + "_required_only", cls(**required), list(required.values())))
        else:
            cases.append(_response_case(name, msg))
    return cases, covered


@pytest.mark.integration
def test_lua_proto_encodes_and_reads_the_golden_frames(tmp_path):
    luajit = shutil.which("luajit")
    assert luajit, "luajit is required (apt-get install luajit2)"
    cases, covered = lua_cases()
    assert covered == ALL_MESSAGES
    cases_file = tmp_path / "cases.lua"
    cases_file.write_text("return {\n" + ",\n".join(cases) + "\n}\n")
    env = {"LUA_PATH": f"{ROOT / 'lua-shim'}/?.lua;/usr/share/lua/5.1/?.lua;;", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([luajit, str(CHECK), str(cases_file)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"ok {len(cases)}"
