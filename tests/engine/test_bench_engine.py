"""Engine micro-benchmarks: one decision, and one frame -> decide -> frame round trip.

Run with `make bench` (or `pytest tests/engine/test_bench_engine.py --benchmark-enable`); in
`make test` they run once each as ordinary tests of the same code path.
"""

import json
from pathlib import Path

import msgspec

from pyengine.clock import FakeClock
from pyengine.protocol.connection import ConnectionProtocol
from pyengine.protocol.framing import FrameBuffer, decode_response, encode_frame
from pyengine.protocol.messages import SURFACE_DESCRIBED, Decide, Verdict

from .helpers import make_engine, unsigned_jwt

FIVE_RULES = Path(__file__).parent.parent / "fixtures" / "policies" / "five_rules.json"
# Five rules that every benchmark request passes, none of them LLM: per IP, per org (JWT), per
# org + user, per API key, an hourly credit budget, and three kill switches that never hit.
REALISTIC_MIX = Path(__file__).parent.parent / "fixtures" / "policies" / "realistic_mix.json"
ONE_RULE = Path(__file__).parent.parent.parent / "pyengine" / "default_policy.json"  # token bucket per client IP
CHAT_BODY = json.dumps({"model": "gpt-4o-mini", "max_tokens": 256,
                        "messages": [{"role": "system", "content": "You are terse."},
                                     {"role": "user", "content": "Summarise the quarterly report in two lines."}]}
                       ).encode()


TENANTS = 1000  # requests rotate over this many orgs and client addresses


def _engine_and_frames(surface=SURFACE_DESCRIBED, policy=FIVE_RULES):
    """A five-rule policy and one descriptor per tenant, as the shim would send them."""
    clock = FakeClock()
    engine = make_engine(json.loads(policy.read_text()), clock=clock)
    hello = engine.hello_reply
    msgs = []
    for n in range(TENANTS):
        values = {
            "x-original-method": b"POST",
            "x-original-uri": b"/v1/chat/completions",
            "x-forwarded-for": f"10.0.{n // 256}.{n % 256}".encode(),
            "authorization": ("Bearer " + unsigned_jwt({"org_id": f"org-{n}", "sub": "u1"})).encode(),
            # One tenant in ten is the partner: 100 requests/s on its 200/s key.
            "x-api-key": b"partner-7f3a" if n % 10 == 0 else f"key-{n}".encode(),
        }
        msgs.append(Decide(generation=hello.generation, surface=surface, method=b"POST", uri=b"/v1/decision",
                           host=b"edge.local", remote_addr=b"127.0.0.1",
                           headers=[values.get(h) for h in hello.headers], body=CHAT_BODY))
    return engine, clock, msgs


def _one_rule_engine_and_frames():
    """The bundled default policy (one token bucket per client address), decision-service
    descriptors of plain API calls from TENANTS client addresses behind a trusted proxy."""
    clock = FakeClock()
    engine = make_engine(json.loads(ONE_RULE.read_text()), clock=clock)
    hello = engine.hello_reply
    msgs = []
    for n in range(TENANTS):
        values = {"x-original-method": b"GET", "x-original-uri": b"/api/items?page=2",
                  "x-forwarded-for": f"10.1.{n // 256}.{n % 256}".encode()}
        msgs.append(Decide(generation=hello.generation, surface=SURFACE_DESCRIBED, method=b"GET", uri=b"/v1/decision",
                           host=b"edge.local", remote_addr=b"127.0.0.1",
                           headers=[values.get(h) for h in hello.headers], body=None))
    return engine, clock, msgs


def _next(clock, items):
    """Cycle through tenants, 1 ms apart: each tenant sends 1 request/s, well within every rule."""
    state = {"i": 0}

    def pick():
        i = state["i"] = (state["i"] + 1) % len(items)
        clock.t += 0.001
        return items[i]
    return pick


def _bench_decisions(benchmark, engine, clock, msgs) -> Verdict:
    """Warm every tenant (each has state, as in steady traffic), then time one decision."""
    pick = _next(clock, msgs)

    def one():
        return engine.decide(pick())

    for _ in range(TENANTS):
        one()
    verdict = benchmark(one)
    assert isinstance(verdict, Verdict) and verdict.status == 0
    return verdict


def test_bench_decide_five_rules(benchmark):
    verdict = _bench_decisions(benchmark, *_engine_and_frames())
    assert ("RateLimit-Policy" in verdict.headers)


def test_bench_decide_realistic_mix(benchmark):
    engine, clock, msgs = _engine_and_frames(policy=REALISTIC_MIX)
    _bench_decisions(benchmark, engine, clock, msgs)
    # Every rule ran and allowed: each tenant has a counter in each of the five (one tenant in
    # ten shares the partner's API key).
    assert len(engine.store.as_dict()) == 4 * TENANTS + (TENANTS - TENANTS // 10 + 1)


def test_bench_decide_one_rule(benchmark):
    verdict = _bench_decisions(benchmark, *_one_rule_engine_and_frames())
    assert verdict.headers[:2] == ["RateLimit-Policy", '"per-ip";q=10;w=2']


class _Sink:
    def __init__(self):
        self.last = b""

    def write(self, data):
        self.last = data

    def set_write_buffer_limits(self, high):
        pass


def test_bench_frame_round_trip(benchmark):
    engine, clock, msgs = _engine_and_frames()
    proto = ConnectionProtocol(engine.handle, set(), max_frame_bytes=1 << 20)
    sink = _Sink()
    proto.connection_made(sink)
    pick = _next(clock, [encode_frame(m) for m in msgs])

    def one():
        proto.data_received(pick())
        return sink.last

    for _ in range(TENANTS):
        one()
    out = benchmark(one)
    [body] = FrameBuffer().feed(out)
    verdict = decode_response(body)
    assert isinstance(verdict, Verdict) and verdict.status == 0


def test_bench_decode_only(benchmark):
    """The msgpack share of the round trip, for the performance notes."""
    _, _, msgs = _engine_and_frames()
    body = msgspec.msgpack.encode(msgs[0])
    decoder = msgspec.msgpack.Decoder(Decide)
    assert benchmark(decoder.decode, body).method == b"POST"


def test_bench_decide_unmatched(benchmark):
    """A request no policy selects (the coverage counters' own path): TENANTS distinct paths
    under one route prefix, so the bounded route table stays at one entry."""
    clock = FakeClock()
    policy = json.loads(ONE_RULE.read_text())
    policy["policies"][0]["spec"]["selector"] = {"pathPrefix": "/api/"}
    engine = make_engine(policy, clock=clock)
    hello = engine.hello_reply
    msgs = []
    for n in range(TENANTS):
        values = {"x-original-method": b"GET", "x-original-uri": f"/v1beta/models/m{n}:generate".encode(),
                  "x-forwarded-for": f"10.1.{n // 256}.{n % 256}".encode()}
        msgs.append(Decide(generation=hello.generation, surface=SURFACE_DESCRIBED, method=b"GET", uri=b"/v1/decision",
                           host=b"edge.local", remote_addr=b"127.0.0.1",
                           headers=[values.get(h) for h in hello.headers], body=None))
    _bench_decisions(benchmark, engine, clock, msgs)
