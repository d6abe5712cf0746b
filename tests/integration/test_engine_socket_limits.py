"""Peers that hold partial frames on the engine socket (issue 13, 14d), against a real `fairvisor run`:
the engine's memory stays within the budget, the stalled peers are disconnected, nginx keeps deciding."""

from __future__ import annotations

import socket
import time

import pytest

from pyengine.protocol.limits import PARTIAL_FRAME_TIMEOUT_S, PENDING_BUDGET_BYTES

from .conftest import token_bucket_policy, wait_until
from .test_faults import metric

pytestmark = pytest.mark.integration

FRAME_BYTES = 15 * 1024 * 1024  # just under the engine's 16 MiB frame limit
PEERS = 6


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_six_peers_holding_partial_16_mib_frames_are_bounded_and_disconnected(start_edge):
    edge = start_edge(token_bucket_policy("ip:address", tps=1000, burst=1000))
    assert edge.decide().status == 200
    pid = edge.engine_pid()
    before = rss_bytes(pid)
    peers = []
    payload = FRAME_BYTES.to_bytes(4, "big") + b"\x00" * (FRAME_BYTES - 1)  # all but the last byte
    start = time.monotonic()
    for _ in range(PEERS):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(PARTIAL_FRAME_TIMEOUT_S + 10)
        s.connect(str(edge.state_dir / "engine.sock"))
        try:
            s.sendall(payload)
        except OSError:
            pass  # closed by the engine while sending: over the budget
        peers.append(s)
    try:
        grown = rss_bytes(pid) - before
        # Six peers sent 90 MiB of frames that never complete; the engine holds at most the budget
        # (plus allocator slack), where it used to hold all of it.
        assert grown < PENDING_BUDGET_BYTES * 1.5, f"engine RSS grew by {grown / 2**20:.0f} MiB"
        print(f"engine RSS grew by {grown / 2**20:.1f} MiB with {PEERS} peers holding partial frames")
        r = edge.decide(xff="10.9.9.9")
        assert r.status == 200 and r.headers.get("X-Fairvisor-Degraded") is None
        # Every stalled peer is disconnected: by the budget at once, or by the partial-frame timeout.
        for s in peers:
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
        assert time.monotonic() - start < PARTIAL_FRAME_TIMEOUT_S + 5
    finally:
        for s in peers:
            s.close()
    closed_budget = metric(edge, r'fairvisor_shim_connections_closed_total\{reason="buffer_budget"\}') or 0
    closed_partial = metric(edge, r'fairvisor_shim_connections_closed_total\{reason="partial_frame"\}') or 0
    assert closed_budget >= PEERS - PENDING_BUDGET_BYTES // FRAME_BYTES and closed_budget + closed_partial == PEERS
    wait_until(lambda: metric(edge, "fairvisor_shim_pending_bytes") == 0, 5.0, "the partial frames released")
    assert edge.engine_pid() == pid
