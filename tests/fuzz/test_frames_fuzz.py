"""Fuzzing the engine socket: frames split anywhere, random and mutated bodies, huge declared lengths."""

import json
import pathlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyengine.errors import ProtocolError
from pyengine.protocol.connection import ConnectionProtocol
from pyengine.protocol.framing import FrameBuffer, decode_request, decode_response, encode_frame
from pyengine.protocol.messages import (Admin, Decide, ErrorReply, Health, Hello, HelloReply, Metrics, Reply, Settle,
                                        Usage, Verdict)

from ..protocol.test_server import FakeTransport
from .budget import fuzz
from .engines import SURFACES, keyed_engine

MAX_FRAME = 4096
ENGINE = keyed_engine()
GOLDEN = [bytes.fromhex(f["hex"])[4:] for f in json.loads(
    (pathlib.Path(__file__).parent.parent / "protocol" / "golden_frames.json").read_text())["frames"]
    if f["direction"] == "request"]
RESPONSES = (ErrorReply, HelloReply, Verdict, Reply)


def assert_no_engine_error(reply) -> None:
    """A hostile frame is refused or decided, never an exception in the engine (pyengine.engine_errors)."""
    assert not (isinstance(reply, ErrorReply) and reply.code == "engine_error"), reply
    assert sum(ENGINE.metrics.engine_errors.values.values()) == 0, reply


def replies(transport) -> list:
    """Every frame the engine wrote, decoded; the engine never writes half a frame."""
    buf = FrameBuffer()
    out = [decode_response(b) for b in buf.feed(bytes(transport.out))]
    assert buf.pending_bytes == 0
    return out


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@fuzz(300)
@given(st.lists(st.binary(max_size=300), max_size=6), st.lists(st.integers(0, 10**6), max_size=12))
def test_frames_split_anywhere_come_out_whole_and_in_order(bodies, points):
    stream = b"".join(frame(b) for b in bodies)
    buf = FrameBuffer(MAX_FRAME)
    got = []
    for chunk in cut(stream, points):
        got += [bytes(b) for b in buf.feed(chunk)]
    assert got == bodies and buf.pending_bytes == 0


@fuzz(300)
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_random_stream_yields_frames_or_frame_too_large(chunks):
    buf = FrameBuffer(MAX_FRAME)
    for chunk in chunks:
        try:
            bodies = buf.feed(chunk)
        except ProtocolError as exc:
            assert exc.code == "frame_too_large"
            return
        assert all(len(b) <= MAX_FRAME for b in bodies)
        # Bounded: at most one partial frame is held (header + at most max_frame_bytes).
        assert buf.pending_bytes < 4 + MAX_FRAME


@fuzz(300)
@given(st.integers(MAX_FRAME + 1, 2**32 - 1), st.binary(max_size=16))
def test_huge_declared_length_is_refused_before_any_byte_is_buffered(size, rest):
    proto = ConnectionProtocol(ENGINE.handle, set(), MAX_FRAME)
    t = FakeTransport()
    proto.connection_made(t)
    proto.data_received(size.to_bytes(4, "big") + rest)
    assert t.closed
    (reply,) = replies(t)
    assert isinstance(reply, ErrorReply) and reply.code == "frame_too_large"


@fuzz(500)
@given(st.binary(max_size=400))
def test_any_body_decodes_to_a_request_or_a_protocol_error(body):
    try:
        msg = decode_request(body)
    except ProtocolError as exc:
        assert exc.code in ("bad_frame", "bad_message")
        return
    assert isinstance(ENGINE.handle(msg), RESPONSES)


@fuzz(500)
@given(st.sampled_from(GOLDEN), st.data())
def test_mutated_golden_bodies_are_answered_never_internal(body, data):
    raw = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(raw)))
        if op == "flip" and pos < len(raw):
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 8))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    proto = ConnectionProtocol(ENGINE.handle, set(), MAX_FRAME)
    t = FakeTransport()
    proto.connection_made(t)
    proto.data_received(frame(bytes(raw)))
    (reply,) = replies(t)
    assert not t.closed
    assert_no_engine_error(reply)


@fuzz(300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes_on_a_connection_get_only_well_formed_replies(chunks):
    proto = ConnectionProtocol(ENGINE.handle, set(), MAX_FRAME)
    t = FakeTransport()
    proto.connection_made(t)
    for chunk in chunks:
        if t.closed:
            break
        proto.data_received(chunk)
    for reply in replies(t):
        assert_no_engine_error(reply)


ints = st.integers(-(2**63), 2**64 - 1)
maybe_bytes = st.one_of(st.none(), st.binary(max_size=64))
messages = st.one_of(
    st.builds(Hello, protocol_version=ints, engine_unavailable_delta=ints),
    st.builds(Decide, generation=st.one_of(st.just(None), ints), surface=st.one_of(st.sampled_from(SURFACES), ints),
              method=st.binary(max_size=12), uri=st.binary(max_size=80), host=st.binary(max_size=40),
              remote_addr=st.binary(max_size=40), headers=st.lists(maybe_bytes, max_size=16), body=maybe_bytes,
              request_id=st.binary(max_size=40)),
    st.builds(Settle, reservation_id=st.text(max_size=20), status=ints, counted_tokens=ints, cut=st.booleans(),
              tail=st.binary(max_size=200), client_aborted=st.booleans(), counted_chars=ints),
    st.builds(Health), st.builds(Metrics, engine_unavailable_delta=ints),
    st.builds(Usage, body=st.binary(max_size=200)),
    st.builds(Admin, uri=st.one_of(st.sampled_from([b"/metrics", b"/readyz", b"/livez", b"/readyz?x"]),
                                   st.binary(max_size=40)),
              method=st.one_of(st.sampled_from([b"GET", b"HEAD", b"POST"]), st.binary(max_size=8)),
              authorization=maybe_bytes, body=maybe_bytes, engine_unavailable_delta=ints, settle_lost_delta=ints),
)


@fuzz(500)
@given(messages)
def test_engine_handle_answers_every_well_typed_message(msg):
    if isinstance(msg, Decide) and msg.generation is None:
        msg.generation = ENGINE.generation  # mostly current, so the decision path runs
    # Through the real codec, as a frame would arrive.
    msg = decode_request(msgspec.msgpack.encode(msg))
    reply = ENGINE.handle(msg)
    assert isinstance(reply, RESPONSES)
    encode_frame(reply)


@pytest.mark.parametrize("size", [MAX_FRAME, MAX_FRAME + 1, 2**31, 2**32 - 1])
def test_frame_size_boundary(size):
    buf = FrameBuffer(MAX_FRAME)
    if size <= MAX_FRAME:
        assert [bytes(b) for b in buf.feed(size.to_bytes(4, "big") + b"\x00" * size)] == [b"\x00" * size]
        assert buf.pending_bytes == 0
    else:
        with pytest.raises(ProtocolError, match="frame of"):
            buf.feed(size.to_bytes(4, "big"))
