"""Live operations through real nginx: kill switches via the policy file, refused reloads, kill -9 durability."""

import json
import os
import re
import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.integration

RELOAD_BOUND_S = 1.0  # a changed policy file is in force within this, without a restart
LOSS_BOUND_S = 1.0  # a kill -9 loses at most this much accounting


def api_policy(version: int, kill_switches=None, burst: float = 1000) -> dict:
    doc = {"bundle_version": version, "policies": [{"id": "api", "spec": {
        "selector": {"pathPrefix": "/"},
        "rules": [{"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
                   "algorithm_config": {"tokens_per_second": 1, "burst": burst}}]}}]}
    if kill_switches is not None:
        doc["kill_switches"] = kill_switches
    return doc


def push(edge, doc) -> None:
    """Replace the policy file atomically, as docs/operations.md tells operators to."""
    path = edge.runtime_dir.parent.parent / "policy.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, path)


def metric(edge, pattern: str) -> float | None:
    m = re.search("^" + pattern + r" (\S+)$", edge.admin("/metrics").body.decode(), re.M)
    return float(m.group(1)) if m else None


def status_of(edge, key: str, uri: str = "/api/items") -> int:
    return edge.decide(uri=uri, headers={"X-Api-Key": key}).status


def time_until(predicate, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    wait_until(predicate, timeout_s, what, interval_s=0.01)
    return time.monotonic() - start


def test_kill_switch_in_the_policy_file_applies_within_a_second_and_lifts(start_edge):
    edge = start_edge(api_policy(1), flags=["--retry-jitter", "off"])  # the base Retry-After
    assert status_of(edge, "leaked") == 200

    push(edge, api_policy(2, [{"scope_key": "header:x-api-key", "scope_value": "leaked", "route": "/api/",
                               "reason": "key leaked"}]))
    on_s = time_until(lambda: status_of(edge, "leaked") == 429, 5.0, "the kill switch to apply")
    r = edge.decide(headers={"X-Api-Key": "leaked"})
    assert r.headers["X-Fairvisor-Reason"] == "kill_switch_active" and r.headers["Retry-After"] == "3600"
    assert "key leaked" not in r.body.decode()  # the reason is for operators only (contract §1)
    assert status_of(edge, "leaked", uri="/health") == 200  # outside the switch's route
    assert status_of(edge, "other") == 200
    assert metric(edge, "fairvisor_kill_switch_active") == 1

    push(edge, api_policy(3, []))
    off_s = time_until(lambda: status_of(edge, "leaked") == 200, 5.0, "the kill switch to lift")

    # A switch with an expiry: enforced with Retry-After = the seconds left, then ignored.
    expires = datetime.now(timezone.utc) + timedelta(seconds=3)
    push(edge, api_policy(4, [{"scope_key": "header:x-api-key", "scope_value": "leaked",
                               "expires_at": expires.isoformat().replace("+00:00", "Z")}]))
    wait_until(lambda: status_of(edge, "leaked") == 429, 5.0, "the expiring switch to apply")
    assert 1 <= int(edge.decide(headers={"X-Api-Key": "leaked"}).headers["Retry-After"]) <= 3
    wait_until(lambda: status_of(edge, "leaked") == 200, 6.0, "the switch to expire")
    assert datetime.now(timezone.utc) >= expires - timedelta(milliseconds=50)  # not lifted early

    print(f"kill switch on after {on_s:.3f} s, off after {off_s:.3f} s")
    assert on_s < RELOAD_BOUND_S and off_s < RELOAD_BOUND_S
    assert metric(edge, 'fairvisor_policy_reload_total\\{result="refused"\\}') is None


def test_broken_policy_pushed_under_traffic_is_refused_and_the_old_one_enforces(start_edge):
    edge = start_edge(api_policy(1, burst=5))
    stop = threading.Event()
    answers: list[int] = []

    def traffic():  # another client keeps deciding while the reloads happen
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=5)
        while not stop.is_set():
            conn.request("POST", "/v1/decision", headers={"X-Original-URI": "/x", "X-Api-Key": "bg",
                                                          "X-Forwarded-For": "10.9.9.9"})
            resp = conn.getresponse()
            resp.read()
            answers.append(resp.status)
        conn.close()

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        broken = api_policy(2)
        broken["policies"][0]["spec"]["rules"][0]["algorithm_config"]["burst"] = 0.5  # < tokens_per_second
        push(edge, broken)
        wait_until(lambda: metric(edge, 'fairvisor_policy_reload_total\\{result="refused"\\}') == 1, 5.0,
                   "the refused reload to be counted")
        push(edge, "{ not json")
        wait_until(lambda: metric(edge, 'fairvisor_policy_reload_total\\{result="refused"\\}') == 2, 5.0,
                   "the second refusal")
        push(edge, api_policy(1, burst=1000))  # not a higher version
        wait_until(lambda: metric(edge, 'fairvisor_policy_reload_total\\{result="refused"\\}') == 3, 5.0,
                   "the third refusal")
    finally:
        stop.set()
        thread.join()

    assert answers and set(answers) <= {200, 429}  # never a 5xx or a degraded gap during reloads
    ready = edge.admin("/readyz").json()
    assert ready["policy_version"] == 1
    assert ready["last_reload_errors"] == [
        "policy.json: $.bundle_version: must be greater than the version in force (1), got 1"]
    # The old policy (burst 5) still enforces.
    assert [status_of(edge, "k") for _ in range(6)] == [200] * 5 + [429]
    log = edge.log()
    assert "policy reload refused, keeping version 1: policy.json: " \
           "$.policies[0].spec.rules[0].algorithm_config.burst: must be >= tokens_per_second (1)" in log
    assert "policy reload refused, keeping version 1: policy.json: $: invalid JSON" in log


def test_kill_minus_nine_mid_budget_loses_at_most_one_second(start_edge):
    budget = 1_000_000
    edge = start_edge({"bundle_version": 1, "policies": [{"id": "spend", "spec": {
        "selector": {"pathPrefix": "/"},
        "rules": [{"name": "daily", "limit_keys": ["header:x-api-key"], "algorithm": "cost_based",
                   "algorithm_config": {"budget": budget, "period": "1d",
                                        "staged_actions": [{"threshold_percent": 100, "action": "reject"}]}}]}}]})
    headers = {"X-Api-Key": "tenant"}
    charged_at: list[float] = []  # monotonic time of each request the engine charged (seen allowed)
    start = time.monotonic()
    while time.monotonic() - start < 2.5:
        r = edge.decide(headers=headers)
        assert r.status == 200 and r.headers.get("X-Fairvisor-Degraded") is None
        charged_at.append(time.monotonic())
    old_pid = edge.engine_pid()
    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    socket_path = str(edge.state_dir / "engine.sock")
    from pyengine.cli.run_cmd import engine_answers
    wait_until(lambda: edge.engine_pid() not in (None, old_pid) and engine_answers(socket_path), 10.0,
               "the restarted engine")
    probe = edge.decide(headers=headers)
    assert probe.status == 200 and probe.headers.get("X-Fairvisor-Degraded") is None
    restored = budget - int(probe.headers["RateLimit-Remaining"]) - 1  # minus the probe itself

    charged = len(charged_at)
    lost = charged - restored
    assert 0 <= lost and restored > 0
    # The lost charges are the newest ones; their span back from the kill is the accounting lost.
    lost_s = killed_at - charged_at[-lost] if lost else 0.0
    print(f"kill -9 after {charged} charges: restored {restored}, lost {lost} = {lost_s:.3f} s of accounting")
    assert lost_s <= LOSS_BOUND_S
    assert edge.log().count("state restored from") == 2  # the first start, and the restart
