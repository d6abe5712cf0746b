"""In-flight limits through real nginx: a slot is held while the answer streams and is released
when it ends, whether it completed, the client went away or the upstream failed."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from .conftest import wait_until
from .test_llm_proxy import MockUpstream

pytestmark = pytest.mark.integration

POLICY = {"bundle_version": 1, "policies": [{"id": "p", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
    {"name": "in-flight", "limit_keys": ["header:x-tenant"], "algorithm": "concurrency",
     "algorithm_config": {"max_in_flight": 1, "lease_s": 300}}]}}]}
BODY = json.dumps({"model": "gpt-4o-mini", "stream": True, "max_tokens": 40,
                   "messages": [{"role": "user", "content": "hello"}]}).encode()


@pytest.fixture
def mock():
    m = MockUpstream()
    wait_until(m.ready, 10.0, "the mock upstream to listen")
    yield m
    m.proc.terminate()
    m.proc.wait(timeout=10)
    m.proc.stderr.close()


@pytest.fixture
def edge(start_edge, mock):
    return start_edge(POLICY, flags=["--mode", "reverse_proxy", "--backend-url", mock.url])


def chat(edge, headers=None):
    h = {"X-Tenant": "t1", "Content-Type": "application/json", **(headers or {})}
    return edge.request("POST", "/openai/v1/chat/completions", headers=h, body=BODY, fresh=True)


def admitted(edge) -> bool:
    return chat(edge, {"X-Mock-Output-Tokens": "1"}).status == 200


def open_slow_stream(edge) -> socket.socket:
    """A stream that takes seconds (40 tokens, 100 ms apart); returns once its headers arrived."""
    s = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
    s.sendall(b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Tenant: t1\r\n"
              b"Content-Type: application/json\r\nX-Mock-Token-Delay-Ms: 100\r\nX-Mock-Output-Tokens: 40\r\n"
              b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return s


def test_a_second_request_waits_for_the_first_answer_to_end(edge):
    s = open_slow_stream(edge)
    try:
        r = chat(edge)
        assert r.status == 429 and r.headers["X-Fairvisor-Reason"] == "concurrency_exceeded"
        assert r.headers["Retry-After"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert chat(edge, {"X-Tenant": "t2", "X-Mock-Output-Tokens": "1"}).status == 200  # per tenant
        seen = b""
        while not seen.endswith(b"0\r\n\r\n"):  # read the (chunked) stream to its end
            seen += s.recv(65536)
        assert b"[DONE]" in seen
    finally:
        s.close()
    wait_until(lambda: admitted(edge), 5.0, "the slot to be released when the stream completed")


def test_a_client_that_goes_away_releases_its_slot(edge):
    s = open_slow_stream(edge)
    assert chat(edge).status == 429
    s.close()  # mid-stream: 4 s of stream left, 300 s of lease
    wait_until(lambda: admitted(edge), 5.0, "the slot to be released on client abort")


def test_an_upstream_error_releases_its_slot(edge):
    r = chat(edge, {"X-Mock-Status": "500"})
    assert r.status == 500
    wait_until(lambda: admitted(edge), 5.0, "the slot to be released after the upstream error")


def test_many_at_once_never_exceed_the_limit(edge):
    """Eight clients at once on max_in_flight 1: while one stream runs, the others are refused."""
    statuses: list[int] = []

    def one():
        statuses.append(chat(edge, {"X-Mock-Token-Delay-Ms": "50", "X-Mock-Output-Tokens": "20"}).status)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses.count(200) >= 1 and statuses.count(200) + statuses.count(429) == 8
    assert statuses.count(429) >= 4  # a 1-second stream each: most of the eight overlap it
