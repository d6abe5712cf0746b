"""`make demo` (scripts/demo): one auto edge before the mock upstream serves all three providers."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import signal
import subprocess

import pytest

from .conftest import free_port, reachable_dir, wait_until
from .test_llm_proxy import assert_cut_stream

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
CALLS = {
    "openai": ("/openai/v1/chat/completions",
               {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hello"}]}),
    "anthropic": ("/anthropic/v1/messages", {"model": "claude-3-5-haiku-latest", "max_tokens": 1000, "stream": True,
                                             "messages": [{"role": "user", "content": "hello"}]}),
    "gemini": ("/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
               {"contents": [{"parts": [{"text": "hello"}]}]}),
}


def post(port: int, path: str, doc: dict):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", path, body=json.dumps(doc), headers={"X-Tenant": "acme"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_the_demo_edge_cuts_every_provider_in_its_own_format(tmp_path):
    port, mock, admin = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
    env.update({"FAIRVISOR_LISTEN": f"127.0.0.1:{port}", "MOCK_LISTEN": f"127.0.0.1:{mock}",
                "FAIRVISOR_ADMIN_LISTEN": f"127.0.0.1:{admin}", "FAIRVISOR_STATE_DIR": str(reachable_dir("fv-demo-") / "state")})
    log = open(tmp_path / "demo.log", "wb")
    proc = subprocess.Popen(["bash", "scripts/demo"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready():
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
            try:
                conn.request("GET", "/readyz")
                return conn.getresponse().status == 200
            except OSError:
                return False
            finally:
                conn.close()
        wait_until(ready, 30.0, "the demo edge to be ready")
        for fmt, (path, doc) in CALLS.items():
            status, body = post(port, path, doc)
            assert status == 200, (fmt, body[:300])
            assert_cut_stream(fmt, body)  # the mock writes 150 words: over the 200-token allowance
        text = (tmp_path / "demo.log").read_text()
        assert "Anthropic:" in text and "google.genai" in text  # one line per provider and SDK
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.close()
