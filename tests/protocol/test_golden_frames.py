"""The Python encoder still produces the golden frames the Lua shim is tested against."""

import json

import pytest

from pyengine.protocol.framing import HEADER_BYTES, decode_request, decode_response, encode_frame

from .golden_cases import CASES, GOLDEN_PATH, fields

GOLDEN = {f["name"]: f for f in json.loads(GOLDEN_PATH.read_text())["frames"]}


def test_golden_file_lists_every_case():
    assert sorted(GOLDEN) == sorted(name for name, _, _ in CASES)


@pytest.mark.parametrize(("name", "direction", "msg"), CASES, ids=[c[0] for c in CASES])
def test_encoder_matches_golden_bytes(name, direction, msg):
    frame = GOLDEN[name]
    assert encode_frame(msg).hex() == frame["hex"]
    assert fields(msg) == frame["fields"]


@pytest.mark.parametrize(("name", "direction", "msg"), CASES, ids=[c[0] for c in CASES])
def test_golden_bytes_decode_to_the_message(name, direction, msg):
    raw = bytes.fromhex(GOLDEN[name]["hex"])
    assert int.from_bytes(raw[:HEADER_BYTES], "big") == len(raw) - HEADER_BYTES
    decode = decode_request if direction == "request" else decode_response
    assert decode(raw[HEADER_BYTES:]) == msg
