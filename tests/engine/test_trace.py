"""Tracing a decision (pyengine.decision.trace): the record is the decision itself, not a second walk."""

import msgspec

from pyengine.decision.rules import TokenBucketRule
from pyengine.decision.trace import Trace
from pyengine.explain import explain_request
from pyengine.protocol.messages import SURFACE_INLINE, Decide

from .helpers import decide, make_engine


def bucket(name: str, key: str, burst: int, match=None) -> dict:
    r = {"name": name, "limit_keys": [key, *(match or ())], "algorithm": "token_bucket",
         "algorithm_config": {"tokens_per_second": 0.001, "burst": burst}}
    if match:
        r["match"] = match
    return r


def policy(pid: str, *rules, prefix="/", **spec) -> dict:
    return {"id": pid, "spec": {"selector": {"pathPrefix": prefix}, "rules": list(rules), **spec}}


def msg(engine, headers: dict, uri="/v1/chat") -> Decide:
    hello = engine.hello_reply
    lower = {k.lower(): v for k, v in headers.items()}
    m = Decide(generation=hello.generation, surface=SURFACE_INLINE, method=b"GET", uri=uri.encode(), host=b"api.test",
               remote_addr=b"127.0.0.1", headers=[lower.get(h) for h in hello.headers])
    return msgspec.msgpack.decode(msgspec.msgpack.encode(m), type=Decide)


def test_explaining_charges_once_and_shows_the_real_outcome():
    engine = make_engine({"bundle_version": 1, "policies": [policy("p", bucket("k", "header:x-key", burst=2))]})
    seen = []
    for _ in range(3):
        out = explain_request(engine, msg(engine, {"x-key": b"a"}))
        [rule] = out["policies"][0]["rules"]
        seen.append((rule["status"], rule["outcome"].get("remaining"), out["verdict"]["status"]))
    # One charge per explained request: no peek beside the decision charges or leaves anything.
    assert seen == [("allow", 1, 200), ("allow", 0, 200), ("reject", 0, 429)]
    assert decide(engine, headers={"X-Key": "a"}).status == 429


def test_the_trace_names_the_match_miss_and_leaves_unreached_rules_without_a_key():
    engine = make_engine({"bundle_version": 1, "policies": [
        policy("first", bucket("vip", "header:x-key", 5, match={"header:x-tier": "vip"}),
               bucket("tight", "header:x-key", 1), bucket("after", "header:x-key", 5)),
        policy("second", bucket("other", "header:x-key", 5)),
        policy("elsewhere", bucket("admin", "header:x-key", 5), prefix="/admin")]})
    decide(engine, headers={"X-Key": "a", "X-Tier": "free"})
    out = explain_request(engine, msg(engine, {"x-key": b"a", "x-tier": b"free"}))
    first, second, elsewhere = out["policies"]
    vip, tight, after = first["rules"]
    assert (vip["status"], vip["why"]) == ("skipped", "match: header:x-tier is 'free', the rule wants 'vip'")
    assert (tight["status"], tight["key"], first["outcome"]) == ("reject", "a", "reject")
    assert tight["outcome"]["remaining"] == 0 and tight["outcome"]["reason"] == "rate_limit_exceeded"
    assert after == {"rule": "after", "algorithm": "token_bucket", "limit_keys": ["header:x-key"], "fallback": False,
                     "status": "not_reached", "why": "an earlier rule of this policy rejected"}
    assert second["rules"][0]["status"] == "not_reached" and "key" not in second["rules"][0]
    assert second["rules"][0]["why"] == "policy first rejected"
    assert elsewhere["why"] == "selector: path /v1/chat not under /admin"
    assert (out["verdict"]["rule"], out["verdict"]["policy"]) == ("tight", "first")


def test_a_refused_repeated_header_is_in_the_trace():
    engine = make_engine({"bundle_version": 1, "policies": [policy("p", bucket("k", "header:x-key", burst=2))]})
    m = msg(engine, {})
    headers = list(m.headers)
    headers[engine.hello_reply.headers.index("x-key")] = [b"a", b"b"]
    m = msgspec.structs.replace(m, headers=tuple(headers))
    out = explain_request(engine, m)
    assert out["ambiguous_headers"] == [{"header": "x-key", "status": "refused"}]
    assert out["policies"] == [{"policy": "p", "mode": "enforce", "selector": "pathPrefix=/", "status": "not_reached",
                                "why": "ambiguous header x-key refused the request", "rules": []}]
    assert (out["verdict"]["status"], out["verdict"]["reason"]) == (400, "ambiguous_header")


def test_a_traced_decision_hands_back_real_rules_and_the_same_answer():
    bundle = {"bundle_version": 1, "policies": [policy("p", bucket("k", "header:x-key", burst=5))]}
    traced, plain = make_engine(bundle), make_engine(bundle)
    t = Trace()
    v = traced.decide_untraced(msg(traced, {"x-key": b"a"}), t)
    w, d = plain.decide_with_decision(msg(plain, {"x-key": b"a"}))
    assert (v.status, v.body, v.headers) == (w.status, w.body, w.headers) and "RateLimit" in v.headers
    # No recording proxy outlives the trace: the charge list holds the rules themselves.
    assert type(t.decision.charged[0][0]) is TokenBucketRule and t.decision.charged[0][1:] == d.charged[0][1:]


def test_a_guard_that_refused_is_in_the_trace():
    loop = {"enabled": True, "window_seconds": 45, "threshold_identical_requests": 2, "action": "reject",
            "similarity": "exact"}
    engine = make_engine({"bundle_version": 1, "policies": [
        policy("agents", bucket("k", "header:x-key", burst=50), loop_detection=loop)]})
    outs = [explain_request(engine, msg(engine, {"x-key": b"a"})) for _ in range(3)]
    assert [o["verdict"]["reason"] for o in outs][-1] == "loop_detected"
    last = outs[-1]["policies"][0]
    assert last["guards"]["reason"] == "loop_detected" and last["guards"]["reject"] is True
    assert last["outcome"] == "reject"
    assert "guards" not in outs[0]["policies"][0]  # below the threshold no guard acted
