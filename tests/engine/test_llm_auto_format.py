"""FAIRVISOR_LLM_FORMAT=auto in the engine: each request's recipe, rejection and settlement in its own format."""

import json

from pyengine.clock import FakeClock
from pyengine.config import from_env
from pyengine.devtools import llm_formats as fmt
from pyengine.protocol.messages import Settle

from .helpers import decide, hdr, make_engine, rule_key

TPM = 6000
BUNDLE = {
    "bundle_version": 1,
    "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "tpm", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": TPM, "max_completion_tokens": 500}}]}}],
}
T = {"X-Tenant": "t1"}
PROMPT = "x" * 400  # 100 tokens at the starting 4 chars per token


def auto_engine():
    return make_engine(BUNDLE, clock=FakeClock(), mode="reverse_proxy", backend_url="http://127.0.0.1:9")


def remaining(engine) -> int:
    return engine.bundle.policies[0].rules[0].limiter.peek(rule_key("llm", "tpm", "t1"), engine.clock.now_s())


def sse(events) -> bytes:
    return "".join((f"event: {n}\n" if n else "") + f"data: {json.dumps(d)}\n\n" for n, d in events).encode()


def anthropic_body(max_tokens=100, stream=True):
    return json.dumps({"model": "claude-3-5-haiku", "max_tokens": max_tokens, "stream": stream,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()


def test_reverse_proxy_defaults_to_auto_and_none_is_a_plain_proxy():
    base = {"FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_BACKEND_URL": "http://127.0.0.1:9"}
    assert from_env(base).llm_format == "auto"
    assert from_env({**base, "FAIRVISOR_LLM_FORMAT": "none"}).llm_format is None
    assert from_env({}).llm_format is None  # decision service: no format unless asked


def test_per_provider_backends_and_headers_are_read_from_their_variables():
    s = from_env({"FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_BACKEND_URL": "http://127.0.0.1:9",
                  "FAIRVISOR_BACKEND_URL_ANTHROPIC": "https://api.anthropic.com",
                  "FAIRVISOR_ANTHROPIC_UPSTREAM_HEADER_x_api_key": "sk-ant",
                  "FAIRVISOR_GEMINI_UPSTREAM_HEADER_X_Goog_Api_Key": "g-key",
                  "FAIRVISOR_UPSTREAM_HEADER_X_Org": "o"})
    assert s.backend_urls == (("anthropic", "https://api.anthropic.com"),)
    assert s.provider_headers == (("anthropic", "x-api-key", "sk-ant"), ("gemini", "X-Goog-Api-Key", "g-key"))
    assert s.upstream_headers == (("X-Org", "o"),)


def test_anthropic_through_an_auto_edge_is_counted_cut_and_settled_as_anthropic():
    engine = auto_engine()
    v = decide(engine, headers=T, method="POST", uri="/anthropic/v1/messages", body=anthropic_body(max_tokens=50))
    assert v.status == 0 and v.allowance_tokens == 50
    assert "partial_json" in v.count_regex  # Anthropic's counted fields
    assert "message_stop" in v.cutoff and "[DONE]" not in v.cutoff
    assert v.new_body is None and v.drop_regex == ""  # no OpenAI include_usage rewrite
    assert remaining(engine) == TPM - (100 + 50)
    # A complete stream settles on Anthropic's own usage fields: 100 in, 7 out.
    tail = sse(fmt.anthropic_stream("claude-3-5-haiku", 100, 7))
    reply = engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=7, cut=False, tail=tail))
    assert json.loads(reply.body)["settled"] == "exact"
    assert remaining(engine) == TPM - (100 + 7)


def test_shape_alone_picks_the_format_without_a_prefix():
    engine = auto_engine()
    gem = decide(engine, headers=T, method="POST", uri="/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                 body=json.dumps({"contents": [{"parts": [{"text": PROMPT}]}],
                                  "generationConfig": {"maxOutputTokens": 40}}).encode())
    assert "MAX_TOKENS" in gem.cutoff
    oai = decide(engine, headers=T, method="POST", uri="/v1/chat/completions",
                 body=json.dumps({"model": "gpt-4o-mini", "stream": True, "max_tokens": 40,
                                  "messages": [{"role": "user", "content": PROMPT}]}).encode())
    assert oai.cutoff.endswith("data: [DONE]\n\n") and oai.new_body is not None


def test_rejections_take_the_shape_of_the_request_format():
    small = json.loads(json.dumps(BUNDLE))
    small["policies"][0]["spec"]["rules"][0]["algorithm_config"] = {"tokens_per_minute": 100}
    engine = make_engine(small, clock=FakeClock(), mode="reverse_proxy", backend_url="http://127.0.0.1:9")
    ant = decide(engine, headers=T, method="POST", uri="/v1/messages", body=anthropic_body(max_tokens=10_000))
    assert ant.status == 429 and json.loads(ant.body)["type"] == "error"
    gem = decide(engine, headers=T, method="POST", uri="/gemini/v1/models/g:generateContent",
                 body=json.dumps({"generationConfig": {"maxOutputTokens": 10_000}}).encode())
    assert json.loads(gem.body)["error"]["status"] == "RESOURCE_EXHAUSTED"
    oai = decide(engine, headers=T, method="POST", uri="/openai/v1/chat/completions",
                 body=json.dumps({"model": "m", "max_tokens": 10_000}).encode())
    assert json.loads(oai.body)["error"]["type"] == "rate_limit_error"
    plain = decide(engine, headers=T, method="POST", uri="/v1/embeddings",
                   body=json.dumps({"model": "m", "max_tokens": 10_000}).encode())
    assert plain.status == 429 and hdr(plain, "Content-Type") == "application/problem+json"


def test_a_plain_path_is_settled_without_usage_never_for_free():
    engine = auto_engine()
    v = decide(engine, headers=T, method="POST", uri="/v1/embeddings",
               body=json.dumps({"model": "m", "input": PROMPT, "max_tokens": 20}).encode())
    assert v.status == 0 and v.settle_bytes > 0
    assert v.allowance_tokens == 0 and v.cutoff == "" and v.count_regex == ""  # nothing to count or cut
    # Even a body that looks like OpenAI usage is not read on a plain path: the reservation stands.
    body = json.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
    reply = engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=0, cut=False, tail=body))
    assert json.loads(reply.body)["settled"] == "unmetered"
    assert remaining(engine) == TPM - (100 + 20)
    err = decide(engine, headers=T, method="POST", uri="/v1/embeddings",
                 body=json.dumps({"model": "m", "input": PROMPT, "max_tokens": 20}).encode())
    engine.handle(Settle(reservation_id=err.reservation_id, status=503, counted_tokens=0, cut=False))
    assert remaining(engine) == TPM - (100 + 20)  # an upstream error refunds everything


def test_no_policy_loaded_answers_in_the_request_format():
    from pyengine.engine import Engine
    from .helpers import decide as raw_decide

    engine = Engine(from_env({}, mode="reverse_proxy", backend_url="http://127.0.0.1:9"), clock=FakeClock())
    v = raw_decide(engine, method="POST", uri="/anthropic/v1/messages", body=b"{}")
    assert v.status == 503 and json.loads(v.body)["error"]["type"] == "api_error"


def test_a_cut_anthropic_stream_still_teaches_the_prompt_ratio():
    engine = auto_engine()
    v = decide(engine, headers=T, method="POST", uri="/v1/messages", body=anthropic_body(max_tokens=50))
    head = sse(list(fmt.anthropic_stream("claude-3-5-haiku", 80, 400))[:30])  # message_start: 80 prompt tokens
    engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=52, cut=True, tail=head,
                         counted_chars=208))
    assert engine.llm_proxy.estimator.prompt.get("claude-3-5-haiku") == 400 / 80  # 400 prompt characters
    assert engine.llm_proxy.estimator.output.get("claude-3-5-haiku") == 4.0  # no output truth in a cut stream
    assert remaining(engine) == TPM - (80 + 52)  # the provider's prompt, the tokens sent
