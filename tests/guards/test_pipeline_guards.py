"""Loop detection and the breaker inside the decision pipeline: verdicts, undo, shadow, metrics."""

import json

from pyengine.clock import FakeClock
from pyengine.state import keys

from ..engine.helpers import decide, hdr, make_engine, rule_key

KEY = {"X-Api-Key": "k1"}


def bundle(loop=None, breaker=None, mode="enforce", rules=None, version=1):
    spec = {"selector": {"pathPrefix": "/"}, "mode": mode, "rules": rules if rules is not None else [{
        "name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
        "algorithm_config": {"rps": 1, "burst": 100}}]}
    if loop:
        spec["loop_detection"] = {"enabled": True, **loop}
    if breaker:
        spec["circuit_breaker"] = {"enabled": True, **breaker}
    return {"bundle_version": version, "policies": [{"id": "agent", "spec": spec}]}


def chat(*messages) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": r, "content": c} for r, c in messages]}).encode()


def tokens_left(engine) -> int:
    bucket = engine.bundle.policies[0].rules[0].bucket
    return int(bucket.peek(rule_key("agent", "per-key", "k1"), engine.clock.now_s()))


def test_policies_without_guards_carry_none():
    engine = make_engine(bundle())
    assert engine.bundle.policies[0].guards is None
    assert engine.hello_reply.needs_body is False
    assert make_engine(bundle(loop={"window_seconds": 5, "threshold_identical_requests": 3,
                                    "action": "reject"})).hello_reply.needs_body is True


def test_identical_requests_trip_reject_and_the_rejected_one_is_not_charged():
    engine = make_engine(bundle(loop={"window_seconds": 30, "threshold_identical_requests": 3, "action": "reject"}),
                         retry_jitter=False)  # the base Retry-After (see test_jitter.py)
    body = chat(("user", "list files"))
    verdicts = [decide(engine, headers=KEY, method="POST", body=body) for _ in range(3)]
    assert [v.status for v in verdicts] == [0, 0, 429]
    assert hdr(verdicts[2], "X-Fairvisor-Reason") == "loop_detected"
    assert hdr(verdicts[2], "Retry-After") == "30"
    assert tokens_left(engine) == 98  # two charged; the looping third was undone
    assert engine.metrics.loop_detected.values == {("agent",): 1}
    # A different body, another key, another method or path: a different fingerprint.
    assert decide(engine, headers=KEY, method="POST", body=chat(("user", "read a.txt"))).status == 0
    assert decide(engine, headers={"X-Api-Key": "k2"}, method="POST", body=body).status == 0
    assert decide(engine, headers=KEY, method="PUT", body=body).status == 0
    assert decide(engine, headers=KEY, method="POST", uri="/v1/other", body=body).status == 0


def test_llm_fingerprint_is_the_last_user_message_and_tool_result_not_the_history():
    engine = make_engine(bundle(loop={"window_seconds": 30, "threshold_identical_requests": 3, "action": "reject"}))
    history = [("user", "fix the build"), ("assistant", "running make")]
    statuses = []
    for turn in range(3):  # the history grows, the tool keeps answering the same
        history += [("assistant", f"call {turn}"), ("tool", "error: missing header")]
        statuses.append(decide(engine, headers=KEY, method="POST", body=chat(*history)).status)
    assert statuses == [0, 0, 429]
    # A new tool result is progress, not a loop.
    history += [("tool", "build ok")]
    assert decide(engine, headers=KEY, method="POST", body=chat(*history)).status == 0


def test_a_chat_body_is_decoded_once_when_an_llm_rule_and_loop_detection_both_read_it(monkeypatch):
    import pyengine.guards.fingerprint as fingerprint_mod
    import pyengine.llm.request as request_mod

    decoded = []
    for mod, name in ((request_mod, "decode_chat_body"), (fingerprint_mod, "decode_chat")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda body, real=real, name=name: decoded.append(name) or real(body))
    tpm = {"name": "tpm", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket_llm",
           "algorithm_config": {"tokens_per_minute": 100000}}
    engine = make_engine(bundle(loop={"window_seconds": 30, "threshold_identical_requests": 3, "action": "reject"},
                                rules=[tpm]))
    body = chat(("user", "list files"))
    assert [decide(engine, headers=KEY, method="POST", body=body).status for _ in range(3)] == [0, 0, 429]
    assert decoded == ["decode_chat_body"] * 3  # the fingerprint used the LLM rule's decode


def test_throttle_and_warn_actions_allow_with_a_warning():
    throttle = make_engine(bundle(loop={"window_seconds": 10, "threshold_identical_requests": 2, "action": "throttle"}))
    v = [decide(throttle, headers=KEY, body=b"same") for _ in range(2)][1]
    assert v.status == 0 and v.delay_ms == 10_000 and hdr(v, "X-Fairvisor-Warning") == "loop_throttle"
    warn = make_engine(bundle(loop={"window_seconds": 10, "threshold_identical_requests": 2, "action": "warn"}))
    v = [decide(warn, headers=KEY, body=b"same") for _ in range(2)][1]
    assert v.status == 0 and v.delay_ms == 0 and hdr(v, "X-Fairvisor-Warning") == "loop_warn"
    assert warn.metrics.loop_detected.values == {("agent",): 1}


def test_loop_window_slides_in_engine_time():
    clock = FakeClock()
    engine = make_engine(bundle(loop={"window_seconds": 2, "threshold_identical_requests": 3, "action": "reject"}),
                         clock=clock)
    seen = []
    for dt in (0, 1.0, 1.3, 0.1):  # t = 0, 1.0, 2.3, 2.4
        clock.advance(dt)
        seen.append(decide(engine, headers=KEY, body=b"x").status)
    assert seen == [0, 0, 0, 429]  # at 2.3 the first left the window; at 2.4 three are inside


def cost_rules(budget=1000):
    return [{"name": "spend", "limit_keys": ["header:x-api-key"], "algorithm": "cost_based",
             "algorithm_config": {"budget": budget, "period": "1d", "cost_key": "header:x-cost",
                                  "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}]


def spend(engine, cost):
    return decide(engine, headers={**KEY, "X-Cost": str(cost)})


def test_breaker_opens_half_opens_and_closes_with_gauges():
    clock = FakeClock(1_767_225_600.0)
    engine = make_engine(bundle(rules=cost_rules(), breaker={"spend_rate_threshold_per_minute": 10,
                                                             "auto_reset_after_minutes": 0.5}), clock=clock,
                         retry_jitter=False)  # the base Retry-After (see test_jitter.py)
    budget = engine.bundle.policies[0].rules[0].budget
    assert spend(engine, 6).status == 0
    assert spend(engine, 4).status == 0  # exactly 10 per minute
    v = spend(engine, 1)
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "circuit_breaker_open"
    assert hdr(v, "Retry-After") == "30"
    assert budget.peek(rule_key("agent", "spend", "k1"), clock.now_s()) == 990 * 10**6  # the refused 1 was not charged
    engine._guard_gauges()
    assert engine.metrics.circuit_state.values == {("agent",): 1}
    assert engine.metrics.circuit_breakers.values[("agent", "open")] == 1
    clock.advance(10)
    assert hdr(spend(engine, 0.5), "Retry-After") == "20"  # open: everything refused
    clock.advance(20)
    assert spend(engine, 3).status == 0  # half-open: allowed, counted afresh
    engine._guard_gauges()
    assert engine.metrics.circuit_state.values == {("agent",): 2}
    assert engine.metrics.circuit_breakers.values[("agent", "half_open")] == 1
    clock.advance(30)  # probation = reset (30 s) without tripping
    assert spend(engine, 3).status == 0
    engine._guard_gauges()
    assert engine.metrics.circuit_state.values == {("agent",): 0}
    assert engine.tripped == {}


def test_breaker_spend_is_undone_when_a_later_policy_refuses():
    b = bundle(rules=cost_rules(), breaker={"spend_rate_threshold_per_minute": 10, "auto_reset_after_minutes": 1})
    b["policies"].append({"id": "strict", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "once", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 0.001, "burst": 1}}]}})
    engine = make_engine(b)
    assert spend(engine, 4).status == 0
    assert spend(engine, 4).status == 429  # refused by "strict": the 4 must leave the breaker too
    breaker = engine.bundle.policies[0].guards.breaker
    assert breaker.rate(keys.one_value(keys.breaker_prefix("agent"), "k1"), engine.clock.now_s()) == 4_000_000  # micro-units


def test_breaker_on_llm_tokens_and_missing_primary_key_skips():
    rules = [{"name": "tpm", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket_llm",
              "algorithm_config": {"tokens_per_minute": 100_000}}]
    engine = make_engine(bundle(rules=rules, breaker={"spend_rate_threshold_per_minute": 2500,
                                                      "auto_reset_after_minutes": 1}))
    body = json.dumps({"model": "m", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}).encode()
    assert [decide(engine, headers=KEY, body=body, method="POST").status for _ in range(3)] == [0, 0, 429]
    assert decide(engine, body=body, method="POST").status == 0  # no key: rule and breaker skipped


def test_shadow_policy_guards_never_change_the_verdict():
    engine = make_engine(bundle(mode="shadow", loop={"window_seconds": 30, "threshold_identical_requests": 2,
                                                     "action": "reject"}))
    verdicts = [decide(engine, headers=KEY, body=b"same") for _ in range(3)]
    assert all(v.status == 0 and v.headers == [] and v.delay_ms == 0 for v in verdicts)
    assert engine.metrics.would_reject.values == {("agent", "loop_detected"): 2}
    assert any(k.startswith(keys.loop_prefix("agent", True)) for k in engine.store._data)


def test_global_shadow_keeps_enforce_guard_state_untouched():
    b = bundle(rules=cost_rules(), breaker={"spend_rate_threshold_per_minute": 1, "auto_reset_after_minutes": 1})
    b["global_shadow"] = {"enabled": True}
    engine = make_engine(b)
    assert [spend(engine, 1).status for _ in range(3)] == [0, 0, 0]
    assert engine.metrics.would_reject.values == {("agent", "circuit_breaker_open"): 2}
    assert engine.store.get(keys.one_value(keys.breaker_prefix("agent"), "k1")) is None
    assert engine.store.get(keys.one_value(keys.breaker_prefix("agent", True), "k1")) is not None


def test_kill_switch_hits_are_counted_in_the_store():
    b = bundle()
    b["kill_switches"] = [{"scope_key": "header:x-api-key", "scope_value": "k1"}]
    engine = make_engine(b)
    for _ in range(3):
        assert decide(engine, headers=KEY).status == 429
    engine._guard_gauges()
    assert list(engine.metrics.kill_switch_hits.values.values()) == [3]
    assert "k1" not in str(engine.metrics.kill_switch_hits.values)  # a digest, never the tenant value
