"""Two in-process engines in fleet mode over one real redis-server: shared limits, overlay, outages."""

import asyncio
import json

import pytest

from pyengine.config import from_env
from pyengine.engine import build_engine
from tests.engine.helpers import decide, one_rule_bundle

pytestmark = pytest.mark.redis

ORG_BUCKET = {"name": "per-org", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
              "algorithm_config": {"tokens_per_second": 0.001, "burst": 10}}
ACTOR = "token:0123456789ab"


def _engines(tmp_path, url: str, n: int = 2, interval_ms: int = 10):
    policy = tmp_path / "policy.json"
    tmp_path.mkdir(parents=True, exist_ok=True)
    policy.write_text(json.dumps(one_rule_bundle(ORG_BUCKET)))
    out = []
    for i in range(n):
        settings = from_env({}, state_dir=str(tmp_path / f"state{i}"), config_file=str(policy),
                            state_url=url, sync_interval_ms=interval_ms, retry_jitter=False)
        out.append(build_engine(settings))
    return out


def _admitted(engine, org: str, n: int) -> int:
    return sum(decide(engine, headers={"X-Org": org}).status == 0 for _ in range(n))


async def _until(predicate, what: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _started(*engines, timeout_s: float = 10.0) -> None:
    """Start each engine's sync and wait until every one has had a round with the store."""
    for e in engines:
        e.fleet.start()
    await _until(lambda: not any(e.fleet.degraded for e in engines), "in sync with the store", timeout_s)


async def _rounds(engine) -> None:
    """Until `engine` has had one more confirmed round than it had so far."""
    mark = engine.fleet.sync.last_ok_s
    await _until(lambda: engine.fleet.sync.last_ok_s != mark, "another round")


async def _settled(*engines) -> None:
    """Until every engine's journal is confirmed by the store (two rounds each: push, then learn)."""
    for e in engines:
        seq = e.fleet.sync.seq
        await _until(lambda: e.fleet.sync.backlog_keys == 0 and e.fleet.sync.seq >= seq, "sync")


def test_a_limit_holds_across_two_engines_and_outage_is_degraded_not_open(tmp_path, redis_server):
    async def main():
        a, b = _engines(tmp_path, redis_server.url)
        await _started(a, b)
        assert _admitted(a, "acme", 6) == 6
        await _settled(a)
        await _rounds(b)  # a round of b's: b has written nothing, so it learns nothing yet
        assert _admitted(b, "acme", 1) == 1  # b's first sight: local, then pushed...
        await _settled(b)
        # ...and rebased on a's 6: 3 left of the burst of 10, for both.
        assert _admitted(b, "acme", 10) == 3
        await _settled(b)
        await _rounds(a)
        assert _admitted(a, "acme", 1) <= 1
        # The store goes away: both keep enforcing from local counters, report degraded.
        redis_server.stop()
        await _until(lambda: a.fleet.degraded, "degraded")
        assert a.fleet.readiness()["status"] == "degraded"
        assert _admitted(a, "other", 10) == 10 and _admitted(a, "other", 1) == 0  # never fail open
        redis_server.start()
        await _until(lambda: not a.fleet.degraded and a.fleet.sync.backlog_keys == 0, "recovered")
        assert _admitted(b, "other", 1) == 1  # b's first sight of "other"...
        await _settled(b)
        assert _admitted(b, "other", 5) == 0  # ...learns a's outage-time 10: nothing lost
        body = a.scrape().body
        assert "fairvisor_state_sync_errors_total" in body and "fairvisor_state_degraded 0" in body
        await a.fleet.stop()
        await b.fleet.stop()
    asyncio.run(main())


def test_an_engine_started_while_the_store_is_down_serves_degraded(tmp_path, redis_server):
    async def main():
        redis_server.stop()
        (a,) = _engines(tmp_path, redis_server.url, n=1)
        a.fleet.start()
        await _until(lambda: a.fleet.sync.last_error, "a failed first round")
        assert a.fleet.degraded and a.fleet.readiness()["last_error"]
        assert _admitted(a, "acme", 12) == 10
        redis_server.start()
        await _until(lambda: not a.fleet.degraded and a.fleet.sync.backlog_keys == 0, "recovered")
        await a.fleet.stop()
    asyncio.run(main())


def test_kill_switch_added_on_one_engine_acts_on_the_other_and_survives_restart(tmp_path, redis_server):
    async def main():
        a, b = _engines(tmp_path, redis_server.url)
        await _started(a, b)
        body = json.dumps({"scope_key": "header:x-org", "scope_value": "evil"}).encode()
        status, _, _ = a.admin_routes.handle("POST", "/v1/admin/kill-switches", body, ACTOR)
        assert status == 201
        await _until(lambda: b.overlay.switches, "switch on b", 2.0)
        assert decide(b, headers={"X-Org": "evil"}).status == 429 and decide(b, headers={"X-Org": "good"}).status == 0
        await a.fleet.stop()
        await b.fleet.stop()
        (c,) = _engines(tmp_path / "fresh", redis_server.url, n=1)  # a new edge, empty state dir
        c.fleet.start()
        await _until(lambda: c.overlay.switches, "switch on c", 2.0)
        assert decide(c, headers={"X-Org": "evil"}).status == 429
        (rec_id,) = c.overlay.switches
        status, _, _ = c.admin_routes.handle("DELETE", f"/v1/admin/kill-switches/{rec_id}", None, ACTOR)
        assert status == 200
        assert decide(c, headers={"X-Org": "evil"}).status == 0
        await c.fleet.stop()
    asyncio.run(main())


def test_a_key_new_to_an_engine_is_synced_without_waiting_for_the_interval(tmp_path, redis_server):
    async def main():
        a, b = _engines(tmp_path, redis_server.url, interval_ms=60_000)  # a round a minute...
        await _started(a, b, timeout_s=2.0)  # connected at start, not after the minute's interval
        assert _admitted(a, "acme", 6) == 6
        await _until(lambda: a.fleet.sync.backlog_keys == 0, "a's first sight pushed", 2.0)  # ...yet within 2 s
        assert _admitted(b, "acme", 1) == 1
        await _until(lambda: b.fleet.sync.backlog_keys == 0, "b's first sight synced", 2.0)
        assert _admitted(b, "acme", 10) == 3  # rebased on a's 6
        await a.fleet.stop()
        await b.fleet.stop()
    asyncio.run(main())


def test_a_hung_store_degrades_the_engine_and_loses_nothing_once_it_answers(tmp_path, redis_server):
    async def main():
        (a,) = _engines(tmp_path, redis_server.url, n=1)
        await _started(a)
        redis_server.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            assert _admitted(a, "acme", 4) == 4
            await _until(lambda: a.fleet.degraded, "degraded by a store that does not answer", 10)
            assert _admitted(a, "acme", 10) == 6  # still enforcing locally
        finally:
            redis_server.resume()
        await _until(lambda: not a.fleet.degraded and a.fleet.sync.backlog_keys == 0, "recovered", 10)
        (b,) = _engines(tmp_path / "other", redis_server.url, n=1)
        await _started(b)
        assert _admitted(b, "acme", 1) == 1
        await _until(lambda: b.fleet.sync.backlog_keys == 0, "b synced")
        assert _admitted(b, "acme", 5) == 0  # a's 10 reached the store once: 10 + 1 > burst
        await a.fleet.stop()
        await b.fleet.stop()
    asyncio.run(main())
