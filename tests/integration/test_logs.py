"""`fairvisor logs --follow` shows a rejection the running edge just made (engine flushes once a second)."""

import json
import queue
import subprocess
import threading

import pytest

from pyengine.decision.key_hash import KeyHasher

from .conftest import FAIRVISOR, token_bucket_policy, wait_until

pytestmark = pytest.mark.integration

FOLLOW_TIMEOUT_S = 15.0  # the upkeep flush runs every second; generous for loaded CI machines


def test_logs_follow_shows_a_rejection(start_edge):
    edge = start_edge(token_bucket_policy("ip:address", tps=0.001, burst=1),
                      flags=["--retry-jitter", "off"])  # the exact base in the log record
    env = {"PATH": "/usr/bin:/bin", "FAIRVISOR_STATE_DIR": str(edge.state_dir)}
    proc = subprocess.Popen(FAIRVISOR + ["logs", "--follow", "--json", "--event", "reject"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        assert edge.decide(xff="10.0.0.7").status == 200
        rejected = edge.decide(xff="10.0.0.7")
        assert rejected.status == 429

        def next_line():
            try:
                return lines.get_nowait()
            except queue.Empty:
                assert proc.poll() is None, proc.stderr.read()
                return None

        rec = json.loads(wait_until(next_line, FOLLOW_TIMEOUT_S, "logs --follow to print the rejection"))
        assert {k: rec[k] for k in ("event", "policy", "rule", "reason", "key", "status", "retry_after_s")} == {
            "event": "reject", "policy": "seed", "rule": "per-key", "reason": "rate_limit_exceeded",
            "key": KeyHasher(str(edge.state_dir)).digest("10.0.0.7"), "status": 429, "retry_after_s": 1000}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
