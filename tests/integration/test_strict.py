"""consistency=strict end to end: two edges (nginx + shim + engine each) on one real redis-server."""

import pytest

from .conftest import token_bucket_policy, wait_until

pytestmark = pytest.mark.integration

BURST = 6


def _strict_policy() -> dict:
    policy = token_bucket_policy("ip:address", tps=0.01, burst=BURST, rule="per-ip")
    policy["policies"][0]["spec"]["rules"][0]["consistency"] = "strict"
    return policy


def _strict_count(edge, path: str) -> float:
    for line in edge.admin("/metrics").body.decode().splitlines():
        if line.startswith(f'fairvisor_strict_decisions_total{{path="{path}"}}'):
            return float(line.rpartition(" ")[2])
    return 0.0


def test_two_edges_share_one_strict_bucket_and_refuse_at_the_exact_limit(start_edge, redis_server):
    env = {"FAIRVISOR_STATE_URL": redis_server.url, "FAIRVISOR_ENGINE_TIMEOUT_MS": "3000"}
    a = start_edge(_strict_policy(), env=env)
    b = start_edge(_strict_policy(), env=env)
    # Alternate between the two edges: the bucket is the fleet's, not each edge's.
    replies = [(a if n % 2 == 0 else b).decide(xff="10.9.0.1") for n in range(BURST + 4)]
    assert [r.status for r in replies] == [200] * BURST + [429] * 4, [r.headers.items() for r in replies]
    refused = replies[BURST]
    assert refused.headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
    assert refused.headers["RateLimit-Policy"] == f'"per-ip";q={BURST};w=600'
    assert refused.headers.get("X-Fairvisor-Degraded") is None
    assert replies[BURST - 1].headers["RateLimit-Remaining"] == "0"
    assert _strict_count(a, "store") + _strict_count(b, "store") == BURST + 4
    assert _strict_count(a, "local") + _strict_count(b, "local") == 0
    assert a.decide(xff="10.9.0.2").status == 200  # another client's bucket

    # The store goes away: strict rules are enforced on each engine's local counters, not opened.
    redis_server.kill()
    assert a.decide(xff="10.9.0.1").status == 429  # a's mirror knows the bucket is empty
    wait_until(lambda: _strict_count(a, "local") >= 1, 5, "the local fallback to be counted")
