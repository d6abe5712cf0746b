"""Held-bytes bounds on shim connections (issue 13, 14d): a stalled partial frame and an idle
connection are closed, and all partial frames together stay within a budget."""

import asyncio
import time

from pyengine.clock import FakeClock
from pyengine.metrics import EngineMetrics
from pyengine.protocol.connection import ConnectionProtocol
from pyengine.protocol.framing import FrameBuffer, encode_frame
from pyengine.protocol.limits import ConnectionLimits
from pyengine.protocol.messages import Health, Reply
from pyengine.server import EngineServer

from .test_server import ENGINE, FakeTransport, _Client, _engine, _open_clients

PARTIAL_S, IDLE_S = 5.0, 600.0


def limits(budget=1 << 20):
    clock = FakeClock(0.0)
    return ConnectionLimits(PARTIAL_S, IDLE_S, budget, EngineMetrics(), clock.now_s), clock


def connect(lim, conns, max_frame=1 << 20):
    proto = ConnectionProtocol(ENGINE.handle, conns, max_frame, limits=lim)
    t = FakeTransport()
    proto.connection_made(t)
    return proto, t


def partial(size: int, sent: int) -> bytes:
    """The first `sent` bytes of a frame declaring a `size`-byte body."""
    return (size.to_bytes(4, "big") + b"\x00" * size)[:sent]


def test_a_partial_frame_stalled_past_the_timeout_is_closed_and_released():
    lim, clock = limits()
    conns: set = set()
    proto, t = connect(lim, conns)
    proto.data_received(partial(1000, 300))
    # Counted at the frame's declared size (header + body) once the header is in.
    assert lim.pending_bytes == 1004 and proto.buffered_bytes == 300 and proto.partial_since_s == 0.0
    clock.t = PARTIAL_S - 0.01
    proto.data_received(b"\x00" * 100)  # still the same frame: its clock keeps running
    assert lim.reap(conns) == 0 and not t.closed
    clock.t = PARTIAL_S
    assert lim.reap(conns) == 1 and t.closed
    assert lim.pending_bytes == 0 and proto.pending_bytes == 0
    assert lim.metrics.shim_connections_closed.values == {("partial_frame",): 1}


def test_frames_completing_reset_the_partial_clock_and_whole_frames_never_count():
    lim, clock = limits()
    conns: set = set()
    proto, t = connect(lim, conns)
    frame = encode_frame(Health())
    for i in range(20):  # a frame split across reads, every 0.4 s, completing each time
        clock.t = i * 0.4
        proto.data_received(frame[2:] + frame[:2] if i else frame[:2])
        assert lim.reap(conns) == 0
    assert not t.closed and proto.partial_since_s == 19 * 0.4  # the frame begun in the last read
    assert len(FrameBuffer().feed(bytes(t.out))) == 19
    proto.data_received(frame[2:])
    assert lim.pending_bytes == 0 and proto.partial_since_s is None
    clock.t += PARTIAL_S * 10
    assert lim.reap(conns) == 0  # nothing pending, and well within the idle timeout


def test_an_idle_connection_is_closed_after_the_idle_timeout():
    lim, clock = limits()
    conns: set = set()
    busy, bt = connect(lim, conns)
    idle, it = connect(lim, conns)
    clock.t = IDLE_S - 1
    busy.data_received(encode_frame(Health()))
    clock.t = IDLE_S
    assert lim.reap(conns) == 1 and it.closed and not bt.closed
    assert lim.metrics.shim_connections_closed.values == {("idle",): 1}


def test_over_the_budget_the_largest_partial_frames_are_closed_first():
    lim, clock = limits(budget=10_000)
    conns: set = set()
    peers = [connect(lim, conns, max_frame=100_000) for _ in range(6)]
    for i, (proto, _) in enumerate(peers):
        proto.data_received(partial(2_996 + i, 100))  # each declares 3,000 + i bytes, sends 100
        assert lim.pending_bytes <= 10_000
    # Each arrival over the budget closes the largest announcer, the newcomer included.
    assert [t.closed for _, t in peers] == [False, False, False, True, True, True]
    held = sum(p.pending_bytes for p, t in peers if not t.closed)
    assert held == lim.pending_bytes == 3_000 + 3_001 + 3_002
    assert lim.metrics.shim_connections_closed.values == {("buffer_budget",): 3}


def test_a_frame_announced_over_the_budget_is_refused_before_its_bytes_are_buffered():
    lim, clock = limits(budget=10_000)
    conns: set = set()
    holder, ht = connect(lim, conns, max_frame=100_000)
    holder.data_received(partial(6_000, 5_000))
    newcomer, nt = connect(lim, conns, max_frame=100_000)
    newcomer.data_received(partial(6_000, 10))  # the same size announced, 10 bytes received
    # Among equal announcements the one that received least goes: the holder keeps its frame.
    assert nt.closed and not ht.closed and lim.pending_bytes == 6_004
    holder.data_received(partial(6_000, 6_004)[5_000:])
    assert holder.pending_bytes == 0 and lim.pending_bytes == 0


def disconnected(client) -> bool:
    """True once the engine closed the client's connection (an orderly close or a reset)."""
    try:
        return client.recv() is None
    except ConnectionResetError:
        return True


def test_real_socket_a_stalled_partial_frame_is_disconnected_and_others_keep_working(tmp_path):
    path = str(tmp_path / "engine.sock")
    engine = _engine()
    lim = ConnectionLimits(partial_frame_timeout_s=0.2, idle_timeout_s=60, pending_budget_bytes=5 << 20)
    result = {}

    def scenario(server):
        stalled = _Client(path)
        stalled.send_raw(partial(1 << 20, 64 << 10))  # 64 KiB of a 1 MiB frame, then nothing
        start = time.monotonic()
        hogs = [_Client(path) for _ in range(5)]
        for h in hogs:
            try:
                h.send_raw(partial(2 << 20, 1 << 20))  # 1 MiB of a 2 MiB frame
            except OSError:
                pass  # refused while sending: its announcement was over the budget
        good = _Client(path)
        result["good"] = good.call(Health())
        result["held_max"] = lim.pending_bytes
        # The stalled client is disconnected after the timeout (not after its socket timeout).
        result["stalled_closed"] = stalled.recv() is None
        result["stalled_after_s"] = time.monotonic() - start
        result["hogs_closed"] = sum(map(disconnected, hogs))
        result["held_after"] = lim.pending_bytes
        result["good_after"] = good.call(Health())

    async def main():
        server = EngineServer(engine, path, max_frame_bytes=8 << 20, limits=lim)
        await server.start()
        try:
            await asyncio.get_running_loop().run_in_executor(None, scenario, server)
        finally:
            await server.shutdown()

    try:
        asyncio.run(main())
    finally:
        while _open_clients:
            _open_clients.pop().sock.close()
    assert isinstance(result["good"], Reply) and isinstance(result["good_after"], Reply)
    assert result["held_max"] <= 5 << 20  # 11 MiB of partial frames announced, a 5 MiB budget
    assert result["stalled_closed"] and result["hogs_closed"] == 5
    assert result["stalled_after_s"] < 1.0  # 0.2 s timeout, reaped every 0.05 s; the client's own timeout is 5 s
    assert result["held_after"] == 0
    closed = engine.metrics.shim_connections_closed.values
    # The budget closed the largest announcers (never the 1 MiB one); the timeout closed the rest.
    assert closed.get(("buffer_budget",), 0) >= 3 and closed.get(("partial_frame",), 0) >= 1
    assert sum(closed.values()) == 6
