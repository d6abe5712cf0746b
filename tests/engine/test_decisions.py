"""The decision pipeline end to end inside the engine: frozen clock, exact numbers."""

import json

from pyengine.clock import FakeClock

from .helpers import decide, described, hdr, make_engine, one_rule_bundle, rule_key, unsigned_jwt

SEED_RULE = {"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
             "algorithm_config": {"tokens_per_second": 5, "burst": 10}}


def test_seed_walkthrough_ten_allowed_then_rejected_with_headers():
    engine = make_engine(one_rule_bundle(SEED_RULE))
    verdicts = [described(engine, xff="10.0.0.1") for _ in range(12)]
    assert [v.status for v in verdicts] == [0] * 10 + [429, 429]
    assert [hdr(v, "RateLimit-Remaining") for v in verdicts[:10]] == [str(n) for n in range(9, -1, -1)]
    rejected = verdicts[10]
    assert hdr(rejected, "X-Fairvisor-Reason") == "rate_limit_exceeded"
    assert hdr(rejected, "Retry-After") == "1"
    assert hdr(rejected, "RateLimit-Policy") == '"per-ip";q=10;w=2'
    assert hdr(rejected, "RateLimit") == '"per-ip";r=0;t=1'
    assert hdr(rejected, "Content-Type") == "application/problem+json"
    body = json.loads(rejected.body)
    assert body["status"] == 429 and body["reason"] == "rate_limit_exceeded"
    assert body["violated-policies"] == ["p1"]
    assert body["type"] == "https://iana.org/assignments/http-problem-types#quota-exceeded"
    # Another client address has its own bucket.
    assert described(engine, xff="10.0.0.2").status == 0


def test_refill_after_half_a_second():
    clock = FakeClock()
    engine = make_engine(one_rule_bundle(SEED_RULE), clock=clock)
    for _ in range(10):
        described(engine, xff="10.0.0.1")
    clock.advance(0.5)
    v = described(engine, xff="10.0.0.1")
    assert v.status == 0 and hdr(v, "RateLimit-Remaining") == "1"  # 2.5 tokens refilled, one spent


def test_untrusted_peer_cannot_spoof_forwarded_for():
    engine = make_engine(one_rule_bundle({**SEED_RULE, "algorithm_config": {"rps": 1, "burst": 1}}))
    # The connection peer 203.0.113.9 is not a trusted proxy: its X-Forwarded-For is ignored.
    first = decide(engine, headers={"X-Forwarded-For": "10.9.9.1"}, remote_addr="203.0.113.9")
    second = decide(engine, headers={"X-Forwarded-For": "10.9.9.2"}, remote_addr="203.0.113.9")
    assert (first.status, second.status) == (0, 429)


def test_rightmost_untrusted_forwarded_address_is_the_client():
    engine = make_engine(one_rule_bundle({**SEED_RULE, "algorithm_config": {"rps": 1, "burst": 1}}))
    assert described(engine, xff="10.0.0.7, 127.0.0.5").status == 0
    # Same client behind a different trusted hop; a spoofed leftmost entry changes nothing.
    assert described(engine, xff="1.2.3.4, 10.0.0.7, 127.0.0.9").status == 429


def test_jwt_org_keys_isolate_orgs_and_garbage_tokens_skip_the_rule():
    rule = {"name": "per-org", "limit_keys": ["jwt:org_id"], "algorithm": "token_bucket",
            "algorithm_config": {"rps": 1, "burst": 2}}
    engine = make_engine(one_rule_bundle(rule))
    a = {"Authorization": "Bearer " + unsigned_jwt({"org_id": "acme"})}
    b = {"Authorization": "Bearer " + unsigned_jwt({"org_id": "globex"})}
    assert [decide(engine, headers=a).status for _ in range(3)] == [0, 0, 429]
    assert decide(engine, headers=b).status == 0
    for junk in ("Bearer not.a.jwt", "Bearer", "Basic abc", "Bearer " + "x" * 5000, "Bearer a.%%%.c"):
        v = decide(engine, headers={"Authorization": junk})
        assert v.status == 0 and v.headers == []  # key missing: rule skipped, never rejected
    assert engine.metrics.rule_skipped.values[("p1", "per-org")] == 5


def test_compound_key_and_match_and_fallback():
    bundle = {"bundle_version": 1, "policies": [{"id": "plans", "spec": {
        "selector": {"pathPrefix": "/api/"},
        "rules": [{"name": "free", "limit_keys": ["jwt:plan", "jwt:sub"], "match": {"jwt:plan": "free"},
                   "algorithm": "token_bucket", "algorithm_config": {"rps": 1, "burst": 1}}],
        "fallback_limit": {"name": "other", "limit_keys": ["jwt:sub"], "algorithm": "token_bucket",
                           "algorithm_config": {"rps": 1, "burst": 3}}}}]}
    engine = make_engine(bundle)
    free = {"Authorization": "Bearer " + unsigned_jwt({"plan": "free", "sub": "u1"})}
    pro = {"Authorization": "Bearer " + unsigned_jwt({"plan": "pro", "sub": "u1"})}
    assert [decide(engine, headers=free, uri="/api/x").status for _ in range(2)] == [0, 429]
    v = decide(engine, headers=pro, uri="/api/x")
    assert v.status == 0 and hdr(v, "RateLimit-Policy") == '"other";q=3;w=3'
    assert decide(engine, headers=free, uri="/other").headers == []  # selector does not match


def test_all_or_nothing_rejected_request_is_never_charged():
    bundle = {"bundle_version": 1, "policies": [{"id": "p", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "roomy", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 1, "burst": 100}},
        {"name": "tight", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 1, "burst": 1}}]}}]}
    engine = make_engine(bundle)
    assert decide(engine, headers={"X-Api-Key": "k"}).status == 0
    for _ in range(5):
        v = decide(engine, headers={"X-Api-Key": "k"})
        assert v.status == 429 and hdr(v, "RateLimit-Policy") == '"tight";q=1;w=1'
    # Five rejections later, "roomy" has been charged only for the one allowed request.
    v = decide(engine, headers={"X-Api-Key": "other"})
    assert hdr(v, "RateLimit") == '"tight";r=0;t=1'  # the most restrictive of the two
    roomy = engine.bundle.policies[0].rules[0].bucket
    assert int(roomy.peek(rule_key("p", "roomy", "127.0.0.1"), engine.clock.now_s())) == 98


def test_most_restrictive_rule_is_reported_on_allow():
    bundle = {"bundle_version": 1, "policies": [{"id": "p", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "a", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 10, "burst": 100}},
        {"name": "b", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 1, "burst": 4}}]}}]}
    v = decide(make_engine(bundle))
    assert hdr(v, "RateLimit") == '"b";r=3;t=1'
    assert hdr(v, "RateLimit-Limit") == "4" and hdr(v, "RateLimit-Remaining") == "3"


def test_shadow_policy_never_changes_the_verdict_but_counts_would_reject():
    engine = make_engine(one_rule_bundle({**SEED_RULE, "algorithm_config": {"rps": 1, "burst": 1}}, mode="shadow"))
    verdicts = [described(engine, xff="10.0.0.1") for _ in range(3)]
    assert all(v.status == 0 and v.headers == [] for v in verdicts)
    assert engine.metrics.would_reject.values[("p1", "rate_limit_exceeded")] == 2


def test_global_shadow_uses_separate_counters():
    bundle = one_rule_bundle({**SEED_RULE, "algorithm_config": {"rps": 1, "burst": 1}})
    bundle["global_shadow"] = {"enabled": True, "reason": "rollout"}
    engine = make_engine(bundle)
    assert [described(engine, xff="10.0.0.1").status for _ in range(3)] == [0, 0, 0]
    assert engine.store.get(rule_key("p1", "per-ip", "10.0.0.1")) is None  # enforce state untouched
    assert engine.metrics.would_reject.values[("p1", "rate_limit_exceeded")] == 2


def test_kill_switch_first_with_retry_after_until_expiry():
    clock = FakeClock(1_767_225_600.0)  # 2026-01-01T00:00:00Z
    bundle = one_rule_bundle(SEED_RULE)
    bundle["kill_switches"] = [
        {"scope_key": "jwt:org_id", "scope_value": "evil", "reason": "runaway agent",
         "expires_at": "2026-01-01T00:10:00Z"},
        {"scope_key": "header:x-api-key", "scope_value": "k1", "route": "/v1/admin"},
    ]
    engine = make_engine(bundle, clock=clock, retry_jitter=False)  # the base Retry-After (see test_jitter.py)
    evil = {"Authorization": "Bearer " + unsigned_jwt({"org_id": "evil"})}
    v, d = decide(engine, headers=evil, with_decision=True)
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "kill_switch_active"
    assert hdr(v, "Retry-After") == "600"
    assert "runaway agent" not in v.body and "runaway agent" not in v.headers  # for operators only
    assert d.detail == "runaway agent"  # what the decision log records
    assert decide(engine, headers={"X-Api-Key": "k1"}, uri="/v1/chat").status == 0
    v = decide(engine, headers={"X-Api-Key": "k1"}, uri="/v1/admin/users")
    assert hdr(v, "Retry-After") == "3600"
    clock.advance(600)
    assert decide(engine, headers=evil).status == 0  # expired switches are ignored


def test_selector_methods_hosts_and_exact_paths():
    bundle = one_rule_bundle({**SEED_RULE, "algorithm_config": {"rps": 1, "burst": 1}},
                             selector={"pathExact": "/v1/chat", "methods": ["POST"], "hosts": ["API.test"]})
    engine = make_engine(bundle)
    assert decide(engine, method="GET").headers == []
    assert decide(engine, method="POST", host="other.test").headers == []
    assert decide(engine, method="POST", uri="/v1/chat/x").headers == []
    assert decide(engine, method="POST", host="api.test:8443", uri="/v1/%63hat?x=1").status == 0
    assert decide(engine, method="POST", uri="/v1/./chat").status == 429


def test_no_policy_loaded_is_503():
    from pyengine.config import from_env
    from pyengine.engine import Engine
    engine = Engine(from_env({}), clock=FakeClock())
    v = described(engine)
    assert v.status == 503 and hdr(v, "X-Fairvisor-Reason") == "no_policy_loaded"
    assert engine.health().status == 503


def test_reload_keeps_counters_and_refuses_older_versions():
    from pyengine.errors import PolicyError
    engine = make_engine(one_rule_bundle({**SEED_RULE, "algorithm_config": {"rps": 1, "burst": 3}}))
    described(engine, xff="10.0.0.1")
    described(engine, xff="10.0.0.1")
    old_generation = engine.generation
    engine.load_bytes(json.dumps(one_rule_bundle(
        {**SEED_RULE, "algorithm_config": {"rps": 1, "burst": 3}}, version=2)).encode(), "policy.json")
    assert engine.generation == old_generation + 1
    v = described(engine, xff="10.0.0.1")
    assert hdr(v, "RateLimit-Remaining") == "0"  # the counter carried over the reload
    try:
        engine.load_bytes(json.dumps(one_rule_bundle(SEED_RULE, version=2)).encode(), "policy.json")
        raise AssertionError("equal version accepted")
    except PolicyError as exc:
        assert exc.errors == ["policy.json: $.bundle_version: must be greater than the version in force (2), got 2"]
    assert engine.bundle.version == 2
    assert engine.metrics.reloads.values == {("ok",): 2, ("refused",): 1}


def test_reverse_proxy_selects_on_the_path_without_the_provider_segment():
    rule = {**SEED_RULE, "algorithm_config": {"rps": 1, "burst": 1}}
    engine = make_engine(one_rule_bundle(rule, selector={"pathPrefix": "/v1/"}), mode="reverse_proxy",
                         backend_url="http://127.0.0.1:9")
    assert decide(engine, uri="/openai/v1/chat/completions?x=1").status == 0
    assert decide(engine, uri="/anthropic/v1/messages").status == 429  # same client, same rule
    assert decide(engine, uri="/openaix/v1/chat").headers == []  # not a provider segment


def test_generation_starts_fresh_in_every_engine():
    a = make_engine(one_rule_bundle(SEED_RULE))
    b = make_engine(one_rule_bundle(SEED_RULE))
    assert a.generation != b.generation
