"""The sync against a real redis-server: deltas add up across engines, exactly once, through outages."""

import asyncio

import pytest

from pyengine.algorithms.cost_based import CostBudget
from pyengine.algorithms.token_bucket import TokenBucket
from pyengine.clock import SystemClock
from pyengine.fleet import url as fleet_url
from pyengine.fleet.journal import FleetStore
from pyengine.fleet.keyspace import remote_key
from pyengine.fleet.sync import Sync, new_engine_id
from pyengine.state import keys

pytestmark = pytest.mark.redis

KEY = keys.one_value(keys.rule_prefix("p", "r"), "acme")


class Engine:
    """The state side of one engine: its journaled store, a bucket and a budget over it, its sync."""

    def __init__(self, index: int, clock):
        self.clock = clock
        self.store = FleetStore(clock.now_s, 10_000)
        self.bucket = TokenBucket(self.store, 0.001, 10)  # ~no refill during a test
        self.budget = CostBudget(self.store, 1000, "1d", [])
        self.sync = Sync(self.store, new_engine_id(index), clock.now_s)

    def take(self, n: int) -> int:
        return sum(self.bucket.acquire(KEY, 1, self.clock.now_s()).allowed for _ in range(n))

    def tokens(self) -> float:
        return self.bucket.peek(KEY, self.clock.now_s())


async def _joined(engine: Engine, url: str):
    """A connection for `engine`'s sync, its script loaded and, on a cluster, one merge call
    per hash slot: what FleetNode does when it connects."""
    remote = await fleet_url.connect(url)
    engine.sync.by_slot = remote.is_cluster
    await engine.sync.load_script(remote.client)
    return remote


def _run(coro):
    return asyncio.run(coro)


def test_two_engines_see_each_others_admissions(redis_server):
    async def main():
        clock = SystemClock()
        a, b = Engine(0, clock), Engine(1, clock)
        ra, rb = await _joined(a, redis_server.url), await _joined(b, redis_server.url)
        assert a.take(6) == 6 and b.take(6) == 6
        await a.sync.round(ra.client)
        await b.sync.round(rb.client)  # b learns a's 6 on top of its own
        await a.sync.round(ra.client)  # nothing new from a: it learns nothing either...
        assert round(b.tokens()) == -2
        b.take(0)
        a.take(1)  # ...until it writes again: a refused request writes nothing, an allowed one does
        await a.sync.round(ra.client)
        assert round(a.tokens()) <= -2
        await ra.close()
        await rb.close()
    _run(main())


def test_outage_loses_nothing_and_counts_once(redis_server):
    async def main():
        clock = SystemClock()
        a, b = Engine(0, clock), Engine(1, clock)
        ra = await _joined(a, redis_server.url)
        now = clock.now_s()
        assert a.budget.acquire(KEY, 100, now).allowed
        await a.sync.round(ra.client)
        redis_server.stop()
        assert a.budget.acquire(KEY, 250, clock.now_s()).allowed  # local counters keep enforcing
        with pytest.raises(Exception):
            await a.sync.round(ra.client)
        assert a.sync.unsent is not None and a.sync.backlog_keys == 1
        assert a.budget.acquire(KEY, 50, clock.now_s()).allowed  # journaled beside the unsent round
        await ra.close()
        redis_server.start()  # same port, empty: the first 100 were in memory only (no persistence here)
        ra = await _joined(a, redis_server.url)
        await a.sync.round(ra.client)  # the unsent round, then the newer journal
        assert a.sync.backlog_keys == 0
        rb = await _joined(b, redis_server.url)
        assert b.budget.acquire(KEY, 1, clock.now_s()).allowed
        await b.sync.round(rb.client)
        # 250 + 50 pushed after the outage, plus b's 1; the 100 died with the unpersisted server.
        assert b.budget.peek(KEY, clock.now_s()) == 1000 - 301
        await ra.close()
        await rb.close()
    _run(main())


class _ReplyLost:
    """A client whose pipelines reach the server but whose replies never come back."""

    def __init__(self, client):
        self._client = client

    def pipeline(self, transaction=False):
        pipe = self._client.pipeline(transaction=transaction)
        real = pipe.execute

        async def execute(raise_on_error=True):
            await real(raise_on_error=raise_on_error)
            raise ConnectionError("reply lost")
        pipe.execute = execute
        return pipe


def test_a_round_resent_after_a_lost_reply_is_not_counted_twice(redis_server):
    async def main():
        clock = SystemClock()
        a = Engine(0, clock)
        r = await _joined(a, redis_server.url)
        assert a.budget.acquire(KEY, 100, clock.now_s()).allowed
        with pytest.raises(ConnectionError):
            await a.sync.round(_ReplyLost(r.client))
        await a.sync.round(r.client)  # resent with the same sequence number
        await a.sync.round(r.client)
        raw = await r.client.hget(remote_key(KEY), "v")
        import msgspec
        assert msgspec.msgpack.decode(raw)[1] == 100
        await r.close()
    _run(main())


def test_cluster_keys_are_slot_safe_and_shared(redis_cluster):
    async def main():
        clock = SystemClock()
        a, b = Engine(0, clock), Engine(1, clock)
        ra, rb = await _joined(a, redis_cluster.url), await _joined(b, redis_cluster.url)
        assert ra.is_cluster and a.sync.by_slot
        tenants = [keys.one_value(keys.rule_prefix("p", "r"), f"t{i}") for i in range(40)]
        now = clock.now_s()
        for k in tenants:
            assert a.budget.acquire(k, 10, now).allowed and b.budget.acquire(k, 5, now).allowed
        await a.sync.round(ra.client)
        await b.sync.round(rb.client)
        for k in tenants:
            assert b.budget.peek(k, now) == 1000 - 15
        slots = {await ra.client.cluster_keyslot(remote_key(k)) for k in tenants}
        assert len(slots) > 10  # spread over the cluster, not one hot slot
        day_twin = keys.day(tenants[0])
        assert await ra.client.cluster_keyslot(remote_key(day_twin)) == \
            await ra.client.cluster_keyslot(remote_key(tenants[0]))
        await ra.close()
        await rb.close()
    _run(main())


def test_a_round_of_more_keys_than_one_call_carries(redis_server):
    async def main():
        clock = SystemClock()
        a, b = Engine(0, clock), Engine(1, clock)
        ra, rb = await _joined(a, redis_server.url), await _joined(b, redis_server.url)
        tenants = [keys.one_value(keys.rule_prefix("p", "r"), f"t{i}") for i in range(1234)]  # > 2 calls
        now = clock.now_s()
        for k in tenants:
            a.budget.acquire(k, 7, now)
            b.budget.acquire(k, 1, now)
        assert await a.sync.round(ra.client) == len(tenants)
        await b.sync.round(rb.client)
        assert {b.budget.peek(k, now) for k in tenants} == {1000 - 8}
        await ra.close()
        await rb.close()
    _run(main())


def test_an_error_without_a_message_still_says_what_happened():
    from pyengine.clock import FakeClock

    sync = Sync(FleetStore(FakeClock().now_s, 10), "e", FakeClock().now_s)
    sync.failed(TimeoutError())
    assert sync.last_error == "TimeoutError: no answer in time"
    sync.failed(ConnectionError("Connection refused"))
    assert sync.last_error == "ConnectionError: Connection refused"
