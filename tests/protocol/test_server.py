"""The real engine server over a real Unix socket, and the connection protocol under raw bytes."""

import asyncio
import json
import os
import socket
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyengine.clock import FakeClock
from pyengine.protocol.connection import ConnectionProtocol
from pyengine.protocol.framing import FrameBuffer, decode_response, encode_frame
from pyengine.protocol.messages import (PROTOCOL_VERSION, Decide, ErrorReply, Health, Hello, HelloReply, Metrics,
                                        Reply, Verdict)
from pyengine.server import SOCKET_MODE, EngineServer

from ..engine.helpers import make_engine, one_rule_bundle

RULE = {"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
        "algorithm_config": {"rps": 1, "burst": 2}}


def _engine():
    return make_engine(one_rule_bundle(RULE), clock=FakeClock())


_open_clients: list = []


class _Client:
    """A blocking client speaking the framed protocol, like the shim does."""

    def __init__(self, path):
        _open_clients.append(self)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.frames = FrameBuffer()
        self.pending: list = []

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def recv(self):
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.pending.extend(self.frames.feed(data))
        return decode_response(self.pending.pop(0))

    def call(self, msg):
        self.send_raw(encode_frame(msg))
        return self.recv()


def _decide_msg(hello, xff):
    return Decide(generation=hello.generation, surface=0, method=b"POST", uri=b"/v1/decision", host=b"edge",
                  remote_addr=b"127.0.0.1",
                  headers=[xff.encode() if h == "x-forwarded-for" else (b"/x" if h == "x-original-uri" else None)
                           for h in hello.headers])


def _run_server(tmp_path, scenario):
    """Start the real server in a loop thread-free way: the client runs in an executor."""
    path = str(tmp_path / "engine.sock")
    engine = _engine()

    async def main():
        server = EngineServer(engine, path, max_frame_bytes=4096)
        await server.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, scenario, path, server)
        finally:
            await server.shutdown()

    try:
        result = asyncio.run(main())
    finally:
        while _open_clients:
            _open_clients.pop().sock.close()
    assert not os.path.exists(path), "shutdown removes the socket file"
    return result


def test_hello_decide_health_metrics_over_a_real_socket(tmp_path):
    def scenario(path, server):
        assert stat.S_IMODE(os.stat(path).st_mode) == SOCKET_MODE
        c = _Client(path)
        hello = c.call(Hello(protocol_version=PROTOCOL_VERSION, engine_unavailable_delta=3))
        assert isinstance(hello, HelloReply) and "x-forwarded-for" in hello.headers
        verdicts = [c.call(_decide_msg(hello, "10.1.1.1")) for _ in range(3)]
        assert [v.status for v in verdicts] == [0, 0, 429]
        # Stale generation: the engine answers with the current HelloReply instead of deciding.
        stale = Decide(generation=hello.generation + 7, surface=0, method=b"GET", uri=b"/", host=b"",
                       remote_addr=b"127.0.0.1", headers=[])
        assert c.call(stale) == hello
        health = c.call(Health())
        assert isinstance(health, Reply) and health.status == 200
        assert json.loads(health.body)["policy_version"] == 1
        metrics = c.call(Metrics())
        assert "fairvisor_engine_unavailable_total 3" in metrics.body
        assert 'fairvisor_decisions_total{action="reject",reason="rate_limit_exceeded",policy="p1",policy_id="p1"} 1' in metrics.body
        # Pipelined frames in one write are answered in order.
        c.send_raw(encode_frame(_decide_msg(hello, "10.2.2.2")) + encode_frame(Health()))
        assert isinstance(c.recv(), Verdict) and isinstance(c.recv(), Reply)
        return True

    assert _run_server(tmp_path, scenario)


def test_malformed_frame_gets_error_and_connection_stays_usable(tmp_path):
    def scenario(path, server):
        c = _Client(path)
        body = b"\xc1\xff\x00"  # 0xc1 is never valid msgpack
        c.send_raw(len(body).to_bytes(4, "big") + body)
        err = c.recv()
        assert isinstance(err, ErrorReply) and err.code == "bad_frame"
        c.send_raw(encode_frame(Hello(protocol_version=PROTOCOL_VERSION))[:4])  # split frame
        c.send_raw(encode_frame(Hello(protocol_version=PROTOCOL_VERSION))[4:])
        assert isinstance(c.recv(), HelloReply)
        wrong = b"\x93\x02\x01\x02"  # a Decide with missing fields
        c.send_raw(len(wrong).to_bytes(4, "big") + wrong)
        assert c.recv().code == "bad_message"
        assert isinstance(c.call(Hello(protocol_version=99)), ErrorReply)
        assert isinstance(c.call(Health()), Reply)
        return True

    assert _run_server(tmp_path, scenario)


def test_oversized_frame_closes_only_that_connection(tmp_path):
    def scenario(path, server):
        bad, good = _Client(path), _Client(path)
        bad.send_raw((10_000_000).to_bytes(4, "big"))
        err = bad.recv()
        assert isinstance(err, ErrorReply) and err.code == "frame_too_large"
        assert bad.recv() is None  # closed
        assert isinstance(good.call(Health()), Reply)
        return True

    assert _run_server(tmp_path, scenario)


class FakeTransport:
    """Just enough of an asyncio transport to feed raw bytes into the protocol."""

    def __init__(self):
        self.out = bytearray()
        self.closed = False
        self.writes = 0

    def write(self, data):
        assert not self.closed, "wrote after close"
        self.out += data
        self.writes += 1

    def close(self):
        self.closed = True

    def set_write_buffer_limits(self, high):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


ENGINE = _engine()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes_never_crash_the_connection(chunks):
    conns: set = set()
    proto = ConnectionProtocol(ENGINE.handle, conns, max_frame_bytes=1024)
    t = FakeTransport()
    proto.connection_made(t)
    for chunk in chunks:
        if t.closed:
            break
        proto.data_received(chunk)
    # Whatever came in, every reply is a well-formed frame the shim can decode.
    buf = FrameBuffer()
    for body in buf.feed(bytes(t.out)):
        decode_response(body)
    assert buf.pending_bytes == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_frame_bodies_get_an_answer(body):
    proto = ConnectionProtocol(ENGINE.handle, set(), max_frame_bytes=1024)
    t = FakeTransport()
    proto.connection_made(t)
    proto.data_received(len(body).to_bytes(4, "big") + body)
    replies = FrameBuffer().feed(bytes(t.out))
    assert len(replies) == 1 and not t.closed
    decode_response(replies[0])


def test_frames_read_together_are_answered_in_order_in_one_write():
    """A shim that pipelines frames gets its replies in request order, coalesced into a single
    write (one syscall) however many frames one read held; a bad frame in the middle gets its
    ErrorReply in its place and does not disturb the others."""
    proto = ConnectionProtocol(ENGINE.handle, set(), max_frame_bytes=1024)
    t = FakeTransport()
    proto.connection_made(t)
    frames = [Health(), Hello(protocol_version=PROTOCOL_VERSION), b"\xc1", Health()]
    data = b"".join(encode_frame(f) if not isinstance(f, bytes) else len(f).to_bytes(4, "big") + f
                    for f in frames)
    proto.data_received(data)
    replies = [decode_response(b) for b in FrameBuffer().feed(bytes(t.out))]
    assert [type(r) for r in replies] == [Reply, HelloReply, ErrorReply, Reply]
    assert t.writes == 1 and not t.closed


def test_ordered_shutdown_closes_live_connections(tmp_path):
    def scenario(path, server):
        c = _Client(path)
        assert isinstance(c.call(Health()), Reply)
        assert len(server.connections) == 1
        return c

    def closed_by_server(path, server):
        c = scenario(path, server)
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(5)
        return c.recv() is None

    async def main():
        nonlocal loop
        loop = asyncio.get_running_loop()
        engine = _engine()
        path = str(tmp_path / "engine.sock")
        server = EngineServer(engine, path)
        await server.start()
        ok = await loop.run_in_executor(None, closed_by_server, path, server)
        return ok, server.connections

    loop = None
    try:
        ok, conns = asyncio.run(main())
    finally:
        while _open_clients:
            _open_clients.pop().sock.close()
    assert ok and not conns  # the server closed the live connection during shutdown


@pytest.mark.parametrize("size", [0, 1, 3])
def test_short_prefixes_wait_for_more_bytes(size):
    buf = FrameBuffer()
    frame = encode_frame(Health())
    assert buf.feed(frame[:size]) == []
    assert [bytes(b) for b in buf.feed(frame[size:])] == [frame[4:]]


def test_a_reply_that_cannot_be_encoded_is_answered_engine_error_and_counted():
    """The handler answers its own errors; what fails after it (encoding its reply) is our bug
    too: an ErrorReply in its place, counted, and the connection keeps answering."""
    from pyengine.metrics import EngineMetrics
    from pyengine.protocol.limits import ConnectionLimits

    metrics = EngineMetrics()
    replies = iter([object(), Reply(status=200, content_type="text/plain", body="ok")])
    proto = ConnectionProtocol(lambda msg: next(replies), set(), max_frame_bytes=1024,
                               limits=ConnectionLimits(metrics=metrics))
    t = FakeTransport()
    proto.connection_made(t)
    proto.data_received(encode_frame(Health()) + encode_frame(Health()))
    first, second = [decode_response(b) for b in FrameBuffer().feed(bytes(t.out))]
    assert isinstance(first, ErrorReply) and first.code == "engine_error"
    assert isinstance(second, Reply) and not t.closed
    assert metrics.engine_errors.values[("frame",)] == 1
