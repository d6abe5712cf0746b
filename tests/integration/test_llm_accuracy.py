"""Accounting under concurrency: 50 streaming clients of one tenant never overrun its TPM.

Every stream reserves its prompt plus its completion allowance before it starts and is cut at
that allowance, so the tokens charged in a window can exceed what the bucket admits by at most
one reservation. The test measures it through real nginx, engine and mock upstream.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time

import pytest

from .conftest import wait_until
from .test_llm_proxy import mock_llm  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

CLIENTS = 50
RUN_S = 4.0
TPM = 3_000  # tokens per minute, burst = TPM: a full bucket at start
ALLOWANCE = 100  # default_max_completion: reserved per request and where its stream is cut
PROMPT = "Count to a thousand, slowly, please!!!!"  # 40 chars = 10 prompt tokens
RESERVATION = 10 + ALLOWANCE


def policy() -> dict:
    return {"bundle_version": 1, "policies": [{"id": "org", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "tpm", "limit_keys": ["header:x-org"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": TPM, "default_max_completion": ALLOWANCE}}]}}]}


def metric_sum(text: str, name: str) -> int:
    return sum(int(float(v)) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_fifty_concurrent_streams_stay_within_tpm_plus_one_reservation(start_edge, mock_llm):  # noqa: F811
    edge = start_edge(policy(), flags=["--mode", "reverse_proxy", "--backend-url", mock_llm.url,
                                       "--llm-format", "openai"])
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()
    # The upstream would write 400 tokens per answer, 2 ms apart: every stream is cut.
    headers = {"Content-Type": "application/json", "X-Org": "acme", "X-Mock-Output-Tokens": "400",
               "X-Mock-Token-Delay-Ms": "2"}
    counts = {"allowed": 0, "rejected": 0, "errors": 0}
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + RUN_S

    def client():
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=30)
            try:
                conn.request("POST", "/openai/v1/chat/completions", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                key = "allowed" if resp.status == 200 and data.endswith(b"data: [DONE]\n\n") else \
                    "rejected" if resp.status == 429 else "errors"
            except OSError:
                key = "errors"
            finally:
                conn.close()
            with lock:
                counts[key] += 1
            if key == "rejected":
                time.sleep(0.05)  # a client backing off, as SDKs do

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed_s = time.monotonic() - start

    def settled() -> bool:
        text = edge.admin("/metrics").body.decode()
        return metric_sum(text, "fairvisor_llm_settlements_total") >= counts["allowed"]

    wait_until(settled, 10.0, "every allowed stream to be settled")
    text = edge.admin("/metrics").body.decode()
    charged = metric_sum(text, "fairvisor_tokens_settled_total")
    admitted = TPM + TPM / 60 * elapsed_s  # a full bucket plus what refilled while the test ran
    print(f"\naccuracy: {CLIENTS} clients, {elapsed_s:.2f} s, allowed {counts['allowed']}, "
          f"rejected {counts['rejected']}, errors {counts['errors']}, charged {charged} tokens, "
          f"admitted {admitted:.0f}, overrun {charged - admitted:+.0f} (limit +{RESERVATION})")
    assert counts["errors"] == 0
    assert counts["allowed"] >= TPM // RESERVATION  # the bucket was really used up ...
    assert counts["rejected"] > 0  # ... and then enforced
    assert charged <= admitted + RESERVATION
