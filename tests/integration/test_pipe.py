"""The shim's engine pipe (lua-shim/fairvisor/pipe.lua) through real nginx and the real engine.

Decide frames of concurrent requests share one connection per worker and travel in batches:
every request must still get its own verdict, batching must really happen, and an nginx
reload under traffic must not turn a single answer into a fail-mode one.
"""

import concurrent.futures
import http.client
import os
import pathlib
import re
import signal
import threading

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.integration

FAULT_DIR = pathlib.Path(__file__).with_name("engine_fault")  # sitecustomize.py: FVTEST_HOLD_UNTIL

PATHS = 12
PER_PATH = 40
CLIENTS = 48


def _policy_per_path() -> dict:
    """One policy per path prefix /p<i>/, its rule named r<i>, with burst 100 + i, keyed on the
    API key and refilling so slowly that nothing refills during the test."""
    return {"bundle_version": 1, "policies": [
        {"id": f"p{i}", "spec": {"selector": {"pathPrefix": f"/p{i}/"}, "rules": [
            {"name": f"r{i}", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
             "algorithm_config": {"tokens_per_second": 0.001, "burst": 100 + i}}]}}
        for i in range(PATHS)]}


def _decide(port: int, i: int) -> tuple[int, str | None, str | None, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/decision", headers={
            "X-Original-Method": "GET", "X-Original-URI": f"/p{i}/items", "X-Api-Key": f"k{i}"})
        resp = conn.getresponse()
        resp.read()
        return (resp.status, resp.getheader("RateLimit-Policy"), resp.getheader("RateLimit-Remaining"),
                resp.getheader("X-Fairvisor-Degraded"))
    finally:
        conn.close()


def _metric(edge, name: str) -> float:
    m = re.search("^" + name + r" (\S+)$", edge.admin("/metrics").body.decode(), re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def test_concurrent_decisions_each_get_their_own_verdict_in_batches(start_edge):
    edge = start_edge(_policy_per_path())
    jobs = [j % PATHS for j in range(PATHS * PER_PATH)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        answers = list(pool.map(lambda i: (i, _decide(edge.port, i)), jobs))

    remaining: dict[int, list[int]] = {i: [] for i in range(PATHS)}
    for i, (status, policy, left, degraded) in answers:
        assert (status, degraded) == (200, None)
        # The verdict names the request's own rule and burst: no reply went to another request.
        assert policy.startswith(f'"r{i}";q={100 + i};'), (i, policy)
        remaining[i].append(int(left))
    for i, values in remaining.items():
        # Each of the PER_PATH requests of a key took exactly one token, each its own.
        assert sorted(values) == list(range(100 + i - PER_PATH, 100 + i)), (i, sorted(values))

    # Batching happened: fewer reads than frames. And 48 concurrent clients cost each of the
    # 2 workers only its pipe plus one pooled connection (Hello, /metrics), not one per request.
    frames, reads = _metric(edge, "fairvisor_frames_total"), _metric(edge, "fairvisor_frame_reads_total")
    assert frames >= PATHS * PER_PATH
    assert reads < frames, (reads, frames)
    assert _metric(edge, "fairvisor_shim_connections") <= 4


def test_nginx_reload_under_traffic_never_answers_by_fail_mode(start_edge):
    """Old workers finish their requests while exiting (their pump drains, then direct
    connections take over); new workers start their own pipe. No request may fall back to the
    fail mode, and every one is still decided by the engine."""
    edge = start_edge(_policy_per_path())
    nginx_pid = edge.pid_of("nginx.pid")
    assert nginx_pid
    stop = threading.Event()
    answers: list[tuple] = []

    def client(i: int):
        while not stop.is_set():
            answers.append((i, _decide(edge.port, i)))

    threads = [threading.Thread(target=client, args=(n % PATHS,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(answers) > 50, 5.0, "traffic before the reload")
        workers_before = set(_children(nginx_pid))
        os.kill(nginx_pid, signal.SIGHUP)
        wait_until(lambda: not workers_before & set(_children(nginx_pid)), 10.0, "the old workers to exit")
        after = len(answers)
        wait_until(lambda: len(answers) > after + 50, 5.0, "traffic after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    # 429 once a key's burst is spent: still the engine's answer, for the request's own rule.
    bad = [a for a in answers
           if a[1][0] not in (200, 429) or a[1][3] is not None or not a[1][1].startswith(f'"r{a[0]}";')]
    assert not bad, bad[:5]


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def test_a_frame_goes_out_while_the_batch_before_it_waits_for_its_reply(start_edge, tmp_path):
    """The pipe is full duplex: with the engine holding the reply to one request until it has
    read the next, both are answered by the engine. A stop-and-wait pipe never sends the second
    while the first is unanswered, so the first would end in the fail mode after the timeout."""
    timeout_ms = 3000
    mark = tmp_path / "held"
    env = {"PYTHONPATH": os.pathsep.join([str(FAULT_DIR), os.environ.get("PYTHONPATH", "")]),
           "FVTEST_HOLD_UNTIL": "/fvtest-hold,/fvtest-release", "FVTEST_HOLD_MARK": str(mark)}
    edge = start_edge(flags=["--engine-timeout-ms", str(timeout_ms)], env=env, workers=1)  # one pipe
    assert edge.decide().status == 200

    held = {}
    first = threading.Thread(target=lambda: held.update(r=edge.request("POST", "/v1/decision/fvtest-hold",
                                                                       fresh=True)))
    first.start()
    # The engine has read the held request's frame (the hook marks it): the release must come in
    # a later read, as it would not if both went out in one batch.
    wait_until(mark.exists, 5.0, "the held frame")
    released = edge.request("POST", "/v1/decision/fvtest-release", fresh=True)
    first.join(timeout=10)

    for r in (held["r"], released):
        assert (r.status, r.headers.get("X-Fairvisor-Degraded")) == (200, None)
    assert held["r"].elapsed_s < timeout_ms / 1000 / 2  # answered on the release, not at the timeout
