"""`fairvisor coverage` against a real Engine's report served over HTTP."""

import json

from click.testing import CliRunner

from pyengine import coverage as engine_coverage
from pyengine.cli.main import main
from tests.cli.admin_stub import admin_server, routes
from tests.engine.helpers import decide, make_engine

KEYED = {"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
         "algorithm_config": {"tokens_per_second": 1, "burst": 100}}
BUNDLE = {"bundle_version": 1, "policies": [{"id": "api", "spec": {"selector": {"pathPrefix": "/v1/"},
                                                                   "rules": [KEYED]}}]}


def _engine():
    engine = make_engine(BUNDLE, decision_log="off")
    for _ in range(6):
        decide(engine, {"X-Api-Key": "k"}, uri="/v1/chat")
    decide(engine, {}, uri="/v1/chat")
    for n in range(3):
        decide(engine, {"X-Api-Key": "k"}, uri=f"/v1beta/models/m{n}:generateContent")
    return engine  # 10 decisions: 6 limited, 1 skipped, 3 unmatched


def _run(engine, *args, token=None, env_token=None):
    table = {"/v1/admin/coverage": lambda: engine_coverage.reply(engine)}  # the report as the route answers it
    env = {"FAIRVISOR_ADMIN_TOKEN": env_token} if env_token else {}
    with admin_server(routes(table, token)) as url:
        return CliRunner().invoke(main, ["coverage", "--admin-url", url, *args], env=env)


def test_table_names_routes_rules_and_the_share():
    out = _run(_engine())
    assert out.exit_code == 0, out.output
    assert "10 decisions, 4 limited by nothing (40.0%), covered 60.0%" in out.output
    assert "Matched no policy: 3 requests" in out.output and "GET /v1beta/models  3" in out.output
    assert "GET /v1/chat  1" in out.output
    assert "api     per-key  1" in out.output


def test_json_is_the_engine_report():
    out = _run(_engine(), "--json")
    assert out.exit_code == 0
    assert json.loads(out.output)["no_policy"]["routes"] == [{"route": "GET /v1beta/models", "requests": 3}]


def test_fail_under_exits_1_below_and_0_at_or_above():
    below = _run(_engine(), "--fail-under", "60.5")
    assert below.exit_code == 1 and "60.0% of the traffic was limited, under --fail-under 60.5%" in below.output
    assert _run(_engine(), "--fail-under", "60").exit_code == 0


def test_token_from_the_environment_and_401_exits_5():
    assert _run(_engine(), token="s3cret", env_token="s3cret").exit_code == 0
    refused = _run(_engine(), token="s3cret", env_token="wrong")
    assert refused.exit_code == 5 and "FAIRVISOR_ADMIN_TOKEN" in refused.output


def test_unreachable_exits_3():
    out = CliRunner().invoke(main, ["coverage", "--admin-url", "http://127.0.0.1:1"])
    assert out.exit_code == 3 and "cannot reach the admin listener" in out.output
