"""/metrics from a running edge after known traffic: exact counters, the same with 1 and 2 nginx workers."""

import pytest

from pyengine.cli.status_cmd import parse_metrics, value

from .conftest import token_bucket_policy

pytestmark = pytest.mark.integration

CONTRACT_METRICS = ("fairvisor_decisions_total", "fairvisor_decision_duration_seconds",
                    "fairvisor_tokens_reserved_total", "fairvisor_tokens_settled_total",
                    "fairvisor_token_estimate_error_ratio", "fairvisor_would_reject_total",
                    "fairvisor_loop_detected_total", "fairvisor_circuit_state", "fairvisor_kill_switch_active",
                    "fairvisor_policy_info", "fairvisor_policy_reload_total", "fairvisor_engine_unavailable_total")
SCRAPES = 4  # fresh connections, so with 2 workers the scrapes land on either


def traffic_then_scrape(edge) -> list[dict]:
    for _ in range(5):
        edge.request("POST", "/v1/decision", fresh=True,
                     headers={"X-Forwarded-For": "10.0.0.1", "X-Original-Method": "GET", "X-Original-URI": "/a"})
    for _ in range(2):
        edge.request("POST", "/v1/decision", fresh=True,
                     headers={"X-Forwarded-For": "10.0.0.2", "X-Original-Method": "GET", "X-Original-URI": "/a"})
    scrapes = []
    for _ in range(SCRAPES):
        resp = edge.admin("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        scrapes.append(parse_metrics(resp.body.decode()))
    return scrapes


def summary(m: dict) -> dict:
    return {
        "allow": value(m, "fairvisor_decisions_total", action="allow", reason="", policy="seed"),
        "reject": value(m, "fairvisor_decisions_total", action="reject", reason="rate_limit_exceeded", policy="seed"),
        "decisions": value(m, "fairvisor_decisions_total"),
        "duration_count": value(m, "fairvisor_decision_duration_seconds_count"),
        "duration_inf": value(m, "fairvisor_decision_duration_seconds_bucket", le="+Inf"),
        "policy_info": value(m, "fairvisor_policy_info", version="1"),
        "reload_ok": value(m, "fairvisor_policy_reload_total", result="ok"),
        "kill_switch_active": value(m, "fairvisor_kill_switch_active"),
        "engine_unavailable": value(m, "fairvisor_engine_unavailable_total"),
        "would_reject": value(m, "fairvisor_would_reject_total"),
    }


def test_exact_counters_agree_with_one_and_two_workers(start_edge):
    expected = {"allow": 5, "reject": 2, "decisions": 7, "duration_count": 7, "duration_inf": 7, "policy_info": 1,
                "reload_ok": 1, "kill_switch_active": 0, "engine_unavailable": 0, "would_reject": 0}
    for workers in (1, 2):
        # burst 3, refilling one token per 1000 s: 10.0.0.1 gets 3 of 5, 10.0.0.2 both of 2.
        edge = start_edge(token_bucket_policy("ip:address", tps=0.001, burst=3), workers=workers)
        scrapes = traffic_then_scrape(edge)
        assert [summary(m) for m in scrapes] == [expected] * SCRAPES, f"{workers} worker(s)"
        text = edge.admin("/metrics").body.decode()
        for name in CONTRACT_METRICS:  # contract §6: every metric is declared, labelled or not
            assert f"# TYPE {name} " in text, name
        assert value(scrapes[0], "fairvisor_tokens_reserved_total") == 0
        assert value(scrapes[0], "fairvisor_tokens_settled_total", type="prompt") == 0
