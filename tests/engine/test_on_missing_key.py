"""on_missing_key (contract §1): a request without the rule's key is skipped, refused, or counted on one shared counter."""

import json

import msgspec
import pytest

from pyengine.explain import explain_request
from pyengine.protocol.messages import SURFACE_DESCRIBED, Decide
from pyengine.state import keys

from .helpers import described, hdr, make_engine, one_rule_bundle, rule_key


def tenant_rule(on_missing_key=None, burst=2):
    rule = {"name": "per-tenant", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket",
            "algorithm_config": {"rps": 0.001, "burst": burst}}
    if on_missing_key is not None:
        rule["on_missing_key"] = on_missing_key
    return rule


@pytest.mark.parametrize("setting", [None, "skip"])
def test_skip_is_the_default_and_counts_the_skip(setting):
    engine = make_engine(one_rule_bundle(tenant_rule(setting)))
    assert [described(engine).status for _ in range(5)] == [0] * 5
    assert engine.metrics.rule_skipped.values[("p1", "per-tenant")] == 5


def test_reject_refuses_with_missing_limit_key_and_undoes_earlier_charges():
    ip_rule = {"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
               "algorithm_config": {"rps": 1, "burst": 10}}
    bundle = {"bundle_version": 1, "policies": [{"id": "p1", "spec": {"selector": {"pathPrefix": "/"},
                                                                      "rules": [ip_rule, tenant_rule("reject")]}}]}
    engine = make_engine(bundle)
    v = described(engine, xff="10.0.0.1")
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "missing_limit_key"
    body = json.loads(v.body)
    assert body["reason"] == "missing_limit_key" and body["violated-policies"] == ["p1"]
    assert hdr(v, "Retry-After") is None  # waiting does not help: the request must carry the key
    bucket = engine.bundle.policies[0].rules[0].bucket
    assert bucket.peek(rule_key("p1", "per-ip", "10.0.0.1"), engine.clock.now_s()) == 10  # not charged
    assert described(engine, xff="10.0.0.1", headers={"X-Tenant": "t"}).status == 0
    assert engine.metrics.decisions.values[("reject", "missing_limit_key", "p1")] == 1


def test_shared_counts_every_keyless_request_on_one_counter_apart_from_any_value():
    engine = make_engine(one_rule_bundle(tenant_rule("shared")))
    assert [described(engine).status for _ in range(3)] == [0, 0, 429]  # all keyless requests together
    # No value shares that counter, whatever it looks like.
    for value in ("-", "", "0:", keys.ABSENT, "R2:p110:per-tenant-"):
        assert described(engine, headers={"X-Tenant": value}).status == 0, value
    assert engine.store.get(keys.absent(keys.rule_prefix("p1", "per-tenant"))) is not None


def test_shadow_policy_with_reject_only_records_a_would_reject():
    engine = make_engine(one_rule_bundle(tenant_rule("reject"), mode="shadow"))
    assert described(engine).status == 0
    assert engine.metrics.would_reject.values[("p1", "missing_limit_key")] == 1


def test_a_fallback_rule_leaves_missing_key_handling_unchanged():
    # A policy with a fallback rule (a rule without `match` always applies, so the fallback
    # never runs): same answers as without one.
    plain = make_engine(one_rule_bundle(tenant_rule("reject")))
    general = make_engine(one_rule_bundle(tenant_rule("reject"), fallback_limit={
        **tenant_rule(), "name": "fallback", "limit_keys": ["ip:address"]}))
    assert general.bundle.policies[0].fallback is not None and plain.bundle.policies[0].fallback is None
    for engine in (plain, general):
        assert described(engine).status == 429
        assert described(engine, headers={"X-Tenant": "t"}).status == 0


def test_explain_says_which_key_was_missing_and_what_the_rule_did():
    for setting, status in (("reject", "reject"), ("shared", "allow")):
        engine = make_engine(one_rule_bundle(tenant_rule(setting)))
        hello = engine.hello_reply
        headers = {"x-original-method": b"GET", "x-original-uri": b"/"}
        msg = Decide(generation=hello.generation, surface=SURFACE_DESCRIBED, method=b"POST", uri=b"/v1/decision",
                     host=b"h", remote_addr=b"127.0.0.1", headers=[headers.get(h) for h in hello.headers])
        msg = msgspec.msgpack.decode(msgspec.msgpack.encode(msg), type=Decide)
        entry = explain_request(engine, msg)["policies"][0]["rules"][0]
        assert entry["status"] == status and "missing key: header:x-tenant" in entry["why"], entry
        assert setting in entry["why"]
