"""The engine half of the LLM reverse proxy: streaming recipes on allow, settlement of Settle frames."""

import json

from pyengine.clock import FakeClock
from pyengine.devtools import llm_formats as fmt
from pyengine.protocol.messages import Settle

from .helpers import decide, hdr, make_engine, rule_key

BUNDLE = {
    "bundle_version": 1,
    "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/v1/"}, "rules": [
        {"name": "tpm", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": 6000, "max_completion_tokens": 500}}]}}],
}
T = {"X-Tenant": "t1"}


def proxy_engine(fmt_name="openai"):
    return make_engine(BUNDLE, clock=FakeClock(), mode="reverse_proxy", backend_url="http://127.0.0.1:9",
                       llm_format=fmt_name)


def chat(stream=True, max_tokens=100, **extra):
    body = {"model": "gpt-4o-mini", "stream": stream, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "x" * 400}], **extra}
    return json.dumps(body).encode()


def sse(events) -> bytes:
    return "".join((f"event: {n}\n" if n else "") + f"data: {json.dumps(d)}\n\n" for n, d in events).encode()


def remaining(engine) -> int:
    return engine.bundle.policies[0].rules[0].limiter.peek(rule_key("llm", "tpm", "t1"), engine.clock.now_s())


def test_openai_stream_gets_a_recipe_and_include_usage_added():
    engine = proxy_engine()
    v = decide(engine, headers=T, method="POST", uri="/openai/v1/chat/completions", body=chat())
    assert v.status == 0 and v.reservation_id and v.allowance_tokens == 100
    assert v.count_regex and v.chars_per_token_milli == 4000 and v.settle_bytes > 0
    assert "finish_reason" in v.cutoff and v.cutoff.endswith("data: [DONE]\n\n")
    assert json.loads(v.new_body)["stream_options"] == {"include_usage": True}
    assert v.drop_regex  # the client did not ask for usage: the extra chunk is hidden
    asked = decide(engine, headers=T, method="POST", uri="/v1/chat/completions",
                   body=chat(stream_options={"include_usage": True}))
    assert asked.new_body is None and asked.drop_regex == ""


def test_exact_settlement_refunds_and_teaches_the_output_ratio():
    engine = proxy_engine()
    v = decide(engine, headers=T, method="POST", uri="/v1/chat/completions", body=chat(max_tokens=300))
    assert remaining(engine) == 6000 - (100 + 300)
    tail = sse((None, e) for e in fmt.openai_stream("gpt-4o-mini", 90, 40, include_usage=True))
    chars = sum(len(fmt.token_text(i)) for i in range(40))
    reply = engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=chars // 4, cut=False,
                                 tail=tail, counted_chars=chars))
    assert reply.status == 200 and json.loads(reply.body)["completion_tokens"] == 40
    assert remaining(engine) == 6000 - (90 + 40)  # budget minus actual usage, exactly
    assert engine.llm_proxy.estimator.output.get("gpt-4o-mini") == chars / 40
    assert engine.llm_proxy.estimator.prompt.get("gpt-4o-mini") == 400 / 90
    nxt = decide(engine, headers=T, method="POST", uri="/v1/chat/completions", body=chat())
    assert nxt.chars_per_token_milli == int(chars / 40 * 1000)
    assert engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=0, cut=False)).status == 404


def test_cut_stream_charges_what_was_sent_and_longer_answers_are_charged():
    engine = proxy_engine("anthropic")
    v = decide(engine, headers=T, method="POST", uri="/v1/messages", body=chat(max_tokens=50))
    head = sse(list(fmt.anthropic_stream("claude", 100, 400))[:30])
    engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=52, cut=True, tail=head,
                         counted_chars=208))
    assert remaining(engine) == 6000 - (100 + 52)
    v2 = decide(engine, headers=T, method="POST", uri="/v1/messages", body=chat(stream=False, max_tokens=50))
    body = json.dumps(fmt.anthropic_response("claude", 100, 450)).encode()  # far over what was reserved
    engine.handle(Settle(reservation_id=v2.reservation_id, status=200, counted_tokens=0, cut=False, tail=body))
    assert remaining(engine) == 6000 - (100 + 52) - (100 + 450)


def test_upstream_errors_refund_and_aborted_clients_pay_what_they_got():
    engine = proxy_engine("gemini")
    path = "/v1/models/gemini-2.0-flash:streamGenerateContent"
    v = decide(engine, headers=T, method="POST", uri=path, body=chat())
    engine.handle(Settle(reservation_id=v.reservation_id, status=500, counted_tokens=0, cut=False, tail=b"{}"))
    assert remaining(engine) == 6000
    v = decide(engine, headers=T, method="POST", uri=path, body=chat())
    part = sse((None, e) for e in list(fmt.gemini_stream("gemini-2.0-flash", 100, 80))[:20])
    engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=18, cut=False, tail=part,
                         client_aborted=True))
    assert remaining(engine) == 6000 - (100 + 20)  # Gemini's running total of what was generated
    openai = proxy_engine("openai")
    v = decide(openai, headers=T, method="POST", uri="/v1/chat/completions", body=chat())
    part = sse((None, e) for e in list(fmt.openai_stream("gpt-4o-mini", 100, 80, include_usage=True))[:20])
    openai.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=18, cut=False, tail=part,
                         client_aborted=True))
    assert remaining(openai) == 6000 - (100 + 18)  # no usage chunk arrived: the counted tokens are charged


def test_rejections_use_the_provider_error_shape():
    engine = make_engine({**BUNDLE, "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "tpm", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": 100}}]}}]}, clock=FakeClock(), mode="reverse_proxy",
        backend_url="http://127.0.0.1:9", llm_format="anthropic")
    v = decide(engine, headers=T, method="POST", uri="/v1/messages", body=chat(max_tokens=1000))
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "tpm_exceeded"
    assert json.loads(v.body) == {"type": "error", "error": {"type": "rate_limit_error",
                                                             "message": json.loads(v.body)["error"]["message"]}}


def test_settles_the_shim_could_not_deliver_are_counted_lost_when_reported():
    from pyengine.protocol.messages import Hello, Metrics
    engine = proxy_engine()
    engine.handle(Hello(protocol_version=1, engine_unavailable_delta=1, settle_lost_delta=2))
    engine.handle(Metrics(engine_unavailable_delta=0, settle_lost_delta=1))
    assert engine.metrics.llm_settlements.values[("lost",)] == 3
    assert engine.metrics.engine_unavailable.values[()] == 1
