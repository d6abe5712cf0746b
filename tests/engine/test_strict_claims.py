"""Strict rules' claim path (pyengine.decision.strict) over an in-memory store model, with a fake clock.

`ModelStore` answers `acquire` the way pyengine/fleet/strict.lua does (check every op, commit
all or none, answer the values found) using the engine's own limiters over a dict; the store
scripts themselves are tested against a real redis-server in tests/fleet/test_strict.py.
"""

import asyncio
import json
import types

import pytest

from pyengine.algorithms.token_bucket import TokenBucket
from pyengine.clock import FakeClock
from pyengine.errors import PolicyError, StoreError
from pyengine.protocol.connection import ConnectionProtocol
from pyengine.protocol.framing import FrameBuffer, decode_response, encode_frame
from pyengine.protocol.messages import Verdict
from pyengine.state import keys

from .helpers import decide, hdr, make_engine, rule_key

T0 = 1_780_000_000.0


class _Dict(dict):
    put = dict.__setitem__

    def delete(self, key):
        self.pop(key, None)


class ModelStore:
    """The shared store of a fleet, in memory: atomic multi-op acquire, like strict.lua."""

    def __init__(self):
        self.data = _Dict()
        self.calls = 0
        self.down = False

    async def acquire(self, ops, now_s):
        self.calls += 1
        if self.down:
            raise StoreError("store down")
        priors, after = [], {}
        for i, (key, kind, a, b, c, cost) in enumerate(ops):
            prior = self.data.get(key)
            priors.append(prior)
            if kind == "g":
                scratch = _Dict({key: prior} if prior is not None else {})
                if not TokenBucket(scratch, a, b).acquire(key, cost, now_s).allowed:
                    return i, priors
                after[key] = scratch[key]
            else:
                spent = prior[1] if prior is not None and prior[0] == a else 0
                if spent + cost > b:
                    return i, priors
                after[key] = (a, spent + cost)
        self.data.update(after)
        return None, priors


def _bundle(*rules, version=1):
    return {"bundle_version": version, "policies": [{"id": "p1", "spec": {"selector": {"pathPrefix": "/"},
                                                                        "rules": list(rules)}}]}


TB_STRICT = {"name": "strict-rps", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
             "algorithm_config": {"tokens_per_second": 1, "burst": 5}, "consistency": "strict"}
BUDGET_STRICT = {"name": "strict-budget", "limit_keys": ["header:x-org"], "algorithm": "cost_based",
                 "algorithm_config": {"budget": 3, "period": "1d",
                                      "staged_actions": [{"threshold_percent": 50, "action": "warn"},
                                                         {"threshold_percent": 100, "action": "reject"}]},
                 "consistency": "strict"}
TB_LOCAL = {"name": "local-rps", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
            "algorithm_config": {"tokens_per_second": 1, "burst": 10}}


def _engines(bundle, n=1, store=None):
    clock = FakeClock(T0)
    store = store or ModelStore()
    engines = []
    for _ in range(n):
        e = make_engine(bundle, clock=clock)
        e.use_strict_backend(store)
        engines.append(e)
    return engines, store, clock


def _run(engine, with_decision=False, **kw):
    reply = decide(engine, headers={"X-Org": "acme"}, with_decision=with_decision, **kw)
    return asyncio.run(reply) if isinstance(reply, types.CoroutineType) else reply


def test_strict_is_accepted_for_the_algorithms_the_store_implements_only():
    for rule in (TB_STRICT, BUDGET_STRICT):
        make_engine(_bundle(rule))
    concurrency = {"name": "c", "limit_keys": ["header:x-org"], "algorithm": "concurrency",
                   "algorithm_config": {"max_in_flight": 2}, "consistency": "strict"}
    with pytest.raises(PolicyError) as exc:
        make_engine(_bundle(concurrency))
    assert exc.value.errors == ['policy.json: $.policies[0].spec.rules[0].consistency: "strict" is not available '
                                'for concurrency (only token_bucket, token_bucket_llm, cost_based)']


def test_without_a_store_a_strict_rule_decides_locally_and_synchronously():
    engine = make_engine(_bundle(TB_STRICT), clock=FakeClock(T0))
    statuses = [decide(engine, headers={"X-Org": "acme"}).status for _ in range(6)]
    assert statuses == [0, 0, 0, 0, 0, 429]


def test_two_engines_on_one_store_admit_exactly_the_burst():
    (a, b), store, clock = _engines(_bundle(TB_STRICT), n=2)
    statuses = [_run(e).status for e in (a, b) * 4]
    assert statuses == [0, 0, 0, 0, 0, 429, 429, 429]
    assert store.calls == 8
    clock.advance(1.0)  # one token refilled, for the fleet as a whole
    assert [_run(b).status, _run(a).status] == [0, 429]


def test_headers_come_from_the_engines_own_limiter_replayed_on_the_store_value():
    (a, b), _, clock = _engines(_bundle(TB_STRICT), n=2)
    for e in (a, b, a):
        _run(e)
    v = _run(b)
    assert (hdr(v, "RateLimit-Remaining"), hdr(v, "RateLimit-Reset")) == ("1", "4")
    _run(a)
    v = _run(b)
    assert v.status == 429
    assert hdr(v, "Retry-After") == "1" and hdr(v, "X-Fairvisor-Reason") == "rate_limit_exceeded"


def test_the_store_value_is_mirrored_into_the_local_store():
    (a, b), store, _ = _engines(_bundle(TB_STRICT), n=2)
    _run(a)
    _run(b)
    key = rule_key("p1", "strict-rps", "acme")
    assert a.store.get(key) == pytest.approx(T0 + 1.0)  # a's own request only, as of its call
    assert b.store.get(key) == store.data[key] == pytest.approx(T0 + 2.0)


def test_two_strict_rules_commit_all_or_none():
    (engine,), store, _ = _engines(_bundle(TB_STRICT, BUDGET_STRICT))
    results = [_run(engine) for _ in range(4)]
    assert [r.status for r in results] == [0, 0, 0, 429]
    assert hdr(results[1], "X-Fairvisor-Warning") == "budget_warn"  # staged warning, from the replay
    assert hdr(results[3], "X-Fairvisor-Reason") == "budget_exhausted"
    # The rejected request charged neither rule: the bucket has the two tokens left it had.
    bucket = TokenBucket(store.data, 1, 5)
    assert bucket.peek(rule_key("p1", "strict-rps", "acme"), T0) == 2


def test_a_strict_rejection_undoes_the_local_rules_charges():
    (engine,), _, _ = _engines(_bundle(TB_LOCAL, TB_STRICT))
    for _ in range(5):
        assert _run(engine).status == 0
    assert _run(engine).status == 429
    local = TokenBucket(engine.store, 1, 10)
    assert local.peek(rule_key("p1", "local-rps", "acme"), T0) == 5  # the 6th request was not charged


def test_a_local_rejection_needs_no_store_call():
    tight = dict(TB_LOCAL, algorithm_config={"tokens_per_second": 1, "burst": 1})
    (engine,), store, _ = _engines(_bundle(tight, TB_STRICT))
    assert _run(engine).status == 0
    assert decide(engine, headers={"X-Org": "acme"}).status == 429  # answered synchronously
    assert store.calls == 1


def test_store_down_enforces_on_local_counters_and_counts_it():
    (engine,), store, _ = _engines(_bundle(TB_STRICT, BUDGET_STRICT))
    store.down = True
    assert [_run(engine).status for _ in range(4)] == [0, 0, 0, 429]  # never an allow for the outage
    assert engine.metrics.strict_decisions.values[("local",)] == 4
    assert engine.metrics.strict_decisions.values[("store",)] == 0
    assert TokenBucket(engine.store, 1, 5).peek(rule_key("p1", "strict-rps", "acme"), T0) == 2


def test_shadow_policies_count_strict_rules_locally():
    bundle = _bundle(TB_STRICT)
    bundle["policies"][0]["spec"]["mode"] = "shadow"
    (engine,), store, _ = _engines(bundle)
    assert all(decide(engine, headers={"X-Org": "acme"}).status == 0 for _ in range(7))
    assert store.calls == 0
    assert engine.metrics.would_reject.values[("p1", "rate_limit_exceeded")] == 2


def test_llm_strict_rule_claims_tpd_then_tpm_in_one_call():
    rule = {"name": "llm", "limit_keys": ["header:x-org"], "algorithm": "token_bucket_llm",
            "algorithm_config": {"tokens_per_minute": 1000, "tokens_per_day": 250, "max_prompt_tokens": 50},
            "consistency": "strict"}
    (a, b), store, _ = _engines(_bundle(rule), n=2)
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 100,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    kw = dict(method="POST", uri="/v1/chat/completions", body=body)
    first, d = _run(a, with_decision=True, **kw)
    reserved_tokens = d.reserved[0][2]  # prompt estimate + max_tokens
    second, third = _run(b, **kw), _run(a, **kw)
    assert (first.status, second.status, third.status) == (0, 0, 429)
    assert hdr(third, "X-Fairvisor-Reason") == "tpd_exceeded"
    assert store.data[keys.day(rule_key("p1", "llm", "acme"))][1] == 2 * reserved_tokens
    assert store.calls == 3


class _Transport:
    def __init__(self):
        self.written = []

    def write(self, data):
        self.written.append(data)

    def set_write_buffer_limits(self, high):
        pass

    def close(self):
        pass

    def pause_reading(self):
        pass


def test_a_connection_answers_in_request_order_while_a_strict_request_waits():
    (engine,), store, _ = _engines(_bundle(TB_STRICT))
    gate = asyncio.Event()
    model = store.acquire

    async def slow(ops, now_s):
        await gate.wait()
        return await model(ops, now_s)

    store.acquire = slow

    async def scenario():
        transport = _Transport()
        conn = ConnectionProtocol(engine.handle, set(), 1 << 20)
        conn.connection_made(transport)
        strict_req = _frame(engine, {"X-Org": "acme"})
        plain_req = _frame(engine, {})  # no key: the strict rule is skipped, answered at once
        conn.data_received(strict_req + plain_req)
        conn.data_received(plain_req)
        await asyncio.sleep(0)
        assert transport.written == []  # the first answer is not ready: nothing may overtake it
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        frames = FrameBuffer(1 << 20).feed(b"".join(transport.written))
        return [decode_response(f) for f in frames]

    replies = asyncio.run(scenario())
    assert len(replies) == 3 and all(isinstance(r, Verdict) for r in replies)
    assert [hdr(r, "RateLimit-Remaining") for r in replies] == ["4", None, None]


def _frame(engine, headers):
    from pyengine.protocol.messages import SURFACE_INLINE, Decide

    hello = engine.hello_reply
    lower = {k.lower(): v for k, v in headers.items()}
    msg = Decide(generation=hello.generation, surface=SURFACE_INLINE, method=b"GET", uri=b"/v1/x", host=b"h",
                 remote_addr=b"127.0.0.1", headers=[lower[h].encode() if h in lower else None for h in hello.headers])
    return encode_frame(msg)


def test_hidden_reasons_and_the_debug_trace_wait_for_the_store_too():
    clock = FakeClock(T0)
    store = ModelStore()
    for settings in ({"hide_reason": True}, {"log_level": "debug"}):
        engine = make_engine(_bundle(dict(TB_STRICT, algorithm_config={"tokens_per_second": 1, "burst": 1})),
                             clock=clock, **settings)
        engine.use_strict_backend(store)
        store.data.clear()
        first, second = _run(engine), _run(engine)
        assert (first.status, second.status) == (0, 429)
        assert (hdr(second, "X-Fairvisor-Reason") is None) == ("hide_reason" in settings)


def test_strict_rules_decide_like_local_ones_with_a_breaker_and_request_caps():
    """The same requests through the same policy, local and strict: the same answers. The
    breaker meters the strict budget's spend; an LLM cap refuses before any store call."""
    spend = dict(BUDGET_STRICT, algorithm_config={"budget": 100, "period": "1d", "cost_key": "header:x-cost",
                                                  "staged_actions": [{"threshold_percent": 100, "action": "reject"}]})
    llm = {"name": "llm", "limit_keys": ["header:x-org"], "algorithm": "token_bucket_llm", "consistency": "strict",
           "algorithm_config": {"tokens_per_minute": 100000, "max_tokens_per_request": 400}}
    bundle = _bundle(spend, llm)
    bundle["policies"][0]["spec"]["circuit_breaker"] = {"enabled": True, "spend_rate_threshold_per_minute": 12,
                                                        "auto_reset_after_minutes": 5}
    local_engine = make_engine(bundle, clock=FakeClock(T0))
    (strict_engine,), store, _ = _engines(bundle)
    answers = {}
    for name, engine in (("local", local_engine), ("strict", strict_engine)):
        got = []
        for cost, max_tokens in ((4, 100), (4, 900), (4, 100), (4, 100), (4, 100)):
            body = json.dumps({"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})
            reply = decide(engine, headers={"X-Org": "acme", "X-Cost": str(cost)}, method="POST",
                           uri="/v1/chat/completions", body=body.encode())
            reply = asyncio.run(reply) if isinstance(reply, types.CoroutineType) else reply
            got.append((reply.status, hdr(reply, "X-Fairvisor-Reason")))
        answers[name] = got
    assert answers["strict"] == answers["local"]
    assert answers["local"] == [(0, None), (429, "max_tokens_per_request_exceeded"), (0, None), (0, None),
                                (429, "circuit_breaker_open")]
    assert store.calls == 3  # the capped request and the breaker's refusal made no store call


def test_a_bug_while_the_store_decides_answers_engine_error_and_undoes_the_local_charges():
    (engine,), store, _ = _engines(_bundle(TB_LOCAL, TB_STRICT))

    async def broken(ops, now_s):
        raise ValueError("a bug")

    store.acquire = broken
    reply = _run(engine)
    assert (reply.status, hdr(reply, "X-Fairvisor-Reason")) == (503, "engine_error")
    assert engine.metrics.engine_errors.values[("decide",)] == 1
    assert TokenBucket(engine.store, 1, 10).peek(rule_key("p1", "local-rps", "acme"), T0) == 10


def test_explain_shows_a_strict_claim_and_the_stores_answer():
    from pyengine.explain import trace
    from pyengine.protocol.messages import SURFACE_INLINE, Decide
    (engine,), store, _ = _engines(_bundle(TB_LOCAL, TB_STRICT))
    hello = engine.hello_reply
    msg = Decide(generation=hello.generation, surface=SURFACE_INLINE, method=b"GET", uri=b"/v1/chat", host=b"h",
                 remote_addr=b"127.0.0.1", headers=[b"acme" if h == "x-org" else None for h in hello.headers])
    out, pending, latency_us = trace(engine, msg)
    assert latency_us is None and isinstance(pending, types.CoroutineType)  # the store decides
    verdict, _ = asyncio.run(pending)
    local, strict = out["policies"][0]["rules"]
    assert (local["status"], local["outcome"]["remaining"]) == ("allow", 9)
    assert (strict["status"], strict["why"], strict["outcome"]) == ("claim", "strict: the shared store decides",
                                                                    {"cost": 1})
    assert (verdict.status, out["verdict"]["status"], store.calls) == (0, 200, 1)
