"""Decision service end to end: real nginx + Lua shim + real engine, on loopback."""

import json
import os
import signal

import pytest

from .conftest import token_bucket_policy, unsigned_jwt, wait_until

pytestmark = pytest.mark.integration


def test_seed_walkthrough(start_edge):
    """`fairvisor run` with no config: the bundled policy (token_bucket 5/s, burst 10, per ip:address)."""
    edge = start_edge(policy=None)
    assert "curl" in edge.log() and "/v1/decision" in edge.log()  # the walkthrough is printed

    responses = [edge.decide(xff="10.0.0.1") for _ in range(12)]

    assert [r.status for r in responses] == [200] * 10 + [429] * 2
    for r in responses[:10]:
        assert r.body == b""
        assert r.headers.get("Content-Type") is None
        assert r.headers.get("X-Fairvisor-Degraded") is None
    for r in responses[10:]:
        assert r.headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["RateLimit"].startswith('"per-ip";')
        assert r.headers["RateLimit-Policy"].startswith('"per-ip";q=10')
        assert r.headers["Content-Type"] == "application/problem+json"
        problem = r.json()
        assert problem["status"] == 429
        assert problem["reason"] == "rate_limit_exceeded"
        assert problem["violated-policies"] == ["default-per-ip"]

    other = edge.decide(xff="10.0.0.2")
    assert other.status == 200
    assert other.headers.get("X-Fairvisor-Reason") is None

    ready = edge.get("/readyz")
    assert ready.status == 200
    assert ready.headers["Content-Type"].startswith("application/json")
    assert ready.json()["status"] == "ok"
    assert ready.json()["policy_version"] == 1
    assert set(ready.json()) == {"status", "ready", "policy_version", "policy_hash"}  # no detail in public

    assert edge.get("/livez").status == 200
    metrics = edge.get("/metrics")
    assert metrics.status == 200
    assert 'fairvisor_decisions_total{action="reject",reason="rate_limit_exceeded",policy="default-per-ip",policy_id="default-per-ip"} 2' \
        in metrics.body.decode()
    assert 'fairvisor_decisions_total{action="reject",reason="rate_limit_exceeded",policy="default-per-ip",policy_id="default-per-ip"} 2' \
        in edge.admin("/metrics").body.decode()  # the same counts on the admin listener


def test_sighup_reload_changes_described_headers(start_edge):
    """SIGHUP to `fairvisor run` reaches the engine; the new generation makes the shim re-describe."""
    edge = start_edge(token_bucket_policy("ip:address", tps=1, burst=5, version=1))
    assert edge.decide(xff="10.0.0.5").status == 200  # the shim now caches generation 1

    # Same size, inode and mtime as before, so only the signal (not the file watch) can reload it.
    policy_file = edge.runtime_dir.parent.parent / "policy.json"
    before = policy_file.stat()
    new_text = json.dumps(token_bucket_policy("header:x-a", tps=1, burst=1, version=2))
    assert len(new_text) == before.st_size
    policy_file.write_text(new_text)
    os.utime(policy_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.kill(edge.proc.pid, signal.SIGHUP)
    wait_until(lambda: edge.get("/readyz").json().get("policy_version") == 2, 10.0, "policy version 2")

    first = edge.decide(xff="10.0.0.5", headers={"X-A": "k1"})
    assert first.status == 200 and first.headers.get("X-Fairvisor-Degraded") is None
    # Keyed on the header now, not the address: another address with k1 is rejected.
    second = edge.decide(xff="10.0.0.6", headers={"X-A": "k1"})
    assert second.status == 429
    assert edge.decide(xff="10.0.0.6", headers={"X-A": "k2"}).status == 200


def test_get_is_accepted_for_auth_request(start_edge):
    edge = start_edge(token_bucket_policy("ip:address", tps=1, burst=1))
    h = {"X-Forwarded-For": "10.0.0.9", "X-Original-Method": "GET", "X-Original-URI": "/x"}
    assert edge.request("GET", "/v1/decision", headers=h).status == 200
    assert edge.request("GET", "/v1/decision", headers=h).status == 429


def test_jwt_org_keys_isolate_orgs(start_edge):
    edge = start_edge(token_bucket_policy("jwt:org_id", tps=1, burst=3, policy_id="per-org", rule="org-rps"))
    acme = {"Authorization": f"Bearer {unsigned_jwt({'org_id': 'acme', 'sub': 'u1'})}"}
    globex = {"Authorization": f"Bearer {unsigned_jwt({'org_id': 'globex', 'sub': 'u1'})}"}

    acme_statuses = [edge.decide(xff="10.0.0.1", headers=acme).status for _ in range(4)]
    assert acme_statuses == [200, 200, 200, 429]

    # Same client address, other org: its own bucket, still full.
    assert [edge.decide(xff="10.0.0.1", headers=globex).status for _ in range(3)] == [200, 200, 200]
    rejected = edge.decide(xff="10.0.0.1", headers=acme)
    assert rejected.status == 429
    assert rejected.headers["RateLimit"].startswith('"org-rps";')


def test_unknown_path_is_a_json_404(start_edge):
    edge = start_edge(token_bucket_policy("ip:address", tps=5, burst=10))
    r = edge.get("/nope")
    assert r.status == 404
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["error"] == "not_found"


def test_usage_settles_a_reservation_made_by_a_decision(start_edge):
    policy = {"bundle_version": 1, "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/"}, "rules": [{
        "name": "org-tpm", "limit_keys": ["jwt:org_id"], "algorithm": "token_bucket_llm",
        "algorithm_config": {"tokens_per_minute": 100_000}}]}}]}
    edge = start_edge(policy)
    auth = {"Authorization": f"Bearer {unsigned_jwt({'org_id': 'acme'})}", "X-Token-Estimate": "50"}
    decision = edge.decide(method="POST", uri="/v1/chat/completions", headers=auth)
    assert decision.status == 200
    reservation = decision.headers["X-Fairvisor-Reservation"]

    report = {"reservation_id": reservation, "prompt_tokens": 40, "completion_tokens": 7, "model": "gpt-4o-mini"}
    settled = edge.request("POST", "/v1/usage", body=json.dumps(report).encode(),
                           headers={"Content-Type": "application/json"})
    assert settled.status == 200
    assert settled.headers["Content-Type"] == "application/json"
    assert settled.json()["settled"] is True

    again = edge.request("POST", "/v1/usage", body=json.dumps(report).encode())
    assert again.status == 404  # already settled: the engine's status reaches the client


def test_sigint_stops_nginx_then_the_engine(start_edge):
    edge = start_edge(token_bucket_policy("ip:address", tps=5, burst=10))
    pids = [edge.pid_of("nginx.pid"), edge.engine_pid()]
    os.kill(edge.proc.pid, signal.SIGINT)
    assert edge.proc.wait(timeout=20) == 0
    log = edge.log()
    assert log.index("fairvisor: nginx stopped") < log.index("fairvisor: engine stopped")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
