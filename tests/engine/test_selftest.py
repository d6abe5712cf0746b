"""Self-test runs: the target rule on scratch keys, never a tenant's counter, metric or log, never let through."""

import json

from pyengine import operator_api
from pyengine.clock import FakeClock
from pyengine.selftest import ALLOWED_STATUS, TTL_S
from pyengine.state import keys

from pyengine.decision.keys import jwt_claims

from .helpers import decide, hdr, make_engine


def _rule(name, key, burst, **extra):
    return {"name": name, "limit_keys": key if isinstance(key, list) else [key], "algorithm": "token_bucket",
            "algorithm_config": {"tokens_per_second": 1, "burst": burst}, **extra}


def _bundle(version=1, rules=None, selector=None):
    return {"bundle_version": version, "policies": [
        {"id": "api", "spec": {"selector": selector or {"pathPrefix": "/v1/", "methods": ["POST"]},
                               "rules": rules or [_rule("per-key", "header:x-api-key", 3)]}}]}


def _start(engine) -> dict:
    reply = operator_api.selftest_start(engine, {}, None)
    assert reply.status == 200
    return json.loads(reply.body)


def _send(engine, plan, index, phase="probe", secret=None, **override):
    req = dict(plan["rules"][index]["request"])
    req.update(override)
    headers = dict(req["headers"])
    headers["X-Fairvisor-Selftest"] = f"{plan['run']}.{secret or plan['secret']}.{index}.{phase}"
    return decide(engine, headers, method=req["method"], uri=req["path"], host=req.get("host") or "api.test",
                  body=(req.get("body") or "").encode() or None)


def test_probe_then_drain_proves_the_limit_with_the_client_headers():
    engine = make_engine(_bundle())
    plan = _start(engine)
    assert plan["rules"][0]["request"] == {"method": "POST", "path": "/v1/fv-selftest", "host": None,
                                           "headers": {"x-api-key": "fv-selftest"}}
    probe = _send(engine, plan, 0)
    assert probe.status == ALLOWED_STATUS and hdr(probe, "X-Fairvisor-Selftest") == "allowed"
    assert (hdr(probe, "RateLimit-Limit"), hdr(probe, "RateLimit-Remaining")) == ("3", "2")
    drain = _send(engine, plan, 0, "drain")
    assert drain.status == 429 and hdr(drain, "X-Fairvisor-Selftest") == "rejected"
    assert hdr(drain, "X-Fairvisor-Reason") == "rate_limit_exceeded" and int(hdr(drain, "Retry-After")) >= 1
    assert hdr(drain, "X-Fairvisor-Selftest-Applied") == "3"  # two more allowed, then the rejection
    assert hdr(drain, "RateLimit-Remaining") == "0"


def test_tenant_counters_metrics_log_coverage_and_replay_are_untouched():
    clock = FakeClock(1_767_225_600.0)
    engine = make_engine(_bundle(), clock=clock)
    tenant = {"X-Api-Key": "fv-selftest"}  # even a tenant whose key equals the synthetic value
    assert hdr(decide(engine, tenant, method="POST", uri="/v1/x"), "RateLimit-Remaining") == "2"
    before = (dict(engine.metrics.decisions.values), len(engine.decision_log.pending),
              engine.coverage.report(engine.metrics), len(engine.recent), dict(engine.metrics.last_outcome))
    plan = _start(engine)
    _send(engine, plan, 0)
    assert _send(engine, plan, 0, "drain").status == 429
    after = (dict(engine.metrics.decisions.values), len(engine.decision_log.pending),
             engine.coverage.report(engine.metrics), len(engine.recent), dict(engine.metrics.last_outcome))
    assert after == before
    assert hdr(decide(engine, tenant, method="POST", uri="/v1/x"), "RateLimit-Remaining") == "1"
    scratch = [k for k in engine.store.as_dict() if keys.parse(k).namespace == keys.SELFTEST]
    assert scratch and all(keys.parse(keys.parse(k).fields[1]).namespace == keys.RULE for k in scratch)
    assert operator_api.selftest_end(engine, {"run": [plan["run"]]}, None).status == 200
    engine.store.sweep(clock.now_s(), 10**6)  # deleted entries read as absent; the sweep drops them
    assert not [k for k in engine.store.as_dict() if keys.parse(k).namespace == keys.SELFTEST]
    assert operator_api.selftest_end(engine, {"run": [plan["run"]]}, None).status == 404


def test_without_a_valid_secret_it_is_ordinary_traffic():
    engine = make_engine(_bundle())
    plan = _start(engine)
    for secret in ("wrong", plan["secret"][:-1], plan["secret"] + "x"):
        v = _send(engine, plan, 0, secret=secret)
        assert hdr(v, "X-Fairvisor-Selftest") is None
    # Three ordinary requests charged the tenant "fv-selftest": the next is rejected as usual.
    v = _send(engine, plan, 0, secret="wrong")
    assert v.status == 429 and hdr(v, "X-Fairvisor-Selftest") is None
    for garbage in ("", ".", "....", f"{plan['run']}.{plan['secret']}.x.probe",
                    f"{plan['run']}.{plan['secret']}.0.skip", f"{plan['run']}.{plan['secret']}.9999999.probe",
                    f"{plan['run']}.{plan['secret']}.².probe",
                    "a.b.c.d.e", "\x00" * 50):
        headers = {"X-Api-Key": f"other-{garbage!r}", "X-Fairvisor-Selftest": garbage}
        v = decide(engine, headers, method="POST", uri="/v1/x")
        assert v.status == 0 and hdr(v, "X-Fairvisor-Selftest") is None, garbage  # ordinary, never an engine error


def test_the_secret_expires_and_upkeep_deletes_the_scratch_state():
    clock = FakeClock(1_767_225_600.0)
    engine = make_engine(_bundle(), clock=clock)
    plan = _start(engine)
    assert _send(engine, plan, 0).status == ALLOWED_STATUS
    clock.advance(TTL_S)
    assert hdr(_send(engine, plan, 0), "X-Fairvisor-Selftest") is None  # expired: ordinary traffic
    engine.upkeep()
    assert not engine.selftests.runs
    engine.store.sweep(clock.now_s(), 10**6)
    assert not [k for k in engine.store.as_dict() if k.startswith(keys.SELFTEST)]


def test_answers_are_never_let_through():
    """Every self-test answer has a non-2xx status: the shim answers it, no upstream sees it."""
    engine = make_engine(_bundle(rules=[_rule("per-key", "header:x-api-key", 1000),
                                        _rule("premium", ["header:x-api-key", "header:x-tier"], 2,
                                              match={"header:x-tier": "gold"})]))
    plan = _start(engine)
    answers = [_send(engine, plan, i, phase) for i in (0, 1) for phase in ("probe", "drain", "probe")]
    answers.append(_send(engine, plan, 0, path="/elsewhere"))  # not matched
    answers.append(_send(engine, plan, 0, headers={}))  # key missing
    answers.append(_send(engine, plan, 1, headers={"x-api-key": "k", "x-tier": "silver"}))  # match fails
    assert all(v.status >= 300 for v in answers)
    assert [hdr(v, "X-Fairvisor-Selftest") for v in answers[-3:]] == ["not_matched", "key_missing", "match_failed"]


def test_a_reload_ends_what_a_run_may_prove():
    engine = make_engine(_bundle())
    plan = _start(engine)
    engine.load_bytes(json.dumps(_bundle(version=2)).encode(), "policy.json")
    assert hdr(_send(engine, plan, 0), "X-Fairvisor-Selftest") == "bundle_changed"


def test_plan_fills_jwt_query_and_match_values_and_names_what_it_cannot_set():
    rules = [_rule("per-org", "jwt:org_id", 2), _rule("per-q", "query:tenant", 2),
             _rule("gold", ["header:x-api-key", "header:x-tier"], 2, match={"header:x-tier": "gold"}),
             _rule("from-one-ip", "ip:address", 2, match={"ip:address": "10.0.0.1"}),
             _rule("per-ip", "ip:address", 2)]
    engine = make_engine(_bundle(rules=rules, selector={"pathExact": "/v1/chat"}))
    plan = _start(engine)
    by = {r["rule"]: r for r in plan["rules"]}
    assert jwt_claims(by["per-org"]["request"]["headers"]["authorization"]) == {"org_id": "fv-selftest"}
    assert by["per-q"]["request"]["path"] == "/v1/chat?tenant=fv-selftest"
    assert by["gold"]["request"]["headers"] == {"x-api-key": "fv-selftest", "x-tier": "gold"}
    assert by["from-one-ip"]["request"] is None
    assert by["from-one-ip"]["cannot_match"] == "ip:address cannot be set by a synthetic request to '10.0.0.1'"
    assert by["per-ip"]["request"]["headers"] == {} and by["per-ip"]["cannot_match"] is None
    for name in ("per-org", "per-q", "gold", "per-ip"):
        i = by[name]["index"]
        assert hdr(_send(engine, plan, i), "X-Fairvisor-Selftest") == "allowed", name
        assert hdr(_send(engine, plan, i, "drain"), "X-Fairvisor-Selftest") == "rejected", name


def test_plan_reports_recent_missing_key_skips():
    engine = make_engine(_bundle())
    decide(engine, {}, method="POST", uri="/v1/x")
    decide(engine, {}, method="POST", uri="/v1/y")
    assert _start(engine)["rules"][0]["skipped_missing_key"] == 2


def test_at_most_four_runs_are_open():
    engine = make_engine(_bundle())
    plans = [_start(engine) for _ in range(5)]
    assert len(engine.selftests.runs) == 4 and plans[0]["run"] not in engine.selftests.runs
    assert hdr(_send(engine, plans[0], 0), "X-Fairvisor-Selftest") is None
    assert hdr(_send(engine, plans[4], 0), "X-Fairvisor-Selftest") == "allowed"


def _every_algorithm() -> list:
    return [
        {"name": "tpm", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": 2000, "default_max_completion": 10}},
        {"name": "spend", "limit_keys": ["header:x-api-key"], "algorithm": "cost_based",
         "algorithm_config": {"budget": 30, "period": "1d", "cost_key": "header:x-units",
                              "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}},
        {"name": "in-flight", "limit_keys": ["header:x-api-key"], "algorithm": "concurrency",
         "algorithm_config": {"max_in_flight": 4}},
    ]


def test_every_algorithm_is_driven_to_its_rejection():
    engine = make_engine(_bundle(rules=_every_algorithm()), mode="reverse_proxy", backend_url="http://127.0.0.1:9",
                         llm_format="openai")
    plan = _start(engine)
    assert [r["algorithm"] for r in plan["rules"]] == ["token_bucket_llm", "cost_based", "concurrency"]
    assert plan["rules"][1]["request"]["headers"]["x-units"] == "1"
    reasons = []
    for i in range(3):
        assert hdr(_send(engine, plan, i), "X-Fairvisor-Selftest") == "allowed", plan["rules"][i]["rule"]
        drained = _send(engine, plan, i, "drain")
        assert drained.status == 429 and hdr(drained, "X-Fairvisor-Selftest") == "rejected"
        reasons.append(hdr(drained, "X-Fairvisor-Reason"))
    assert reasons == ["tpm_exceeded", "budget_exhausted", "concurrency_exceeded"]
    assert len(engine.reservations) == 0  # nothing to settle: no self-test answer opened a reservation


def test_debug_log_level_and_hidden_reasons_keep_self_test_answers():
    for settings in ({"log_level": "debug"}, {"hide_reason": True}):
        engine = make_engine(_bundle(), **settings)
        plan = _start(engine)
        assert plan["hide_reason"] is bool(settings.get("hide_reason"))
        assert hdr(_send(engine, plan, 0), "X-Fairvisor-Selftest") == "allowed"  # the first request, traced
        drained = _send(engine, plan, 0, "drain")
        assert drained.status == 429 and hdr(drained, "X-Fairvisor-Selftest") == "rejected"
        assert (hdr(drained, "X-Fairvisor-Reason") is None) is bool(settings.get("hide_reason"))


def test_a_rule_keyed_on_the_model_gets_the_model_it_matches_in_the_body():
    rule = _rule("gpt4", ["header:x-api-key", "llm:model"], 2, match={"llm:model": "gpt-4o"})
    engine = make_engine(_bundle(rules=[rule]), mode="reverse_proxy", backend_url="http://127.0.0.1:9",
                         llm_format="openai")
    plan = _start(engine)
    assert json.loads(plan["rules"][0]["request"]["body"])["model"] == "gpt-4o"
    assert hdr(_send(engine, plan, 0), "X-Fairvisor-Selftest") == "allowed"
    assert hdr(_send(engine, plan, 0, "drain"), "X-Fairvisor-Selftest") == "rejected"


def test_without_an_admin_listener_no_request_is_self_test_traffic():
    engine = make_engine(_bundle(), admin_listen="off")
    assert "x-fairvisor-selftest" not in engine.hello_reply.headers
    reply = operator_api.selftest_start(engine, {}, None)
    assert reply.status == 409 and json.loads(reply.body)["reason"] == "admin_listener_off"
    assert "x-fairvisor-selftest" in make_engine(_bundle()).hello_reply.headers
