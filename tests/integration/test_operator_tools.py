"""coverage, shadow-report, validate --against and selftest against a real edge (nginx, shim,
engine over the socket), in both modes, with a stopped engine and a token-guarded listener."""

import json
import os
import signal
import subprocess

import pytest

from .conftest import FAIRVISOR, unsigned_jwt, wait_until
from .test_socket_access import base  # noqa: F401 - the fixture: a dir the nginx workers may enter

pytestmark = pytest.mark.integration

TOKEN = "adm-selftest-5e1f0c"


def _rule(name, key, burst):
    return {"name": name, "limit_keys": [key], "algorithm": "token_bucket",
            "algorithm_config": {"tokens_per_second": 0.001, "burst": burst}}


def _policy(version=1, tenant_burst=3):
    return {"bundle_version": version, "policies": [
        {"id": "api", "spec": {"selector": {"pathPrefix": "/api/"},
                               "rules": [_rule("per-tenant", "header:x-tenant", tenant_burst),
                                         _rule("per-org", "jwt:org_id", 50)]}},
        {"id": "trial", "spec": {"selector": {"pathPrefix": "/api/"}, "mode": "shadow",
                                 "rules": [_rule("strict-tenant", "header:x-tenant", 1)]}}]}


def _cli(*args, token=None, timeout_s=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
    if token:
        env["FAIRVISOR_ADMIN_TOKEN"] = token
    return subprocess.run(FAIRVISOR + list(args), capture_output=True, text=True, env=env, timeout=timeout_s)


def _admin_url(edge) -> str:
    return f"http://127.0.0.1:{edge.admin_port}"


def _public_url(edge) -> str:
    return f"http://127.0.0.1:{edge.port}"


def _tenant(edge, tenant="acme", org="org-1", path="/api/items"):
    headers = {"X-Tenant": tenant, "Authorization": "Bearer " + unsigned_jwt({"org_id": org})}
    return edge.request("GET", path, headers=headers)


def _decision_samples(edge) -> list[str]:
    text = edge.admin("/metrics").body.decode()
    return sorted(line for line in text.splitlines()
                  if line.startswith(("fairvisor_decisions_total", "fairvisor_rule_skipped_total",
                                      "fairvisor_would_reject_total")))


@pytest.fixture
def proxy(start_edge, upstream):
    return start_edge(_policy(), flags=["--mode", "reverse_proxy", "--backend-url", upstream.url,
                                        "--admin-token", TOKEN])


# -- coverage --------------------------------------------------------------------------

def test_coverage_names_unmatched_routes_skipped_rules_and_fails_under(proxy):
    for _ in range(2):
        assert _tenant(proxy).status == 200
    for n in range(3):
        assert proxy.request("POST", f"/v1beta/models/m{n}:generateContent").status == 200  # no policy
    assert proxy.request("GET", "/api/items").status == 200  # no key for either rule: nothing limits it
    out = _cli("coverage", "--admin-url", _admin_url(proxy), "--json", token=TOKEN)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["no_policy"]["routes"] == [{"route": "POST /v1beta/models", "requests": 3}]
    assert r["no_rule_applied"]["routes"] == [{"route": "GET /api/items", "requests": 1}]
    assert {"policy": "api", "rule": "per-tenant", "skipped": 1} in r["rules_skipped"]
    assert (r["decisions"], r["unlimited"]) == (6, 4)
    under = _cli("coverage", "--admin-url", _admin_url(proxy), "--fail-under", "50", token=TOKEN)
    assert under.returncode == 1 and "33.33% of the traffic was limited, under --fail-under 50%" in under.stderr
    assert _cli("coverage", "--admin-url", _admin_url(proxy)).returncode == 5  # no token


# -- shadow-report ---------------------------------------------------------------------

def test_shadow_report_from_the_edge_and_from_its_log(proxy):
    for _ in range(3):
        _tenant(proxy, tenant="bulk-co")
    _tenant(proxy, tenant="small-co")

    def report():
        out = _cli("shadow-report", "--admin-url", _admin_url(proxy), "--since", "1h", "--json", token=TOKEN)
        assert out.returncode == 0, out.stderr
        [trial] = json.loads(out.stdout)["policies"]
        return trial if trial["would_reject"] == 2 else None

    trial = wait_until(report, 5.0, "the decision log to hold the would-rejects")
    assert trial["policy"] == "trial" and trial["tenants"] == 1
    assert trial["by_rule"] == [{"rule": "strict-tenant", "reason": "rate_limit_exceeded", "requests": 2}]
    assert trial["top_tenants"][0]["key"] != "bulk-co"  # hashed, as the decision log shows keys
    log = _cli("shadow-report", "--log", str(proxy.state_dir / "decisions.jsonl"), "--since", "1h")
    assert log.returncode == 0, log.stderr
    assert "trial: would have rejected 2 requests of 1 tenant" in log.stdout


# -- validate --against -----------------------------------------------------------------

def test_validate_against_the_bundle_in_force_replays_recent_traffic(proxy, tmp_path):
    for tenant, n in (("big-co", 3), ("tiny-co", 1)):
        for _ in range(n):
            assert _tenant(proxy, tenant=tenant).status == 200
    stricter = tmp_path / "stricter.json"
    stricter.write_text(json.dumps(_policy(version=2, tenant_burst=1)))
    out = _cli("validate", str(stricter), "--against", _admin_url(proxy), token=TOKEN)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "bundle_version 2 > 1: a reload would accept it" in out.stdout
    assert "policy api changed: rules changed per-tenant" in out.stdout
    assert "rejected: 0 under the bundle in force, 2 under this one" in out.stdout
    assert "newly rejected: 2 requests of 1 tenant" in out.stdout
    same = tmp_path / "same-version.json"
    same.write_text(json.dumps(_policy(version=1, tenant_burst=1)))
    refused = _cli("validate", str(same), "--against", _admin_url(proxy), token=TOKEN)
    assert refused.returncode == 1 and "a reload would REFUSE this bundle" in refused.stdout
    # Nothing of either replay touched the edge: big-co still has its last token.
    assert _tenant(proxy, tenant="big-co").headers["RateLimit-Remaining"] == "0"


# -- selftest --------------------------------------------------------------------------

def test_selftest_proves_every_rule_and_leaves_tenants_and_upstream_untouched(proxy, upstream):
    first = _tenant(proxy, tenant="fv-selftest", org="fv-selftest")  # a tenant with the synthetic values
    assert first.status == 200 and first.headers["RateLimit-Remaining"] == "2"
    reached, samples = len(upstream.requests), _decision_samples(proxy)
    out = _cli("selftest", "--url", _public_url(proxy), "--admin-url", _admin_url(proxy), "--json", token=TOKEN)
    assert out.returncode == 0, out.stderr + out.stdout
    results = {(r["policy"], r["rule"]): r for r in json.loads(out.stdout)["rules"]}
    assert {k: r["result"] for k, r in results.items()} == {
        ("api", "per-tenant"): "enforcing", ("api", "per-org"): "enforcing", ("trial", "strict-tenant"): "shadow"}
    assert results[("api", "per-tenant")]["status"] == 429
    assert "rate_limit_exceeded after 3 requests" in results[("api", "per-tenant")]["detail"]
    assert "ratelimit-limit: 50" in results[("api", "per-org")]["detail"]
    assert len(upstream.requests) == reached  # no self-test request reached the upstream
    assert _decision_samples(proxy) == samples  # nor a decision, skip or would-reject counter
    after = _tenant(proxy, tenant="fv-selftest", org="fv-selftest")
    assert after.headers["RateLimit-Remaining"] == "1"  # the tenant's bucket moved by its own request only
    ready = proxy.admin("/readyz").json()
    assert not any("fv-selftest" in json.dumps(k) for k in ready.get("top_rejected_keys", []))


def test_a_forged_selftest_header_is_ordinary_traffic(proxy, upstream):
    headers = {"X-Tenant": "mallory", "X-Fairvisor-Selftest": "0011223344aa.guess.0.drain"}
    codes = [proxy.request("GET", "/api/items", headers=headers).status for _ in range(4)]
    assert codes == [200, 200, 200, 429]  # charged like any request, and let through only while allowed
    assert sum(1 for r in upstream.requests if r["headers"].get("X-Tenant") == "mallory") == 3


def test_selftest_in_decision_service_mode(start_edge):
    edge = start_edge(_policy())
    _tenant_described = {"X-Original-Method": "GET", "X-Original-URI": "/api/items", "X-Tenant": "acme",
                         "Authorization": "Bearer " + unsigned_jwt({"org_id": "o"})}
    assert edge.request("POST", "/v1/decision", headers=_tenant_described).status == 200
    out = _cli("selftest", "--url", _public_url(edge), "--admin-url", _admin_url(edge))
    assert out.returncode == 0, out.stderr + out.stdout
    assert "decision_service, fail mode open" in out.stdout and out.stdout.endswith("2 enforcing, 1 shadow\n")
    out = _cli("selftest", "--url", _public_url(edge), "--admin-url", _admin_url(edge), "--json")
    results = {r["rule"]: r for r in json.loads(out.stdout)["rules"]}
    assert results["per-tenant"]["result"] == "enforcing" and results["per-tenant"]["status"] == 429


def test_selftest_names_a_rule_no_request_can_reach_and_exits_1(start_edge):
    policy = _policy()
    policy["policies"][0]["spec"]["rules"].append(
        {**_rule("office", "ip:address", 5), "match": {"ip:address": "198.51.100.7"}})
    edge = start_edge(policy)
    out = _cli("selftest", "--url", _public_url(edge), "--admin-url", _admin_url(edge))
    assert out.returncode == 1
    assert "api/office: ip:address cannot be set by a synthetic request to '198.51.100.7'" in out.stderr


def test_selftest_names_a_stopped_engine_and_exits_6(start_edge):
    edge = start_edge(_policy(), flags=["--engine-timeout-ms", "100"])
    pid = edge.engine_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        out = _cli("selftest", "--url", _public_url(edge), "--admin-url", _admin_url(edge))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert out.returncode == 6, out.stderr + out.stdout
    assert "engine_unavailable" in out.stderr and "the engine is unreachable from nginx" in out.stderr


def test_selftest_names_a_socket_the_nginx_workers_cannot_open(base):
    """As root (CI): nginx workers run as nobody, the engine socket is 0600 root: every request
    would fail open. The self-test says so, with the cause, and exits 6."""
    import grp
    import pwd

    from .conftest import free_port
    from .test_socket_access import SERVER, WORKER, Engine
    from .user_nginx import LUA_MODULES, UserNginx

    engine = Engine(base, "--engine-socket-mode", "0600")
    nginx = None
    try:
        include = subprocess.run(FAIRVISOR + ["nginx-include", "--engine-socket", str(engine.sock)],
                                 check=True, capture_output=True, text=True).stdout
        port, admin_port = free_port(), free_port()
        admin = (f"server {{ listen 127.0.0.1:{admin_port}; location / {{ "
                 'content_by_lua_block { require("fairvisor.shim").admin_route() } } }\n')
        nginx = UserNginx(base / "site", include + SERVER.format(port=port) + admin, port, main_extra=LUA_MODULES,
                          user_line=f"user {WORKER} {grp.getgrgid(pwd.getpwnam(WORKER).pw_gid).gr_name};\n")
        out = _cli("selftest", "--url", f"http://127.0.0.1:{port}", "--admin-url", f"http://127.0.0.1:{admin_port}")
        assert out.returncode == 6, out.stdout + out.stderr
        assert "the engine is unreachable from nginx (cause: permission_denied" in out.stderr
    finally:
        if nginx is not None:
            nginx.stop()
        engine.stop()


def test_coverage_in_decision_service_mode_counts_the_described_route(start_edge):
    edge = start_edge(_policy())
    for uri in ("/api/items", "/v1beta/models/m:generateContent", "/v1beta/models/n:generateContent"):
        assert edge.decide(uri=uri, method="POST", headers={"X-Tenant": "acme"}).status == 200
    out = _cli("coverage", "--admin-url", _admin_url(edge), "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["no_policy"]["routes"] == [{"route": "POST /v1beta/models", "requests": 2}]  # not /v1/decision
    assert (r["decisions"], r["unlimited"]) == (3, 2)
