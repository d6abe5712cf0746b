"""Two real edges (nginx + shim + engine each) sharing one real redis-server: one limit, outages, restarts."""

import pytest

from .conftest import token_bucket_policy, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.redis]

BURST = 20
# ~no refill during the test: every admission is visible in the counts below.
POLICY = token_bucket_policy("header:x-tenant", 0.001, BURST)


def _flags(url: str) -> list[str]:
    return ["--state-url", url, "--sync-interval-ms", "50", "--engine-timeout-ms", "3000"]


def _admitted(edge, tenant: str, n: int) -> int:
    return sum(edge.decide(headers={"X-Tenant": tenant}).status == 200 for _ in range(n))


def _state(edge) -> dict:
    return edge.admin("/readyz").json()["state"]


def _confirmed(edge) -> None:
    """Until the store has confirmed every change this edge made."""
    wait_until(lambda: (s := _state(edge))["status"] == "ok" and s["backlog_keys"] == 0, 10, "sync confirmed")


def test_one_limit_across_two_edges(start_edge, redis_server):
    a = start_edge(POLICY, flags=_flags(redis_server.url))
    b = start_edge(POLICY, flags=_flags(redis_server.url))
    assert _state(a)["backend"] == "redis" and "@" not in _state(a)["url"]
    assert _admitted(a, "acme", 10) == 10
    _confirmed(a)
    assert _admitted(b, "acme", 1) == 1  # b's first sight of acme: decided locally, then pushed...
    _confirmed(b)
    assert _admitted(b, "acme", 15) == BURST - 11  # ...and rebased on a's 10: one shared burst
    _confirmed(b)
    # a learns b's admissions with its next write: at most what it admits before that round.
    a_more = _admitted(a, "acme", 1)
    _confirmed(a)
    assert a_more <= 1 and _admitted(a, "acme", 5) == 0
    assert _admitted(a, "other", 3) == 3  # other tenants are their own


def test_store_outage_degrades_but_never_fails_open_and_loses_nothing(start_edge, redis_server):
    a = start_edge(POLICY, flags=_flags(redis_server.url))
    b = start_edge(POLICY, flags=_flags(redis_server.url))
    redis_server.stop()
    wait_until(lambda: _state(a)["status"] == "degraded", 10, "degraded")
    ready = a.admin("/readyz")
    assert ready.status == 200 and ready.json()["status"] == "degraded"
    assert _admitted(a, "acme", BURST + 5) == BURST  # local counters keep enforcing
    assert "fairvisor_state_degraded 1" in a.admin("/metrics").body.decode()
    redis_server.start()
    _confirmed(a)  # the outage's counts pushed
    assert _admitted(b, "acme", 1) == 1  # b's first sight...
    _confirmed(b)
    assert _admitted(b, "acme", 5) == 0  # ...rebased on a's outage-time burst: nothing was lost


def test_a_restarted_edge_resumes_from_the_store(start_edge, redis_server):
    a = start_edge(POLICY, flags=_flags(redis_server.url))
    assert _admitted(a, "acme", BURST) == BURST
    _confirmed(a)
    assert a.stop() == 0
    fresh = start_edge(POLICY, flags=_flags(redis_server.url))  # empty state dir, same store
    first = _admitted(fresh, "acme", 1)
    _confirmed(fresh)
    assert first == 1 and _admitted(fresh, "acme", 5) == 0


def test_an_engine_killed_loses_at_most_its_unsynced_interval(start_edge, redis_server):
    import os
    import signal

    a = start_edge(POLICY, flags=_flags(redis_server.url))
    b = start_edge(POLICY, flags=_flags(redis_server.url))
    assert _admitted(a, "acme", 10) == 10
    _confirmed(a)
    assert _admitted(a, "acme", 5) == 5
    os.kill(a.engine_pid(), signal.SIGKILL)  # the last 5 may not have reached the store
    assert _admitted(b, "acme", 1) == 1
    _confirmed(b)
    left = _admitted(b, "acme", BURST)
    # b saw the 10 confirmed before the kill (and possibly the 5 after): never fewer.
    assert BURST - 11 - 5 <= left <= BURST - 11
    # The supervisor restarts the engine, which resumes from the store.
    wait_until(lambda: a.admin("/readyz").json().get("state", {}).get("status") == "ok", 30, "engine restarted")
    assert _admitted(a, "acme", 1) <= 1
    _confirmed(a)
    assert _admitted(a, "acme", 3) == 0
