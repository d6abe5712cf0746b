"""LLM reservations at the engine: reserve on decide, settle through POST /v1/usage."""

import json

from pyengine.clock import FakeClock
from pyengine.protocol.messages import Usage

from .helpers import decide, described, hdr, make_engine, rule_key, unsigned_jwt

ORG = {"Authorization": "Bearer " + unsigned_jwt({"org_id": "acme"})}
BUNDLE = {
    "bundle_version": 1,
    "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/v1/"}, "rules": [
        {"name": "tpm", "limit_keys": ["jwt:org_id"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": 1000, "tokens_per_day": 5000, "max_prompt_tokens": 300,
                              "max_completion_tokens": 200, "default_max_completion": 100}},
        {"name": "usd", "limit_keys": ["jwt:org_id"], "algorithm": "cost_based",
         "algorithm_config": {"budget": 1, "period": "1d", "cost_key": "llm_usd",
                              "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}]}}],
    "pricing": {"gpt-4o-mini": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 4}},
}


def chat(max_tokens=None, content="x" * 400, model="gpt-4o-mini"):
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if max_tokens:
        body["max_tokens"] = max_tokens
    return json.dumps(body).encode()


def usage(engine, **report):
    reply = engine.handle(Usage(body=json.dumps(report).encode()))
    return reply.status, json.loads(reply.body)


def test_reserve_prompt_estimate_plus_capped_completion_then_refund_on_usage():
    engine = make_engine(BUNDLE, clock=FakeClock())
    v = decide(engine, headers=ORG, method="POST", uri="/v1/chat/completions", body=chat(max_tokens=500))
    # 400 chars / 4 = 100 prompt tokens + min(500, max_completion_tokens 200) = 300 reserved.
    assert v.status == 0 and v.reservation_id
    assert hdr(v, "RateLimit") == '"tpm";r=700;t=18'
    status, body = usage(engine, reservation_id=v.reservation_id, prompt_tokens=90, completion_tokens=10,
                         model="gpt-4o-mini")
    assert status == 200 and body["reserved_tokens"] == 300 and body["actual_tokens"] == 100
    tpm = engine.bundle.policies[0].rules[0].limiter
    assert tpm.peek(rule_key("llm", "tpm", "acme"), engine.clock.now_s()) == 900  # 1000 - actual usage, exactly
    usd = engine.bundle.policies[0].rules[1].budget
    assert usd.peek(rule_key("llm", "usd", "acme"), engine.clock.now_s()) == 1_000_000 - (90 * 1 + 10 * 4)
    # Settling twice is refused, and charges nothing, not even the settled-tokens counter.
    assert usage(engine, reservation_id=v.reservation_id, prompt_tokens=1, completion_tokens=1)[0] == 404
    assert engine.metrics.tokens_settled.values == {("prompt",): 90, ("completion",): 10}


def test_excess_usage_is_charged():
    engine = make_engine(BUNDLE, clock=FakeClock())
    v = decide(engine, headers=ORG, method="POST", uri="/v1/chat/completions", body=chat(max_tokens=50))
    usage(engine, reservation_id=v.reservation_id, prompt_tokens=100, completion_tokens=400)  # reserved 150
    tpm = engine.bundle.policies[0].rules[0].limiter
    assert tpm.peek(rule_key("llm", "tpm", "acme"), engine.clock.now_s()) == 500


def test_tpm_then_tpd_exceeded():
    clock = FakeClock()
    engine = make_engine(BUNDLE, clock=clock, retry_jitter=False)  # the base Retry-After (see test_jitter.py)
    body = chat(max_tokens=200)  # 300 tokens each
    statuses = [decide(engine, headers=ORG, method="POST", uri="/v1/x", body=body) for _ in range(4)]
    assert [v.status for v in statuses] == [0, 0, 0, 429]
    assert hdr(statuses[3], "X-Fairvisor-Reason") == "tpm_exceeded"
    assert hdr(statuses[3], "Retry-After") == "12"  # 200 tokens short at 1000/60 per second
    # 5000/day: after 16 allowed requests (4800 tokens) the day is spent, whatever the minute says.
    allowed = 3
    for _ in range(40):
        clock.advance(60)
        if decide(engine, headers=ORG, method="POST", uri="/v1/x", body=body).status == 0:
            allowed += 1
        else:
            break
    assert allowed == 16
    v = decide(engine, headers=ORG, method="POST", uri="/v1/x", body=body)
    assert hdr(v, "X-Fairvisor-Reason") == "tpd_exceeded"


def test_prompt_and_price_rejections():
    engine = make_engine(BUNDLE, clock=FakeClock())
    v = decide(engine, headers=ORG, method="POST", uri="/v1/x", body=chat(content="y" * 1300))
    assert hdr(v, "X-Fairvisor-Reason") == "prompt_tokens_exceeded"
    v = decide(engine, headers=ORG, method="POST", uri="/v1/x", body=chat(model="unpriced-model"))
    assert hdr(v, "X-Fairvisor-Reason") == "unknown_model_price"
    # Neither rejection charged the TPM bucket.
    tpm = engine.bundle.policies[0].rules[0].limiter
    assert tpm.peek(rule_key("llm", "tpm", "acme"), engine.clock.now_s()) == 1000


def test_decision_service_estimate_header_and_usage_by_key():
    # No body on the decision surface, so no model: the "*" price applies.
    bundle = {**BUNDLE, "pricing": {**BUNDLE["pricing"], "*": {"input_usd_per_mtok": 2, "output_usd_per_mtok": 8}}}
    engine = make_engine(bundle, clock=FakeClock())
    v = described(engine, method="POST", uri="/v1/chat/completions", headers={**ORG, "X-Token-Estimate": "250"})
    # No body on the decision surface: 250 estimated prompt + default_max_completion 100.
    assert v.status == 0 and hdr(v, "X-Fairvisor-Reservation") == v.reservation_id
    assert hdr(v, "RateLimit") == '"tpm";r=650;t=21'
    status, body = usage(engine, key="acme", prompt_tokens=10, completion_tokens=0, model="gpt-4o-mini")
    assert status == 200 and body["rules_charged"] == 2


def test_bad_usage_reports_are_refused_with_reasons():
    engine = make_engine(BUNDLE, clock=FakeClock())
    assert usage(engine, prompt_tokens=1, completion_tokens=1)[0] == 400
    assert usage(engine, reservation_id="x", key="y", prompt_tokens=1, completion_tokens=1)[0] == 400
    assert usage(engine, reservation_id="x", prompt_tokens=-1, completion_tokens=1)[0] == 400
    status, body = usage(engine, reservation_id="x", prompt_tokens=1, completion_tokens=1, extra=1)
    assert status == 400 and "extra" in body["detail"]
    reply = engine.handle(Usage(body=b"\xff not json"))
    assert reply.status == 400


def test_bodies_with_invalid_utf8_are_decided_not_crashed():
    engine = make_engine(BUNDLE, clock=FakeClock())
    for body in (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\xff\xfe"}]}', b"\x80\x81",
                 b'{"model":"\xff"}', b"[" * 100_000):
        v = decide(engine, headers=ORG, method="POST", uri="/v1/x", body=body)
        assert v.status in (0, 429)  # a verdict, never an engine error (which would mean fail-open)


def test_non_utf8_string_field_in_a_frame_is_a_bad_frame():
    from pyengine.errors import ProtocolError
    from pyengine.protocol.framing import decode_request
    settle_with_bad_id = b"\x96\x03\xa1\xff\xcc\xc8\x00\xc2\xc4\x00"
    try:
        decode_request(settle_with_bad_id)
        raise AssertionError("decoded")
    except ProtocolError as exc:
        assert exc.code == "bad_frame"
