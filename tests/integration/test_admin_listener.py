"""The admin listener through real nginx (issue 13, finding 10; contract §2, §8): metrics and full
readiness there, behind FAIRVISOR_ADMIN_TOKEN; the public listener keeps /livez and a bare /readyz."""

import json
import socket
import subprocess
import time

import pytest

from .conftest import FAIRVISOR, free_port, token_bucket_policy, unsigned_jwt

pytestmark = pytest.mark.integration

PUBLIC_READY_KEYS = {"status", "ready", "policy_version", "policy_hash"}
TOKEN = "adm-7f3c9e1b2d4a"
REFUSE_TIMEOUT_S = 15.0


def _reject_some(edge, n: int = 4) -> None:
    """Requests over the limit (burst 1), so that there are rejected keys to leak."""
    codes = [edge.request("GET", "/api/items", headers={"X-Tenant": "victim-corp"}).status for _ in range(n)]
    assert 429 in codes, codes


@pytest.fixture
def proxy(start_edge, upstream):
    policy = token_bucket_policy("header:x-tenant", tps=0.001, burst=1, policy_id="per-tenant")
    return start_edge(policy, flags=["--mode", "reverse_proxy", "--backend-url", upstream.url])


def test_public_readyz_in_reverse_proxy_mode_says_only_status_version_and_hash(proxy):
    _reject_some(proxy)
    ready = proxy.get("/readyz", fresh=True)
    assert ready.status == 200
    body = ready.json()
    assert set(body) == PUBLIC_READY_KEYS
    assert body["status"] == "ok" and body["ready"] is True and body["policy_version"] == 1
    assert b"victim" not in ready.body and b"top_rejected" not in ready.body


def test_public_metrics_in_reverse_proxy_mode_is_404_and_never_reaches_the_upstream(proxy, upstream):
    _reject_some(proxy)
    before = len(upstream.requests)
    metrics = proxy.get("/metrics", fresh=True)
    assert metrics.status == 404
    assert b"fairvisor_" not in metrics.body
    assert len(upstream.requests) == before
    assert proxy.get("/livez", fresh=True).status == 200


def test_admin_listener_serves_metrics_full_readiness_and_livez(proxy):
    _reject_some(proxy)
    metrics = proxy.admin("/metrics")
    assert metrics.status == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    assert 'fairvisor_decisions_total{action="reject",reason="rate_limit_exceeded",policy="per-tenant"' \
        in metrics.body.decode()
    ready = proxy.admin("/readyz")
    assert ready.status == 200
    body = ready.json()
    assert PUBLIC_READY_KEYS < set(body)
    assert body["state"]["backend"] == "memory" and body["state"]["keys"] >= 1
    assert body["uptime_s"] >= 0
    assert [t["policy"] for t in body["top_rejected_keys"]] == ["per-tenant"]
    assert proxy.admin("/livez").status == 200
    assert proxy.admin("/v1/admin/nothing-yet").status == 404
    assert proxy.admin("/metrics", method="POST").status == 405


def test_decision_service_public_listener_keeps_metrics_but_readyz_is_bare(start_edge):
    policy = token_bucket_policy("jwt:org", tps=0.001, burst=1, policy_id="per-org")
    edge = start_edge(policy)
    jwt = {"Authorization": "Bearer " + unsigned_jwt({"org": "victim-corp"})}
    assert [edge.decide(headers=jwt).status for _ in range(3)] == [200, 429, 429]
    ready = edge.get("/readyz", fresh=True)
    assert ready.status == 200 and set(ready.json()) == PUBLIC_READY_KEYS
    # Contract §2: in decision-service mode /metrics is public as well as on the admin listener.
    public = edge.get("/metrics", fresh=True)
    admin = edge.admin("/metrics")
    assert public.status == admin.status == 200
    line = 'fairvisor_decisions_total{action="reject",reason="rate_limit_exceeded",policy="per-org"'
    assert line in public.body.decode() and line in admin.body.decode()
    assert edge.admin("/readyz").json()["top_rejected_keys"][0]["rejections"] == 2


def test_with_a_token_every_admin_endpoint_needs_it(start_edge, upstream):
    policy = token_bucket_policy("header:x-tenant", tps=0.001, burst=1, policy_id="per-tenant")
    edge = start_edge(policy, flags=["--mode", "reverse_proxy", "--backend-url", upstream.url],
                      env={"FAIRVISOR_ADMIN_TOKEN": TOKEN})
    for path in ("/metrics", "/readyz", "/livez", "/v1/admin/nothing-yet"):
        missing = edge.admin(path, token=None)
        assert missing.status == 401, path
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"fairvisor_decisions" not in missing.body and b"policy_version" not in missing.body
        assert edge.admin(path, token=TOKEN + "x").status == 401, path
        assert edge.admin(path, token=TOKEN[:-1]).status == 401, path
        assert edge.admin(path, headers={"Authorization": f"Basic {TOKEN}"}, token=None).status == 401, path
    assert edge.admin("/metrics", token=TOKEN).status == 200
    assert edge.admin("/readyz", token=TOKEN).json()["policy_version"] == 1
    assert edge.admin("/livez", token=TOKEN).status == 200
    assert edge.admin("/readyz", headers={"Authorization": f"bearer {TOKEN}"}, token=None).status == 200
    # The public probes never ask for it.
    assert edge.get("/readyz", fresh=True).status == 200
    assert edge.get("/livez", fresh=True).status == 200


def _run_expecting_refusal(tmp_path, args: list[str], env: dict | None = None) -> tuple[int, str, int]:
    """`fairvisor run` that must exit by itself: (status, output, public port)."""
    port = free_port()
    proc = subprocess.run(FAIRVISOR + ["run", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "s"),
                                       *args], capture_output=True, text=True, timeout=REFUSE_TIMEOUT_S,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr, port


def _nothing_listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_non_loopback_admin_listener_without_a_token_refuses_to_start(tmp_path):
    admin_port = free_port()
    code, out, port = _run_expecting_refusal(tmp_path, ["--admin-listen", f"0.0.0.0:{admin_port}"])
    assert code != 0
    assert f"FAIRVISOR_ADMIN_LISTEN: 0.0.0.0:{admin_port} is reachable from other machines" in out
    assert "FAIRVISOR_ADMIN_TOKEN" in out
    assert _nothing_listens(port) and _nothing_listens(admin_port)


def test_a_non_loopback_admin_listener_with_a_token_starts(start_edge):
    admin_port = free_port()
    edge = start_edge(flags=["--admin-listen", f"0.0.0.0:{admin_port}"], env={"FAIRVISOR_ADMIN_TOKEN": TOKEN})
    assert edge.admin("/readyz", token=None).status == 401
    assert edge.admin("/readyz").status == 200


def test_an_admin_port_already_taken_is_said_at_once(start_edge, tmp_path):
    first = start_edge()  # holds its own admin port, as a first instance on this machine would
    start = time.monotonic()
    code, out, port = _run_expecting_refusal(tmp_path, ["--admin-listen", f"127.0.0.1:{first.admin_port}"])
    assert code == 1
    assert f"FAIRVISOR_ADMIN_LISTEN 127.0.0.1:{first.admin_port}: cannot listen: " in out
    assert "--admin-listen" in out  # and how to give this instance another one
    assert time.monotonic() - start < 10.0
    assert _nothing_listens(port)
    assert first.admin("/readyz").status == 200  # the first instance is untouched


def _status(edge, *args, token: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", **({"FAIRVISOR_ADMIN_TOKEN": token} if token else {})}
    return subprocess.run(FAIRVISOR + ["status", *args], capture_output=True, text=True, timeout=30, env=env)


def test_fairvisor_status_reads_the_admin_listener_of_a_live_edge(start_edge, upstream):
    policy = token_bucket_policy("header:x-tenant", tps=0.001, burst=1, policy_id="per-tenant", version=5)
    edge = start_edge(policy, flags=["--mode", "reverse_proxy", "--backend-url", upstream.url],
                      env={"FAIRVISOR_ADMIN_TOKEN": TOKEN})
    _reject_some(edge)
    admin_url = f"http://127.0.0.1:{edge.admin_port}"
    ok = _status(edge, "--admin-url", admin_url, "--json", token=TOKEN)
    assert ok.returncode == 0, ok.stderr
    s = json.loads(ok.stdout)
    assert s["source"] == admin_url and s["ready"] is True
    assert s["health"]["policy_version"] == 5
    assert s["health"]["top_rejected_keys"][0]["policy"] == "per-tenant"
    assert {"action": "reject", "reason": "rate_limit_exceeded", "policy": "per-tenant", "count": 3} in s["decisions"]
    table = _status(edge, "--admin-url", admin_url, token=TOKEN)
    assert table.returncode == 0 and table.stdout.startswith("Fairvisor  ok  via " + admin_url)
    # Without the token: refused, and said so.
    refused = _status(edge, "--admin-url", admin_url)
    assert refused.returncode == 5 and "FAIRVISOR_ADMIN_TOKEN" in refused.stderr
    # Pointed at the public listener by mistake: no metrics there, and it says where to look.
    public = _status(edge, "--admin-url", f"http://127.0.0.1:{edge.port}", token=TOKEN)
    assert public.returncode == 3 and "FAIRVISOR_ADMIN_LISTEN" in public.stderr
