"""Agent guards through real nginx: loop detection, the spend circuit breaker, shadow mode."""

import json
import re
import time

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.integration


def metrics_text(edge) -> str:
    return edge.admin("/metrics").body.decode()


def gauge(edge, pattern: str) -> float | None:
    m = re.search("^" + pattern + r" (\S+)$", metrics_text(edge), re.M)
    return float(m.group(1)) if m else None


def agent_policy(loop: dict) -> dict:
    return {"bundle_version": 1, "policies": [{"id": "agent", "spec": {
        "selector": {"pathPrefix": "/"},
        "rules": [{"name": "org-rps", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
                   "algorithm_config": {"tokens_per_second": 100, "burst": 1000}}],
        "loop_detection": {"enabled": True, **loop}}}]}


def chat(user: str, tool: str) -> bytes:
    return json.dumps({"model": "m", "messages": [
        {"role": "user", "content": user}, {"role": "assistant", "content": "calling"},
        {"role": "tool", "content": tool}]}).encode()


def test_loop_detection_identical_vs_different_agent_requests(start_edge, upstream):
    edge = start_edge(agent_policy({"window_seconds": 30, "threshold_identical_requests": 4, "action": "reject"}),
                      flags=["--mode", "reverse_proxy", "--backend-url", upstream.url,
                             "--retry-jitter", "off"])  # the base Retry-After (tests/engine/test_jitter.py)
    h = {"X-Org": "acme", "Content-Type": "application/json"}
    same = [edge.request("POST", "/v1/chat/completions", headers=h, body=chat("fix it", "error 1"))
            for _ in range(5)]
    assert [r.status for r in same] == [200, 200, 200, 429, 429]
    assert same[3].headers["X-Fairvisor-Reason"] == "loop_detected"
    assert same[3].headers["Retry-After"] == "30"
    assert len(upstream.requests) == 3  # the looping ones never reached the upstream

    different = [edge.request("POST", "/v1/chat/completions", headers=h, body=chat("fix it", f"error {i + 2}"))
                 for i in range(5)]
    assert [r.status for r in different] == [200] * 5
    other_org = edge.request("POST", "/v1/chat/completions", headers={**h, "X-Org": "globex"},
                             body=chat("fix it", "error 1"))
    assert other_org.status == 200
    assert gauge(edge, 'fairvisor_loop_detected_total\\{policy="agent"\\}') == 2


def test_loop_window_slides_across_its_boundary(start_edge):
    """window 2 s, threshold 3: at t = 0, 1.0, 2.3 no loop (t=0 has left), at 2.4 a loop."""
    edge = start_edge(agent_policy({"window_seconds": 2, "threshold_identical_requests": 3, "action": "reject"}))
    start = time.monotonic()
    sent = []
    for at_s in (0.0, 1.0, 2.3, 2.4):
        while time.monotonic() - start < at_s:  # real time is the subject of this test
            time.sleep(0.005)
        r = edge.decide(headers={"X-Org": "acme"})
        sent.append((time.monotonic() - start, r.status))
    offsets = [t for t, _ in sent]
    # Each request landed on its side of the boundary (decisions take ~1 ms).
    assert offsets[2] - offsets[0] > 2.0 and offsets[3] - offsets[1] < 2.0
    assert [s for _, s in sent] == [200, 200, 200, 429]


def test_circuit_breaker_opens_half_opens_and_closes(start_edge):
    reset_s = 2.4  # auto_reset_after_minutes = 0.04; half-open lasts as long
    edge = start_edge({"bundle_version": 1, "policies": [{"id": "spend", "spec": {
        "selector": {"pathPrefix": "/"},
        "rules": [{"name": "daily", "limit_keys": ["header:x-org"], "algorithm": "cost_based",
                   "algorithm_config": {"budget": 1000, "period": "1d", "cost_key": "header:x-cost",
                                        "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}],
        "circuit_breaker": {"enabled": True, "spend_rate_threshold_per_minute": 10,
                            "auto_reset_after_minutes": reset_s / 60}}}]},
                      flags=["--retry-jitter", "off"])  # the base Retry-After (tests/engine/test_jitter.py)

    def spend(cost: float, org: str = "acme"):
        return edge.decide(headers={"X-Org": org, "X-Cost": str(cost)})

    state = 'fairvisor_circuit_state\\{policy="spend"\\}'
    assert [spend(5).status, spend(5).status] == [200, 200]
    assert gauge(edge, state) == 0
    opened = spend(1)
    opened_at = time.monotonic()
    assert opened.status == 429 and opened.headers["X-Fairvisor-Reason"] == "circuit_breaker_open"
    assert opened.headers["Retry-After"] == "3"
    assert gauge(edge, state) == 1
    assert gauge(edge, 'fairvisor_circuit_breakers\\{policy="spend",state="open"\\}') == 1
    assert spend(1, org="globex").status == 200  # per primary key
    assert spend(0.01).status == 429  # open: everything refused

    wait_until(lambda: gauge(edge, state) == 2, reset_s + 2, "half-open")
    assert time.monotonic() - opened_at >= reset_s - 0.05
    assert spend(4).status == 200  # half-open lets traffic through, measured afresh
    wait_until(lambda: gauge(edge, state) == 0, reset_s + 2, "closed after a calm probation")
    assert spend(4).status == 200
    assert gauge(edge, 'fairvisor_circuit_breakers\\{policy="spend",state="open"\\}') == 0
    # 8 spent in the sliding minute since half-open; 5 more would make 13 > 10: open again.
    assert spend(5).status == 429
    assert gauge(edge, state) == 1


def test_shadow_responses_are_identical_to_no_policy_while_metrics_count(start_edge):
    shadow = {"bundle_version": 1, "policies": [{"id": "trial", "spec": {
        "selector": {"pathPrefix": "/api/"}, "mode": "shadow",
        "rules": [{"name": "tight", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
                   "algorithm_config": {"tokens_per_second": 0.01, "burst": 2}}],
        "loop_detection": {"enabled": True, "window_seconds": 60, "threshold_identical_requests": 2,
                           "action": "reject"}}}]}
    edge = start_edge(shadow)

    def shape(r):
        return r.status, r.body, sorted((k, v) for k, v in r.headers.items() if k.lower() != "date")

    unpoliced = [shape(edge.decide(uri="/other", headers={"X-Org": "acme"})) for _ in range(5)]
    shadowed = [shape(edge.decide(uri="/api/x", headers={"X-Org": "acme"})) for _ in range(5)]
    assert shadowed == unpoliced
    assert shadowed[0][0] == 200
    text = metrics_text(edge)
    # Requests 2..5 repeat request 1: each would be refused as a loop. All-or-nothing holds in
    # shadow state too, so their shadow rate charges were undone and the bucket (burst 2) never ran dry.
    assert 'fairvisor_would_reject_total{policy="trial",reason="loop_detected"} 4' in text
    assert 'reason="rate_limit_exceeded"' not in text
    assert 'fairvisor_decisions_total{action="would_reject",reason="loop_detected",policy="trial",policy_id="trial"} 4' in text
    # A distinct request per call: no loop, so the shadow rate rule would refuse from the third.
    for i in range(3):
        assert edge.decide(uri=f"/api/{i}", headers={"X-Org": "globex"}).headers.get("X-Fairvisor-Reason") is None
    assert 'fairvisor_would_reject_total{policy="trial",reason="rate_limit_exceeded"} 1' in metrics_text(edge)
