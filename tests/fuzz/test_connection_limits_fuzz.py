"""Fuzzing the held-bytes bounds (issue 13, 14d): whatever several peers send, in any split and at
any pace, the engine holds at most the budget, frees what it closes, and never keeps a stalled frame."""

from hypothesis import given
from hypothesis import strategies as st

from pyengine.clock import FakeClock
from pyengine.metrics import EngineMetrics
from pyengine.protocol.connection import ConnectionProtocol
from pyengine.protocol.framing import FrameBuffer, decode_response, encode_frame
from pyengine.protocol.limits import ConnectionLimits
from pyengine.protocol.messages import Health

from ..protocol.test_server import FakeTransport
from .budget import fuzz
from .engines import keyed_engine

ENGINE = keyed_engine()
BUDGET, MAX_FRAME, PARTIAL_S, IDLE_S = 2_000, 1_500, 1.0, 5.0
HEALTH = encode_frame(Health())

chunk = st.one_of(st.binary(max_size=600),
                  st.builds(lambda n, k: (n.to_bytes(4, "big") + b"\x00" * n)[:k],  # a partial frame
                            st.integers(0, MAX_FRAME), st.integers(0, 900)),
                  st.just(HEALTH))
step = st.one_of(st.tuples(st.just("send"), st.integers(0, 4), chunk),
                 st.tuples(st.just("wait"), st.floats(0, 3), st.just(b"")))


@fuzz(300)
@given(st.lists(step, max_size=40))
def test_any_traffic_from_five_peers_stays_within_the_budget_and_stalls_are_closed(steps):
    clock = FakeClock(0.0)
    lim = ConnectionLimits(PARTIAL_S, IDLE_S, BUDGET, EngineMetrics(), clock.now_s)
    conns: set = set()
    peers = []
    for _ in range(5):
        proto = ConnectionProtocol(ENGINE.handle, conns, MAX_FRAME, limits=lim)
        t = FakeTransport()
        proto.connection_made(t)
        peers.append((proto, t))
    for kind, arg, data in steps:
        if kind == "send":
            proto, t = peers[arg]
            if not t.closed:
                proto.data_received(data)
        else:
            clock.t += arg
            lim.reap(conns)
            for proto, t in peers:  # nothing stalled or idle past its timeout survives a reap
                assert t.closed or proto.partial_since_s is None or clock.t - proto.partial_since_s < PARTIAL_S
                assert t.closed or clock.t - proto.last_read_s < IDLE_S
        held = sum(p._frames.pending_bytes for p, _ in peers)
        assert held == lim.pending_bytes <= BUDGET  # the account is exact, and bounded
        assert sum(p.buffered_bytes for p, _ in peers) <= held  # memory held never exceeds the account
        assert all(p._frames.pending_bytes == 0 for p, t in peers if t.closed)
    for _, t in peers:  # whatever was answered is well-formed frames
        buf = FrameBuffer(1 << 20)
        for body in buf.feed(bytes(t.out)):
            decode_response(body)
