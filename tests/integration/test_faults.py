"""Fault injection through real nginx + shim + engine (issue 8): what breaks, what clients see, what is counted.

- the engine is killed during an LLM stream: the stream ends cleanly, the late Settle is counted as lost;
- the engine stalls beyond FAIRVISOR_ENGINE_TIMEOUT_MS under concurrency: fail mode, bounded answers, no
  worker pile-up;
- the state dir is full or read-only: decisions go on, the outage is logged once and counted;
- the upstream is down or silent: a prompt 502 / 504, and the reservation is refunded;
- the policy file is deleted: the last good bundle stays in force.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from .conftest import free_port, token_bucket_policy, wait_until
from .test_llm_proxy import (PROMPT_TOKENS, TPD, LLMEdge, expected_text, llm_policy, llm_request,
                             mock_llm, output_text)  # noqa: F401 - mock_llm: a fixture

pytestmark = pytest.mark.integration

ENGINE_TIMEOUT_MS = 100
ANSWER_BOUND_S = 1.0
UPSTREAM_TIMEOUT_MS = 500


def metric(edge, pattern: str) -> float | None:
    m = re.search("^" + pattern + r" (\S+)$", edge.admin("/metrics").body.decode(), re.M)
    return float(m.group(1)) if m else None


@pytest.fixture
def mock_upstream(mock_llm):  # noqa: F811 - the shared mock upstream fixture, under this file's name
    return mock_llm


def stream_in_background(edge, tokens: int) -> tuple[threading.Thread, dict]:
    """An OpenAI stream of `tokens` events 50 ms apart, read whole by a thread: (thread, result)."""
    path, body = llm_request("openai", True, 200)
    result: dict = {}

    def stream():
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=15)
        try:
            conn.request("POST", path, body=body, headers={
                "Content-Type": "application/json", "X-Tenant": "t1", "X-Mock-Output-Tokens": str(tokens),
                "X-Mock-Token-Delay-Ms": "50"})
            resp = conn.getresponse()
            result["status"], result["body"] = resp.status, resp.read()
        finally:
            conn.close()

    t = threading.Thread(target=stream)
    t.start()
    return t, result


def llm_edge(start_edge, backend_url: str, fmt: str = "openai", extra: list[str] | None = None) -> LLMEdge:
    edge = start_edge(llm_policy(), flags=["--mode", "reverse_proxy", "--backend-url", backend_url,
                                           "--llm-format", fmt, *(extra or [])])
    return LLMEdge(edge, fmt)


def settlements(edge, result: str) -> int:
    return int(metric(edge, rf'fairvisor_llm_settlements_total\{{result="{result}"\}}') or 0)


# ---- the engine dies during a stream ---------------------------------------------------------


def test_engine_killed_mid_stream_the_stream_ends_cleanly_and_the_settle_is_counted_lost(start_edge,
                                                                                         mock_upstream):
    e = llm_edge(start_edge, mock_upstream.url)
    edge = e.edge
    tokens = 40  # 40 events 50 ms apart: about 2 s, while the engine is restarted within 1 s
    t, result = stream_in_background(edge, tokens)
    wait_until(lambda: mock_upstream.llm_requests(), 5.0, "the stream to reach the upstream")
    old_pid = edge.engine_pid()
    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: edge.engine_pid() not in (None, old_pid) and edge.get("/readyz", fresh=True).status == 200,
               5.0, "the restarted engine")
    restarted_s = time.monotonic() - killed_at
    t.join(15)
    assert not t.is_alive()

    # The stream never depended on the engine once allowed: complete and well formed.
    assert result["status"] == 200
    assert output_text("openai", True, result["body"]) == expected_text(tokens)
    assert result["body"].endswith(b"data: [DONE]\n\n")
    assert restarted_s < 1.5
    # The new engine never held the reservation: the Settle is counted as lost, not dropped silently.
    wait_until(lambda: settlements(edge, "lost") == 1, 5.0, "the lost settlement to be counted")
    # And the edge keeps working for the next request, settled normally.
    r = e.call(stream=True, max_tokens=100, output_tokens=5)
    assert r.status == 200
    wait_until(lambda: settlements(edge, "exact") == 1, 5.0, "the next request to settle")


def test_settle_with_no_engine_answering_is_counted_lost_when_the_engine_is_back(start_edge, mock_upstream):
    e = llm_edge(start_edge, mock_upstream.url)
    edge = e.edge
    t, result = stream_in_background(edge, 20)
    wait_until(lambda: mock_upstream.llm_requests(), 5.0, "the stream to reach the upstream")
    pid = edge.engine_pid()
    os.kill(pid, signal.SIGSTOP)  # the stream ends while the engine cannot answer its Settle
    try:
        t.join(15)
        assert result["status"] == 200 and result["body"].endswith(b"data: [DONE]\n\n")
        wait_until(lambda: "settle" in edge.log() and "failed" in edge.log(), 5.0, "the shim to give up the Settle")
    finally:
        os.kill(pid, signal.SIGCONT)
    # The shim kept the count and reports it with the next scrape: nothing is lost silently.
    wait_until(lambda: settlements(edge, "lost") == 1, 5.0, "the undeliverable Settle to be counted")
    assert edge.engine_pid() == pid


# ---- the engine stalls under concurrency -------------------------------------------------------


def _nginx_workers(edge) -> set[int]:
    master = edge.pid_of("nginx.pid")
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True, check=True)
    return {int(p) for p in out.stdout.split()}


def test_stalled_engine_under_concurrency_answers_by_fail_mode_without_pile_up(start_edge):
    edge = start_edge(token_bucket_policy("ip:address", tps=1000, burst=1000),
                      flags=["--fail-mode", "open", "--engine-timeout-ms", str(ENGINE_TIMEOUT_MS)])
    assert edge.decide().status == 200
    workers = _nginx_workers(edge)
    assert len(workers) == 2
    pid = edge.engine_pid()
    n = 64

    def one(i: int):
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
        start = time.monotonic()
        try:
            conn.request("POST", "/v1/decision", headers={"X-Forwarded-For": f"10.1.0.{i % 250}",
                                                          "X-Original-Method": "GET", "X-Original-URI": "/x"})
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("X-Fairvisor-Degraded"), time.monotonic() - start
        finally:
            conn.close()

    os.kill(pid, signal.SIGSTOP)
    try:
        wall = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(one, range(n)))
        wall = time.monotonic() - wall
    finally:
        os.kill(pid, signal.SIGCONT)

    assert all(a[0] == 200 and a[1] == "engine_unavailable" for a in answers), answers
    worst = max(a[2] for a in answers)
    assert worst < ANSWER_BOUND_S, f"slowest fail-mode answer {worst:.3f} s"
    # 64 requests through 2 workers, 32 at a time: they wait on the timeout side by side, not in a queue.
    assert wall < 2.0, f"{n} requests took {wall:.2f} s"
    # Decisions resume at once; the engine drains the frames of the timed-out shims without harm.
    wait_until(lambda: edge.decide(xff="10.1.1.1").headers.get("X-Fairvisor-Degraded") is None, 2.0,
               "decisions after SIGCONT")
    assert edge.engine_pid() == pid
    assert _nginx_workers(edge) == workers  # no worker died or was replaced
    assert metric(edge, "fairvisor_engine_unavailable_total") >= n


# ---- the state dir is full or read-only ---------------------------------------------------------


class StateDirFault:
    """Mounts a tiny tmpfs over <state_dir>/state (root): full (ENOSPC), then read-only (EROFS).
    Without mount privileges, the directory is swapped for a plain file instead (ENOTDIR)."""

    def __init__(self, path):
        self.path = str(path)
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", self.path],
                                      capture_output=True).returncode == 0
        if self.mounted:
            with open(os.path.join(self.path, "filler"), "wb") as f:
                try:
                    f.write(b"\0" * 64 * 1024)
                except OSError:
                    pass  # full: that is the point
            self.errors = ("ENOSPC",)
        else:
            os.rename(self.path, self.path + ".aside")
            open(self.path, "w").close()
            self.errors = ("ENOTDIR",)

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", self.path], check=True)
        self.errors = ("ENOSPC", "EROFS")

    def clear(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], check=True)
            self.mounted = False
        elif os.path.isfile(self.path):
            os.unlink(self.path)
            os.rename(self.path + ".aside", self.path)


def test_state_dir_full_then_read_only_keeps_deciding_and_reports_loudly(start_edge):
    edge = start_edge(token_bucket_policy("header:x-api-key", tps=0.001, burst=3))
    key = {"X-Api-Key": "k"}
    pid = edge.engine_pid()
    fault = StateDirFault(edge.state_dir / "state")
    try:
        statuses = [edge.decide(headers=key).status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # still enforcing, from memory

        def errors():
            return sum(metric(edge, rf'fairvisor_state_snapshot_errors_total\{{error="{e}"\}}') or 0
                       for e in fault.errors)
        wait_until(lambda: errors() >= 1, 5.0, f"a counted {fault.errors} snapshot error")
        if fault.mounted:
            fault.read_only()
            edge.decide(headers={"X-Api-Key": "other"})  # a change to write
            wait_until(lambda: (metric(edge, r'fairvisor_state_snapshot_errors_total\{error="EROFS"\}') or 0) >= 1,
                       5.0, "a counted EROFS snapshot error")
        assert edge.decide(headers=key).status == 429
        assert edge.decide(headers={"X-Api-Key": "fresh"}).status == 200
        assert edge.get("/readyz", fresh=True).status == 200
    finally:
        fault.clear()
    wait_until(lambda: "state snapshots are written again" in edge.log(), 5.0, "the recovery log line")
    log = edge.log()
    assert log.count("state snapshot write to") == 1, "one ERROR line per outage, not one per tick"
    assert edge.engine_pid() == pid  # never crashed, never restarted


# ---- the upstream is down or silent ---------------------------------------------------------------


def test_upstream_down_is_a_prompt_502_and_the_reservation_is_refunded(start_edge):
    e = llm_edge(start_edge, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    for stream in (False, True):
        r = e.call(stream=stream, max_tokens=200)
        assert r.status == 502
        assert r.elapsed_s < ANSWER_BOUND_S
    wait_until(lambda: settlements(e.edge, "refunded") == 2, 5.0, "two refunded settlements")
    assert e.tpd_remaining() == TPD


@pytest.fixture
def silent_upstream():
    """A port that accepts connections (the kernel's backlog) but never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def test_silent_upstream_is_a_504_after_the_upstream_timeout_and_refunded(start_edge, silent_upstream):
    e = llm_edge(start_edge, silent_upstream, extra=["--upstream-timeout-ms", str(UPSTREAM_TIMEOUT_MS)])
    r = e.call(stream=True, max_tokens=200)
    assert r.status == 504
    assert UPSTREAM_TIMEOUT_MS / 1000 * 0.9 <= r.elapsed_s < UPSTREAM_TIMEOUT_MS / 1000 + ANSWER_BOUND_S
    wait_until(lambda: settlements(e.edge, "refunded") == 1, 5.0, "the refunded settlement")
    assert e.tpd_remaining() == TPD


def test_upstream_stalling_mid_stream_is_cut_and_charged_only_what_was_sent(start_edge, mock_upstream):
    e = llm_edge(start_edge, mock_upstream.url, extra=["--upstream-timeout-ms", str(UPSTREAM_TIMEOUT_MS)])
    # The first event comes at once, the next only after 3 s: nginx gives up after 0.5 s of silence.
    path, body = llm_request("openai", True, 200)
    conn = http.client.HTTPConnection("127.0.0.1", e.port, timeout=10)
    start = time.monotonic()
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", "X-Tenant": "t1",
                                                       "X-Mock-Output-Tokens": "5", "X-Mock-Token-Delay-Ms": "3000"})
        resp = conn.getresponse()
        assert resp.status == 200  # the headers were already out
        with pytest.raises(http.client.IncompleteRead) as cut:
            resp.read()
    finally:
        conn.close()
    elapsed = time.monotonic() - start
    # The client sees the response end without its last chunk: a truncation it can detect, promptly.
    assert cut.value.partial.startswith(b"data: ")
    assert UPSTREAM_TIMEOUT_MS / 1000 * 0.9 <= elapsed < UPSTREAM_TIMEOUT_MS / 1000 + ANSWER_BOUND_S
    wait_until(lambda: e.settlements() == 1, 5.0, "the settlement of the cut stream")
    used = TPD - e.tpd_remaining()
    # Never the whole reservation: the prompt plus at most the one event that got through.
    assert PROMPT_TOKENS <= used <= PROMPT_TOKENS + 1, used


# ---- the policy file is deleted ----------------------------------------------------------------------


def test_deleted_policy_file_keeps_the_last_good_bundle(start_edge):
    edge = start_edge(token_bucket_policy("header:x-api-key", tps=0.001, burst=2, version=7))
    key = {"X-Api-Key": "k"}
    assert [edge.decide(headers=key).status for _ in range(3)] == [200, 200, 429]
    policy_file = edge.runtime_dir.parent.parent / "policy.json"
    policy_file.unlink()
    os.kill(edge.engine_pid(), signal.SIGHUP)  # even an explicit reload request keeps it
    time.sleep(1.2)  # more than two watch ticks
    ready = edge.get("/readyz", fresh=True)
    assert ready.status == 200 and ready.json()["policy_version"] == 7
    assert edge.decide(headers=key).status == 429
    assert edge.decide(headers={"X-Api-Key": "k2"}).status == 200
    # A new file is picked up as usual.
    tmp = policy_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(token_bucket_policy("header:x-api-key", tps=0.001, burst=50, version=8)))
    os.replace(tmp, policy_file)
    wait_until(lambda: edge.get("/readyz", fresh=True).json().get("policy_version") == 8, 3.0, "version 8")


def test_upstream_timeout_setting_is_validated_and_rendered():
    from pyengine.cli.nginx_conf import render
    from pyengine.config import ConfigError, from_env

    base = {"FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_BACKEND_URL": "http://127.0.0.1:9"}
    for bad in ("0", "-5", "soon"):
        with pytest.raises(ConfigError, match="FAIRVISOR_UPSTREAM_TIMEOUT_MS"):
            from_env({**base, "FAIRVISOR_UPSTREAM_TIMEOUT_MS": bad})
    conf = render(from_env({**base, "FAIRVISOR_UPSTREAM_TIMEOUT_MS": "2500"}), "/tmp/fv-render-check")
    for directive in ("proxy_connect_timeout", "proxy_send_timeout", "proxy_read_timeout"):
        assert f"{directive} 2500ms;" in conf
    assert "proxy_read_timeout 60000ms;" in render(from_env(base), "/tmp/fv-render-check")
