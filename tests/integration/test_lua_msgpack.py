"""The Lua msgpack module (run under luajit) encodes and decodes the golden frames byte for byte."""

import json
import math
import pathlib
import shutil
import struct
import subprocess

import msgspec
import pytest

from pyengine.protocol.framing import encode_frame
from pyengine.protocol.messages import Decide, Reply
from tests.protocol.golden_cases import GOLDEN_PATH, fields

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECK = pathlib.Path(__file__).with_name("lua") / "check_msgpack.lua"


def lua_literal(v, wrap_str: bool = False) -> str:
    """A JSON-like field value as a Lua expression; arrays carry their length in `n`.

    wrap_str: a str becomes {str=...}, as the shim marks msgpack str (fairvisor.msgpack.str);
    for frames the shim encodes. Decoded frames give plain Lua strings for str and bin alike.
    """
    if isinstance(v, str) and wrap_str:
        return "{str=" + lua_literal(v) + "}"
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "0/0"
        if math.isinf(v):
            return "math.huge" if v > 0 else "-math.huge"
        return repr(v)
    if isinstance(v, str):
        v = {"bin_hex": v.encode().hex()}
    if isinstance(v, bytes):
        v = {"bin_hex": v.hex()}
    if isinstance(v, dict) and "bin_hex" in v:
        return '"' + "".join(f"\\{b}" for b in bytes.fromhex(v["bin_hex"])) + '"'
    if isinstance(v, dict):
        return "{map={" + ", ".join(f"[{lua_literal(k)}]={lua_literal(x)}" for k, x in v.items()) + "}}"
    return "{n=" + str(len(v)) + "".join(", " + lua_literal(x, wrap_str) for x in v) + "}"


def lua_case(name, direction, fields_, frame: bytes) -> str:
    return (f"{{name={lua_literal(name)}, direction={lua_literal(direction)}, "
            f"fields={lua_literal(fields_, direction == 'request')}, frame={lua_literal(frame)}}}")


def frame_of(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def extra_cases() -> list[str]:
    """Sizes and types the golden file does not hold, encoded by msgspec at test time."""
    big_body = Decide(generation=2**32 + 5, surface=1, method=b"POST", uri=b"/x", host=b"h", remote_addr=b"::1",
                      headers=[None] * 20, body=bytes(range(256)) * 300, request_id=b"")
    big_reply = Reply(status=200, content_type="text/plain", body="é" * 40_000)
    # A newer engine may append fields of any type: floats, maps, nested arrays, negative ints.
    newer = msgspec.msgpack.encode([2, 0, ["A", "b"], "", 0, 1.5, -0.25, {"k": [1, None, True]}, -7, -300,
                                    -70_000, -(2**40), 2**40, float("inf"), None])
    float32 = b"\x92\xca" + struct.pack(">f", -2.5) + b"\xca" + struct.pack(">f", 1e-40)  # incl. a subnormal
    return [
        lua_case("decide_bin32_uint64", "request", fields(big_body), encode_frame(big_body)),
        lua_case("reply_str32", "response", fields(big_reply), encode_frame(big_reply)),
        lua_case("verdict_with_future_fields", "response", msgspec.msgpack.decode(newer), frame_of(newer)),
        lua_case("float32", "response", [-2.5, struct.unpack(">f", struct.pack(">f", 1e-40))[0]], frame_of(float32)),
    ]


def test_lua_msgpack_matches_python_frames(tmp_path):
    luajit = shutil.which("luajit")
    assert luajit, "luajit is required (apt-get install luajit2)"
    golden = json.loads(GOLDEN_PATH.read_text())["frames"]
    cases = [lua_case(f["name"], f["direction"], f["fields"], bytes.fromhex(f["hex"])) for f in golden]
    cases += extra_cases()
    cases_file = tmp_path / "cases.lua"
    cases_file.write_text("return {\n" + ",\n".join(cases) + "\n}\n")
    env = {"LUA_PATH": f"{ROOT / 'lua-shim'}/?.lua;/usr/share/lua/5.1/?.lua;;", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([luajit, str(CHECK), str(cases_file)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"ok {len(cases) + 5}"
