"""Builds engines and Decide frames for engine-level tests (no sockets, frozen clock)."""

import base64
import json

import msgspec

from pyengine.clock import FakeClock
from pyengine.config import from_env
from pyengine.engine import Engine
from pyengine.protocol.messages import SURFACE_DESCRIBED, SURFACE_INLINE, Decide, HelloReply


def make_engine(bundle: dict, clock: FakeClock | None = None, **settings) -> Engine:
    engine = Engine(from_env({}, **settings), clock=clock or FakeClock())
    engine.load_bytes(json.dumps(bundle).encode(), "policy.json")
    return engine


def one_rule_bundle(rule: dict, version: int = 1, selector=None, **spec) -> dict:
    return {
        "bundle_version": version,
        "policies": [{"id": "p1", "spec": {"selector": selector or {"pathPrefix": "/"}, "rules": [rule], **spec}}],
    }


def unsigned_jwt(claims: dict) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def decide(engine: Engine, headers: dict | None = None, method="GET", uri="/v1/chat", host="api.test",
           remote_addr="127.0.0.1", body: bytes | None = None, surface=SURFACE_INLINE, with_decision=False):
    """Describe a request the way the shim does (only the headers the engine asked for).
    with_decision: (reply, the Decision behind it) from Engine.decide_with_decision, or the
    coroutine giving that pair when strict rules await the store."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    for _ in range(2):
        hello = engine.hello_reply
        msg = Decide(generation=hello.generation, surface=surface, method=method.encode(), uri=uri.encode(),
                     host=host.encode(), remote_addr=remote_addr.encode(),
                     headers=[lower[h].encode() if h in lower else None for h in hello.headers],
                     body=body if hello.needs_body else None)
        # Round-trip through msgpack, as the real frame would.
        msg = msgspec.msgpack.decode(msgspec.msgpack.encode(msg), type=Decide)
        reply = engine.decide_with_decision(msg) if with_decision else engine.decide(msg)
        if not isinstance(reply[0] if reply.__class__ is tuple else reply, HelloReply):
            return reply
    raise AssertionError("engine kept answering HelloReply")


def described(engine, method="GET", uri="/", xff=None, headers=None):
    """A decision-service request: the original request travels in X-Original-* headers."""
    h = {"X-Original-Method": method, "X-Original-URI": uri, **(headers or {})}
    if xff:
        h["X-Forwarded-For"] = xff
    return decide(engine, headers=h, method="POST", uri="/v1/decision", surface=SURFACE_DESCRIBED)


def hdr(verdict, name: str) -> str | None:
    pairs = verdict.headers
    for i in range(0, len(pairs), 2):
        if pairs[i].lower() == name.lower():
            return pairs[i + 1]
    return None


def rule_key(policy_id: str, rule: str, *values: str) -> str:
    """The state key of a rule's counter for these limit-key values (pyengine.state.keys)."""
    from pyengine.state import keys

    return keys.values_key(keys.rule_prefix(policy_id, rule), values)
