"""`llm:model` as a limit key and in `match`: per-model token limits inside one tenant."""

import json

import pytest

from pyengine.clock import FakeClock
from pyengine.errors import PolicyError

from .helpers import decide, described, hdr, make_engine

BUNDLE = {
    "bundle_version": 1,
    "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "gpt4o", "limit_keys": ["header:x-tenant", "llm:model"], "match": {"llm:model": "gpt-4o"},
         "algorithm": "token_bucket_llm", "algorithm_config": {"tokens_per_minute": 300}},
        {"name": "per-model", "limit_keys": ["header:x-tenant", "llm:model"],
         "algorithm": "token_bucket_llm", "algorithm_config": {"tokens_per_minute": 1000}},
    ]}}],
}
T = {"X-Tenant": "t1"}


def chat(model, max_tokens=100):
    return json.dumps({"model": model, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": "x" * 400}]}).encode()  # 100 prompt tokens


def engine():
    return make_engine(BUNDLE, clock=FakeClock(), mode="reverse_proxy", backend_url="http://127.0.0.1:9")


def call(e, model, tenant="t1", uri="/v1/chat/completions"):
    return decide(e, headers={"X-Tenant": tenant}, method="POST", uri=uri, body=chat(model))


def test_a_model_with_its_own_rule_runs_out_while_the_others_go_on():
    e = engine()
    assert call(e, "gpt-4o").status == 0  # 200 of gpt-4o's 300
    over = call(e, "gpt-4o")
    assert over.status == 429 and hdr(over, "X-Fairvisor-Reason") == "tpm_exceeded"
    assert hdr(over, "RateLimit-Policy") == '"gpt4o";q=300;w=60'
    for _ in range(5):  # 5 x 200 = the 1000 of gpt-4o-mini's own counter
        assert call(e, "gpt-4o-mini").status == 0
    assert call(e, "gpt-4o-mini").status == 429
    assert call(e, "claude-3-5-haiku", uri="/v1/messages").status == 0  # another model, another counter
    assert call(e, "gpt-4o", tenant="t2").status == 0  # another tenant, another counter


def test_gemini_takes_the_model_from_its_path():
    e = engine()
    body = json.dumps({"contents": [{"parts": [{"text": "x" * 400}]}], "generationConfig": {"maxOutputTokens": 100}})
    for _ in range(5):
        v = decide(e, headers=T, method="POST", uri="/gemini/v1beta/models/gemini-2.0-flash:generateContent",
                   body=body.encode())
        assert v.status == 0
    v = decide(e, headers=T, method="POST", uri="/v1beta/models/gemini-2.0-flash:generateContent", body=body.encode())
    assert v.status == 429
    other = decide(e, headers=T, method="POST", uri="/v1/models/gemini-2.5-pro:generateContent", body=body.encode())
    assert other.status == 0


def test_a_request_without_a_model_skips_model_rules():
    e = engine()
    v = decide(e, headers=T, method="POST", uri="/v1/chat/completions", body=b'{"messages": []}')
    assert v.status == 0 and not v.reservation_id
    assert e.metrics.rule_skipped.values[("llm", "per-model")] == 1


@pytest.mark.parametrize("hostile", ["gpt-4o\x00t2", "a\x1fb", "", "gpt-4o" + "\u0000" * 3, "x" * 5000])
def test_hostile_model_names_neither_crash_nor_share_a_counter(hostile):
    e = engine()
    for _ in range(5):
        call(e, "gpt-4o-mini")
    assert call(e, "gpt-4o-mini").status == 429
    v = call(e, hostile)
    assert v.status in (0, 429) and hdr(v, "X-Fairvisor-Reason") != "engine_error"
    if hostile:  # a different model has a fresh counter
        assert v.status == 0


def test_decision_service_reads_the_model_of_a_gemini_uri():
    e = make_engine(BUNDLE, clock=FakeClock())
    uri = "/v1beta/models/gemini-2.0-flash:generateContent"
    statuses = [described(e, method="POST", uri=uri, headers={**T, "X-Token-Estimate": "100"}).status
                for _ in range(12)]
    # 1000 a minute on (t1, gemini-2.0-flash): each reserves 100 + the default 1000 completion
    # (over the 1000-token bucket), so the first is already refused: keyed, not skipped.
    assert statuses[0] == 429


def test_llm_model_is_a_valid_key_and_a_closed_set_is_not_imposed():
    bad = json.loads(json.dumps(BUNDLE))
    bad["policies"][0]["spec"]["rules"][0]["limit_keys"] = ["llm:models"]
    with pytest.raises(PolicyError, match=r"invalid limit key \"llm:models\""):
        make_engine(bad)
