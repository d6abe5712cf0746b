"""The admin API's runtime kill switches and limit overrides (contract §8), on an engine with a frozen clock."""

import json
import os
from pathlib import Path

import pytest

from pyengine import admin_api
from pyengine.clock import FakeClock
from pyengine.config import from_env
from pyengine.engine import build_engine
from pyengine.decision.key_hash import KeyHasher
from pyengine.overlay import registry
from pyengine.protocol.messages import Metrics

from .helpers import decide, hdr, make_engine, one_rule_bundle

ORG_BUCKET = {"name": "per-org", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
              "algorithm_config": {"tokens_per_second": 1, "burst": 2}}
ACTOR = "token:0123456789ab"


def call(engine, method, path, body=None):
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    status, ctype, text = engine.admin_routes.handle(method, path, raw, ACTOR)
    return status, ctype, json.loads(text)


def org(engine, value, **headers):
    return decide(engine, headers={"X-Org": value, **headers})


def allowed(engine, value, n, **headers) -> int:
    return sum(org(engine, value, **headers).status == 0 for _ in range(n))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def engine(clock):
    return make_engine(one_rule_bundle(ORG_BUCKET), clock=clock, retry_jitter=False)


# -- kill switches ----------------------------------------------------------------------

def test_added_switch_refuses_its_value_at_once_and_hides_the_reason(engine):
    status, _, body = call(engine, "POST", "/v1/admin/kill-switches",
                           {"scope_key": "header:x-org", "scope_value": "evil", "reason": "card fraud #4411"})
    assert status == 201 and body["kill_switch"]["id"].startswith("ks_") and body["warnings"] == []
    v = org(engine, "evil")
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "kill_switch_active"
    assert hdr(v, "Retry-After") == "3600"
    assert "card fraud" not in json.dumps([v.headers, v.body])  # operators only (contract §1)
    assert org(engine, "good").status == 0


def test_switch_on_a_header_the_policy_never_reads_gets_the_shim_to_send_it(engine):
    generation = engine.generation
    assert "x-tenant" not in engine.hello_reply.headers
    call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:X-Tenant", "scope_value": "t9"})
    assert "x-tenant" in engine.hello_reply.headers and engine.generation == generation + 1
    # decide() re-describes after the HelloReply, as the shim does.
    assert org(engine, "a", **{"X-Tenant": "t9"}).status == 429
    assert org(engine, "a", **{"X-Tenant": "t8"}).status == 0


def test_switch_on_a_header_already_sent_keeps_the_generation(engine):
    generation = engine.generation
    call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-org", "scope_value": "evil"})
    assert engine.generation == generation


def test_ttl_expiry_retry_after_and_removal_at_upkeep(engine, clock):
    _, _, body = call(engine, "POST", "/v1/admin/kill-switches",
                      {"scope_key": "header:x-org", "scope_value": "evil", "ttl_s": 90})
    assert hdr(org(engine, "evil"), "Retry-After") == "90"
    clock.t += 89.5
    assert org(engine, "evil").status == 429
    clock.t += 0.5
    assert org(engine, "evil").status == 0  # stops acting at its expiry, before any upkeep
    assert call(engine, "GET", "/v1/admin/kill-switches")[2] == {"kill_switches": []}
    engine.upkeep()
    assert body["kill_switch"]["id"] not in engine.overlay.switches


def test_route_narrows_a_switch(engine):
    call(engine, "POST", "/v1/admin/kill-switches",
         {"scope_key": "header:x-org", "scope_value": "evil", "route": "/v1/admin-only"})
    assert decide(engine, headers={"X-Org": "evil"}, uri="/v1/chat").status == 0
    assert decide(engine, headers={"X-Org": "evil"}, uri="/v1/admin-only/x").status == 429


def test_list_and_remove(engine):
    ids = [call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-org", "scope_value": v})[2]
           ["kill_switch"]["id"] for v in ("a", "b")]
    listed = call(engine, "GET", "/v1/admin/kill-switches")[2]["kill_switches"]
    assert [s["id"] for s in listed] == ids and listed[0]["created_by"] == ACTOR
    assert call(engine, "GET", f"/v1/admin/kill-switches/{ids[1]}")[2]["kill_switch"]["scope_value"] == "b"
    status, _, body = call(engine, "DELETE", f"/v1/admin/kill-switches/{ids[0]}")
    assert status == 200 and body["removed"]["scope_value"] == "a"
    assert org(engine, "a").status == 0 and org(engine, "b").status == 429
    assert call(engine, "DELETE", f"/v1/admin/kill-switches/{ids[0]}")[0] == 404


def test_the_bundles_override_skips_runtime_switches_too_and_says_so(clock):
    bundle = one_rule_bundle(ORG_BUCKET)
    bundle["kill_switch_override"] = {"enabled": True}
    engine = make_engine(bundle, clock=clock)
    _, _, body = call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-org", "scope_value": "x"})
    assert "kill_switch_override" in body["warnings"][0]
    assert org(engine, "x").status == 0


def test_switches_survive_a_reload(engine):
    call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-tenant", "scope_value": "t9"})
    engine.load_bytes(json.dumps(one_rule_bundle(ORG_BUCKET, version=2)).encode(), "policy.json")
    assert "x-tenant" in engine.hello_reply.headers
    assert org(engine, "a", **{"X-Tenant": "t9"}).status == 429


def test_switch_hits_and_gauge(engine):
    sid = call(engine, "POST", "/v1/admin/kill-switches",
               {"scope_key": "header:x-org", "scope_value": "evil"})[2]["kill_switch"]["id"]
    org(engine, "evil")
    org(engine, "evil")
    text = engine.handle(Metrics()).body
    assert f'fairvisor_kill_switch_hits_total{{switch="{sid}"}} 2' in text
    assert "fairvisor_kill_switch_active 1" in text


# -- overrides --------------------------------------------------------------------------

def test_multiplier_override_for_one_value_only(engine):
    status, _, body = call(engine, "POST", "/v1/admin/overrides",
                           {"scope_key": "header:x-org", "scope_value": "acme", "multiplier": 3, "ttl_s": 600})
    assert status == 201 and body["applies_to"] == ["p1/per-org"] and body["warnings"] == []
    assert allowed(engine, "acme", 10) == 6  # burst 2 x 3
    assert allowed(engine, "other", 10) == 2
    v = org(engine, "acme")
    assert hdr(v, "RateLimit-Policy") == '"per-org";q=6;w=2'


def test_override_ends_at_its_expiry_and_state_carries_over(engine, clock):
    call(engine, "POST", "/v1/admin/overrides",
         {"scope_key": "header:x-org", "scope_value": "acme", "multiplier": 3, "ttl_s": 60})
    assert allowed(engine, "acme", 3) == 3  # 3 of 6 used: half full
    clock.t += 60
    # Refilled 60 s at 3/s under the override: full; now the base: 2 of 2.
    assert allowed(engine, "acme", 5) == 2
    engine.upkeep()
    assert engine.overlay.overrides == {}
    assert engine.bundle.policies[0].rules[0].bucket.__class__.__name__ == "TokenBucket"  # plain path again


def test_absolute_limits_and_llm_rule(clock):
    rule = {"name": "tpm", "limit_keys": ["jwt:org_id"], "algorithm": "token_bucket_llm",
            "algorithm_config": {"tokens_per_minute": 1000, "tokens_per_day": 5000}}
    engine = make_engine(one_rule_bundle(rule), clock=clock)
    _, _, body = call(engine, "POST", "/v1/admin/overrides",
                      {"scope_key": "jwt:org_id", "scope_value": "acme", "policy": "p1", "rule": "tpm",
                       "limits": {"tokens_per_minute": 20000}, "ttl_s": 60})
    assert body["applies_to"] == ["p1/tpm"]
    limiter = engine.bundle.policies[0].rules[0].limiter
    key = next(iter(limiter.by_key))
    over = limiter.by_key[key][1]
    assert over.tpm._burst == 20000 and over.tpd._budget == 5000  # burst follows TPM; TPD untouched


def test_narrowest_override_wins(engine):
    call(engine, "POST", "/v1/admin/overrides",
         {"scope_key": "header:x-org", "scope_value": "acme", "policy": "p1", "rule": "per-org",
          "multiplier": 2, "ttl_s": 60})
    call(engine, "POST", "/v1/admin/overrides",
         {"scope_key": "header:x-org", "scope_value": "acme", "multiplier": 5, "ttl_s": 60})  # newer, broader
    assert allowed(engine, "acme", 20) == 4


def test_removing_an_override_restores_the_bundle_limit(engine):
    oid = call(engine, "POST", "/v1/admin/overrides", {"scope_key": "header:x-org", "scope_value": "acme",
                                                       "multiplier": 5, "ttl_s": 60})[2]["override"]["id"]
    call(engine, "DELETE", f"/v1/admin/overrides/{oid}")
    assert allowed(engine, "acme", 5) == 2


def test_override_for_a_key_no_rule_uses_warns_and_acts_after_a_reload(engine):
    _, _, body = call(engine, "POST", "/v1/admin/overrides",
                      {"scope_key": "header:x-team", "scope_value": "t", "multiplier": 5, "ttl_s": 600})
    assert body["applies_to"] == [] and "header:x-team" in body["warnings"][0]
    team = {**ORG_BUCKET, "limit_keys": ["header:x-team"]}
    engine.load_bytes(json.dumps(one_rule_bundle(team, version=2)).encode(), "policy.json")
    assert sum(decide(engine, headers={"X-Team": "t"}).status == 0 for _ in range(20)) == 10


def test_cost_budget_override_keeps_the_spend(clock):
    rule = {"name": "spend", "limit_keys": ["header:x-org"], "algorithm": "cost_based",
            "algorithm_config": {"budget": 3, "period": "1d", "cost_key": "fixed", "fixed_cost": 1,
                                 "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}
    engine = make_engine(one_rule_bundle(rule), clock=clock)
    assert allowed(engine, "acme", 2) == 2
    call(engine, "POST", "/v1/admin/overrides",
         {"scope_key": "header:x-org", "scope_value": "acme", "limits": {"budget": 5}, "ttl_s": 60})
    assert allowed(engine, "acme", 10) == 3  # 2 already spent of 5


# -- validation -------------------------------------------------------------------------

@pytest.mark.parametrize("body, path, words", [
    (b"{", "$", "not valid JSON"),
    (b"[1]", "$", "must be a JSON object"),
    ({"scope_key": "header:x-org"}, "$.scope_value", ""),
    ({"scope_key": "nope", "scope_value": "a", "ttl_s": 5}, "$.scope_key", "invalid limit key"),
    ({"scope_key": "ua:bot", "scope_value": "maybe", "ttl_s": 5}, "$.scope_value", '"true" or "false"'),
    ({"scope_key": "header:x-org", "scope_value": "a", "ttl_s": 0}, "$.ttl_s", "integer from 1"),
    ({"scope_key": "header:x-org", "scope_value": "a", "expires_at": "2020-01-01T00:00:00Z"},
     "$.expires_at", "in the future"),
    ({"scope_key": "header:x-org", "scope_value": "a", "route": "nope"}, "$.route", 'start with "/"'),
    ({"scope_key": "header:x-org", "scope_value": "a", "color": "red"}, "$.color", ""),
])
def test_switch_requests_refused_with_the_json_path(engine, body, path, words):
    status, ctype, problem = call(engine, "POST", "/v1/admin/kill-switches", body)
    assert status == 400 and ctype == "application/problem+json" and problem["reason"] == "invalid_request"
    assert problem["errors"][0]["path"] == path and words in problem["errors"][0]["message"]
    assert engine.overlay.switches == {}


@pytest.mark.parametrize("body, path, words", [
    ({"scope_key": "header:x-org", "scope_value": "a", "multiplier": 2}, "$.ttl_s", "always ends"),
    ({"scope_key": "header:x-org", "scope_value": "a", "ttl_s": 5}, "$", "exactly one of multiplier or limits"),
    ({"scope_key": "header:x-org", "scope_value": "a", "ttl_s": 5, "multiplier": 1e6}, "$.multiplier", "between"),
    ({"scope_key": "header:x-org", "scope_value": "a", "ttl_s": 5, "limits": {"rpm": 3}}, "$.limits.rpm", "unknown"),
    ({"scope_key": "header:x-org", "scope_value": "a", "ttl_s": 5, "limits": {"burst": -1}},
     "$.limits.burst", "> 0"),
    ({"scope_key": "header:x-org", "scope_value": "a", "ttl_s": 5, "multiplier": 2, "rule": "r"},
     "$.policy", "required when rule"),
    ({"scope_key": "header:x-org", "scope_value": "a", "ttl_s": 5, "expires_at": "2030-01-01T00:00:00Z",
      "multiplier": 2}, "$.expires_at", "not both"),
])
def test_override_requests_refused_with_the_json_path(engine, body, path, words):
    status, _, problem = call(engine, "POST", "/v1/admin/overrides", body)
    assert status == 400 and problem["errors"][0]["path"] == path and words in problem["errors"][0]["message"]
    assert engine.overlay.overrides == {}


@pytest.mark.parametrize("method, path, status", [
    ("PUT", "/v1/admin/kill-switches", 405), ("POST", "/v1/admin/kill-switches/ks_1", 405),
    ("GET", "/v1/admin/nothing", 404), ("GET", "/v1/admin/kill-switches/a/b", 404), ("GET", "/v1/other", 404),
    ("DELETE", "/v1/admin/overrides/ov_missing", 404),
])
def test_unknown_routes_and_methods(engine, method, path, status):
    assert call(engine, method, path)[0] == status


def test_bounded(engine, monkeypatch):
    monkeypatch.setattr(registry, "MAX_SWITCHES", 2)
    for v in ("a", "b"):
        assert call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-org", "scope_value": v})[0] == 201
    status, _, problem = call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-org", "scope_value": "c"})
    assert status == 409 and problem["reason"] == "too_many" and len(engine.overlay.switches) == 2
    assert org(engine, "c").status == 0


# -- durability and audit ----------------------------------------------------------------

def _restartable(tmp_path, clock):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(one_rule_bundle(ORG_BUCKET)))
    settings = from_env({}, state_dir=str(tmp_path / "state"), config_file=str(policy), log_keys="raw")
    return lambda: build_engine(settings, clock=clock)


def _stop(engine):
    engine.close()


def test_switches_and_overrides_survive_a_restart_and_expired_ones_do_not(tmp_path, clock):
    start = _restartable(tmp_path, clock)
    e1 = start()
    call(e1, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-tenant", "scope_value": "t9"})
    call(e1, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-org", "scope_value": "gone", "ttl_s": 10})
    call(e1, "POST", "/v1/admin/overrides", {"scope_key": "header:x-org", "scope_value": "acme",
                                              "multiplier": 3, "ttl_s": 3600})
    path = tmp_path / "state" / "admin" / "overlay.msgpack"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    _stop(e1)
    clock.t += 20
    e2 = start()
    assert [r.scope_value for r in e2.overlay.switches.values()] == ["t9"]
    assert org(e2, "a", **{"X-Tenant": "t9"}).status == 429
    assert allowed(e2, "acme", 10) == 6
    _stop(e2)


def test_a_failed_write_refuses_the_change(tmp_path, clock, monkeypatch):
    e = _restartable(tmp_path, clock)()

    def broken(path, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(registry, "write_atomic", broken)
    status, _, problem = call(e, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-org", "scope_value": "x"})
    assert status == 503 and problem["reason"] == "state_write_failed"
    assert e.overlay.switches == {} and org(e, "x").status == 0
    _stop(e)


def test_unreadable_file_is_set_aside(tmp_path, clock):
    start = _restartable(tmp_path, clock)
    (tmp_path / "state" / "admin").mkdir(parents=True)
    (tmp_path / "state" / "admin" / "overlay.msgpack").write_bytes(b"\xc1garbage")
    e = start()
    assert e.overlay.switches == {} and e.bundle is not None
    assert any(".corrupt-" in n for n in os.listdir(tmp_path / "state" / "admin"))
    _stop(e)


def test_every_change_is_an_audit_record_with_the_token_fingerprint(tmp_path, clock):
    e = _restartable(tmp_path, clock)()
    sid = call(e, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-org", "scope_value": "evil",
                                                       "reason": "fraud", "ttl_s": 5})[2]["kill_switch"]["id"]
    oid = call(e, "POST", "/v1/admin/overrides", {"scope_key": "header:x-org", "scope_value": "acme",
                                                   "multiplier": 2, "ttl_s": 60})[2]["override"]["id"]
    call(e, "DELETE", f"/v1/admin/overrides/{oid}")
    clock.t += 6
    e.upkeep()
    recs = [json.loads(line) for line in (tmp_path / "state" / "decisions.jsonl").read_text().splitlines()]
    admin = [(r["reason"], r["item_id"], r["actor"]) for r in recs if r["event"] == "admin"]
    assert admin == [("kill_switch_added", sid, ACTOR), ("override_added", oid, ACTOR),
                     ("override_removed", oid, ACTOR), ("kill_switch_expired", sid, "engine")]
    first = next(r for r in recs if r["event"] == "admin")
    assert first["key"] == "evil" and first["scope_key"] == "header:x-org" and first["detail"] == "fraud"
    assert first["expires_at"] == "2026-01-01T00:00:05.000Z"
    _stop(e)


def test_actor_is_a_keyed_fingerprint_never_the_token(tmp_path):
    hasher = KeyHasher(str(tmp_path))
    fp = admin_api.actor_of("s3cret-token", hasher)
    assert fp.startswith("token:") and len(fp) == 18 and "s3cret" not in fp
    assert fp == admin_api.actor_of("s3cret-token", KeyHasher(str(tmp_path)))  # stable across restarts
    assert fp != admin_api.actor_of("other-token", hasher)
    assert admin_api.actor_of(None, hasher) == "no-token"


def test_openapi_file_describes_every_route():
    doc = json.loads((Path(__file__).parents[2] / "docs" / "admin-api.openapi.json").read_text())
    served = {f"/v1/admin/{name}" for name in admin_api._KINDS} | {f"/v1/admin/{name}/{{id}}" for name in admin_api._KINDS}
    assert set(doc["paths"]) >= served
    for kind in admin_api._KINDS.values():
        assert kind.many in json.dumps(doc["paths"])


def test_a_switch_added_before_any_policy_acts_once_one_loads(clock):
    from pyengine.engine import Engine
    engine = Engine(from_env({}, retry_jitter=False), clock=clock)
    assert call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:x-org", "scope_value": "evil"})[0] == 201
    engine.load_bytes(json.dumps(one_rule_bundle(ORG_BUCKET)).encode(), "policy.json")
    assert org(engine, "evil").status == 429 and org(engine, "good").status == 0
    [sid] = engine.overlay.switches
    call(engine, "DELETE", f"/v1/admin/kill-switches/{sid}")
    assert engine.pipeline.runtime_switches is None  # the plain path again


def test_explain_names_a_runtime_switch_that_refused(engine):
    from pyengine.explain import explain_request
    from pyengine.protocol.messages import SURFACE_INLINE, Decide
    sid = call(engine, "POST", "/v1/admin/kill-switches",
               {"scope_key": "header:x-org", "scope_value": "evil", "reason": "r1"})[2]["kill_switch"]["id"]
    hello = engine.hello_reply
    msg = Decide(generation=hello.generation, surface=SURFACE_INLINE, method=b"GET", uri=b"/v1/chat", host=b"api.test",
                 remote_addr=b"127.0.0.1", headers=[b"evil" if h == "x-org" else None for h in hello.headers])
    out = explain_request(engine, msg)
    assert out["kill_switches"][-1] == {"index": 0, "id": sid, "reason": "r1", "status": "hit"}


def test_distinct_scope_keys_are_bounded_too(engine, monkeypatch):
    monkeypatch.setattr(registry, "MAX_SWITCH_SCOPE_KEYS", 2)
    for key in ("header:a", "header:b", "header:a"):
        assert call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": key, "scope_value": "v"})[0] == 201
    status, _, problem = call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:c", "scope_value": "v"})
    assert status == 409 and "distinct scope keys" in problem["detail"]
    assert "c" not in engine.hello_reply.headers
    too_long = call(engine, "POST", "/v1/admin/kill-switches", {"scope_key": "header:" + "x" * 300, "scope_value": "v"})
    assert too_long[0] == 400 and too_long[2]["errors"][0]["path"] == "$.scope_key"


# -- ?id= (every engine of an edge holds a change under engine 0's id: fairvisor.fanout) ------

def test_a_post_with_an_id_keeps_it_and_a_delete_of_it_removes_it(engine):
    status, _, body = call(engine, "POST", "/v1/admin/kill-switches?id=ks_0123456789ab",
                           {"scope_key": "header:x-org", "scope_value": "evil"})
    assert status == 201 and body["kill_switch"]["id"] == "ks_0123456789ab"
    assert org(engine, "evil").status == 429
    status, _, body = call(engine, "POST", "/v1/admin/overrides?x=1&id=ov_00000000000f",
                           {"scope_key": "header:x-org", "scope_value": "big", "multiplier": 2, "ttl_s": 60})
    assert status == 201 and body["override"]["id"] == "ov_00000000000f"
    assert call(engine, "DELETE", "/v1/admin/kill-switches/ks_0123456789ab")[0] == 200
    assert org(engine, "evil").status == 0


@pytest.mark.parametrize("given", ["ov_0123456789ab", "ks_0123456789a", "ks_0123456789AB", "ks_0123456789abc",
                                   "", "ks_../../etc"])
def test_an_id_of_another_shape_is_refused_and_nothing_added(engine, given):
    status, _, body = call(engine, "POST", f"/v1/admin/kill-switches?id={given}",
                           {"scope_key": "header:x-org", "scope_value": "evil"})
    assert status == 400 and body["reason"] == "invalid_request"
    assert call(engine, "GET", "/v1/admin/kill-switches")[2] == {"kill_switches": []}


def test_an_id_in_use_is_a_conflict(engine):
    path = "/v1/admin/kill-switches?id=ks_0123456789ab"
    assert call(engine, "POST", path, {"scope_key": "header:x-org", "scope_value": "a"})[0] == 201
    status, _, body = call(engine, "POST", path, {"scope_key": "header:x-org", "scope_value": "b"})
    assert status == 409 and body["reason"] == "exists"
    assert [s["scope_value"] for s in call(engine, "GET", "/v1/admin/kill-switches")[2]["kill_switches"]] == ["a"]
