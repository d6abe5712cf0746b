"""The `concurrency` rule in the engine: leases released by Settle (completion, abort, upstream
error), by POST /v1/usage in the decision service, by a later rule's rejection, or at lease_s."""

import json

import pytest

from pyengine.clock import FakeClock
from pyengine.errors import PolicyError
from pyengine.protocol.messages import Settle, Usage

from .helpers import decide, described, hdr, make_engine


def bundle(max_in_flight=2, lease_s=60, extra=()):
    return {"bundle_version": 1, "policies": [{"id": "p", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "in-flight", "limit_keys": ["header:x-tenant"], "algorithm": "concurrency",
         "algorithm_config": {"max_in_flight": max_in_flight, "lease_s": lease_s}}, *extra]}}]}


T = {"X-Tenant": "t1"}
CHAT = json.dumps({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}).encode()


def proxy(**kw):
    return make_engine(bundle(**kw), clock=FakeClock(), mode="reverse_proxy", backend_url="http://127.0.0.1:9")


def call(e, tenant="t1"):
    return decide(e, headers={"X-Tenant": tenant}, method="POST", uri="/v1/chat/completions", body=CHAT)


def settle(e, v, **kw):
    args = {"status": 200, "counted_tokens": 0, "cut": False, "tail": b""}
    args.update(kw)
    return e.handle(Settle(reservation_id=v.reservation_id, **args))


def test_the_limit_holds_and_the_rejection_is_concurrency_exceeded_in_the_provider_shape():
    e = proxy()
    a, b = call(e), call(e)
    assert a.status == b.status == 0 and a.reservation_id and a.settle_bytes > 0
    assert hdr(b, "RateLimit-Remaining") == "0"
    c = call(e)
    assert c.status == 429 and hdr(c, "X-Fairvisor-Reason") == "concurrency_exceeded"
    assert hdr(c, "Retry-After") == "1"
    assert json.loads(c.body)["error"]["type"] == "rate_limit_error"
    assert call(e, tenant="t2").status == 0  # per key


@pytest.mark.parametrize("how", [
    {"status": 200},  # the answer completed
    {"status": 200, "client_aborted": True, "counted_tokens": 3},  # the client went away mid-stream
    {"status": 0, "client_aborted": True, "upstream_bytes_sent": 100},  # before the headers
    {"status": 502},  # the upstream failed
    {"status": 0},  # the upstream was never reached
])
def test_every_end_of_the_answer_releases_the_slot(how):
    e = proxy(max_in_flight=1)
    v = call(e)
    assert call(e).status == 429
    settle(e, v, **how)
    assert call(e).status == 0


def test_a_request_never_reported_finished_stops_counting_at_lease_s():
    e = proxy(max_in_flight=1, lease_s=30)
    call(e)
    e.clock.advance(29)
    assert call(e).status == 429
    e.clock.advance(1)
    assert call(e).status == 0


def test_a_later_rule_rejecting_gives_the_slot_back():
    tight = {"name": "tpm", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
             "algorithm_config": {"tokens_per_minute": 100}}
    e = make_engine(bundle(max_in_flight=1, extra=[tight]), clock=FakeClock(), mode="reverse_proxy",
                    backend_url="http://127.0.0.1:9")
    big = json.dumps({"model": "m", "max_tokens": 1000}).encode()
    r = decide(e, headers=T, method="POST", uri="/v1/chat/completions", body=big)
    assert hdr(r, "X-Fairvisor-Reason") == "tpm_exceeded"
    assert call(e).status == 0  # the rejected request holds no slot


def test_decision_service_releases_by_usage_report_or_lease():
    e = make_engine(bundle(max_in_flight=1, lease_s=60), clock=FakeClock())
    first = described(e, method="POST", uri="/v1/chat/completions", headers=T)
    rid = hdr(first, "X-Fairvisor-Reservation")
    assert first.status == 0 and rid
    assert described(e, method="POST", uri="/v1/chat/completions", headers=T).status == 429
    report = json.dumps({"reservation_id": rid, "prompt_tokens": 0, "completion_tokens": 0}).encode()
    assert e.handle(Usage(body=report)).status == 200
    assert described(e, method="POST", uri="/v1/chat/completions", headers=T).status == 0
    e.clock.advance(60)
    assert described(e, method="POST", uri="/v1/chat/completions", headers=T).status == 0  # lease ended


@pytest.mark.parametrize("cfg,message", [
    ({"max_in_flight": 0}, "max_in_flight"),
    ({"max_in_flight": 1.5}, "max_in_flight"),
    ({"max_in_flight": 10_001}, "max_in_flight"),
    ({"max_in_flight": 2, "lease_s": 0}, "lease_s"),
    ({"max_in_flight": 2, "burst": 3}, "burst"),
    ({}, "max_in_flight"),
])
def test_bad_configs_are_refused_at_their_path(cfg, message):
    b = bundle()
    b["policies"][0]["spec"]["rules"][0]["algorithm_config"] = cfg
    with pytest.raises(PolicyError) as exc:
        make_engine(b)
    assert any("$.policies[0].spec.rules[0].algorithm_config" in err and message in err for err in exc.value.errors)
