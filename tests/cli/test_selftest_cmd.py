"""`fairvisor selftest`'s reading of the edge's answers, and the command against a real Engine over HTTP."""

import json

from click.testing import CliRunner

from pyengine.cli.main import main
from pyengine.cli.selftest_cmd import CANNOT_MATCH, NO_ENGINE, no_mark
from pyengine.protocol.messages import SURFACE_DESCRIBED
from tests.cli.admin_stub import admin_server, engine_routes
from tests.engine.helpers import decide, make_engine

RULE = {"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 1, "burst": 4}}


def test_an_answer_without_the_mark_names_the_fail_mode_or_the_route():
    result, cause = no_mark(200, {"x-fairvisor-degraded": "engine_unavailable"})
    assert result == NO_ENGINE and "FAILS OPEN" in cause and "FAIRVISOR_FAIL_MODE=open" in cause
    result, cause = no_mark(503, {"x-fairvisor-reason": "engine_unavailable"})
    assert result == NO_ENGINE and "FAIRVISOR_FAIL_MODE=closed" in cause
    result, cause = no_mark(200, {})
    assert result == CANNOT_MATCH and "does not reach the engine" in cause


def _shim(engine, degraded=False):
    """The public listener in decision-service mode, played over HTTP: /v1/decision answered with
    the engine's verdict (status and headers), or, `degraded`, as a fail-open shim without one."""

    def answer(method, path, headers, body):
        if degraded:
            return 200, "text/plain", "", ["X-Fairvisor-Degraded", "engine_unavailable"]
        v = decide(engine, {k.lower(): v for k, v in headers.items()}, method="POST", uri="/v1/decision",
                   surface=SURFACE_DESCRIBED)
        return v.status or 200, "application/json", v.body or "", v.headers

    return answer


def _engine(selector=None):
    return make_engine({"bundle_version": 1, "policies": [{"id": "api", "spec": {
        "selector": selector or {"pathPrefix": "/v1/"}, "rules": [RULE]}}]})


def _run(engine, degraded=False, *args):
    with admin_server(engine_routes(engine)) as admin, admin_server(_shim(engine, degraded)) as public:
        return CliRunner().invoke(main, ["selftest", "--url", public, "--admin-url", admin, *args])


def test_enforcing_rule_end_to_end_and_the_run_is_ended():
    engine = _engine()
    out = _run(engine, False, "--json")
    assert out.exit_code == 0, out.output
    [r] = json.loads(out.output)["rules"]
    assert (r["result"], r["status"], r["reason"]) == ("enforcing", 429, "rate_limit_exceeded")
    assert "after 4 requests" in r["detail"] and "ratelimit-limit: 4" in r["detail"]
    assert not engine.selftests.runs  # ended


def test_a_fail_open_edge_exits_6_and_says_so():
    engine = _engine()
    out = _run(engine, True)
    assert out.exit_code == 6 and "FAILS OPEN" in out.output
    assert not engine.selftests.runs


def test_strict_fails_a_rule_skipped_for_a_missing_key():
    engine = _engine()
    decide(engine, {}, uri="/v1/x")  # per-key skipped once
    assert _run(engine).exit_code == 0
    strict = _run(engine, False, "--strict")
    assert strict.exit_code == 1 and "api/per-key" in strict.output and "lacked its key" in strict.output
