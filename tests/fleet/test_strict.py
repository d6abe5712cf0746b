"""consistency=strict against real redis-server processes: two engines, one store, exact counts.

Two Engine objects in one test process stand for two engines of a fleet; each has its own
connection to the store and its own local store, and they share a fake clock.
"""

import asyncio
import json
import random
import time
import types

from redis.crc import key_slot

from pyengine.algorithms.cost_based import CostBudget
from pyengine.algorithms.token_bucket import TokenBucket
from pyengine.clock import FakeClock
from pyengine.fleet.keyspace import remote_key
from pyengine.fleet.strict import StrictStore, local_value
from pyengine.fleet.url import connect
from pyengine.state import keys
from tests.engine.helpers import decide, hdr, make_engine, rule_key

# The store expires values on its own clock (PEXPIREAT), so the engines' fake clock starts now.
T0 = float(int(time.time())) + 0.25
TIMEOUT_S = 2.0  # generous: these tests are about exactness, not about a slow store

BUCKET = {"name": "per-org", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
          "algorithm_config": {"tokens_per_second": 1, "burst": 20}, "consistency": "strict"}
LLM = {"name": "llm", "limit_keys": ["header:x-org"], "algorithm": "token_bucket_llm",
       "algorithm_config": {"tokens_per_minute": 100000, "tokens_per_day": 1650}, "consistency": "strict"}
CHAT = json.dumps({"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}).encode()


def _bundle(*rules):
    return {"bundle_version": 1, "policies": [{"id": "p1", "spec": {"selector": {"pathPrefix": "/"},
                                                                   "rules": list(rules)}}]}


async def _fleet(url, bundle, n=2, timeout_s=TIMEOUT_S):
    clock = FakeClock(T0)
    engines, remotes = [], []
    for _ in range(n):
        remote = await connect(url)
        engine = make_engine(bundle, clock=clock)
        engine.use_strict_backend(StrictStore(remote, timeout_s))
        engines.append(engine)
        remotes.append(remote)
    return engines, remotes, clock


async def _answer(engine, org="acme", with_decision=False, **kw):
    reply = decide(engine, headers={"X-Org": org}, with_decision=with_decision, **kw)
    return await reply if isinstance(reply, types.CoroutineType) else reply


async def _close(remotes):
    for r in remotes:
        await r.close()


def test_two_engines_admit_exactly_the_limit_under_interleaving(redis_server):
    async def main():
        (a, b), remotes, clock = await _fleet(redis_server.url, _bundle(BUCKET, LLM))
        kw = dict(method="POST", uri="/v1/chat/completions", body=CHAT)
        _, d = await _answer(a, org="probe", with_decision=True, **kw)
        per_request = d.reserved[0][2]  # prompt estimate + max_tokens
        # 60 requests in flight at once, alternating engines: every one is a store round trip.
        replies = await asyncio.gather(*[_answer(e, **kw) for e in (a, b) * 30])
        admitted = [r for r in replies if r.status == 0]
        # TPD admits floor(1650 / per_request) requests, the bucket 20: whichever is lower, exactly.
        assert len(admitted) == min(20, 1650 // per_request)
        day = local_value("c", await remotes[0].client.hget(remote_key(keys.day(rule_key("p1", "llm", "acme"))), "v"))
        assert day[1] == len(admitted) * per_request
        reasons = {hdr(r, "X-Fairvisor-Reason") for r in replies if r.status}
        assert reasons <= {"rate_limit_exceeded", "tpd_exceeded"} and reasons
        assert a.metrics.strict_decisions.values[("store",)] + b.metrics.strict_decisions.values[("store",)] == 61
        await _close(remotes)

    asyncio.run(main())


def test_the_bucket_alone_is_exact_across_engines_and_refills_for_the_fleet(redis_server):
    async def main():
        (a, b), remotes, clock = await _fleet(redis_server.url, _bundle(BUCKET))
        replies = await asyncio.gather(*[_answer(e) for e in (a, b) * 15])
        assert sum(r.status == 0 for r in replies) == 20
        clock.advance(3.0)  # three tokens for the fleet, not three per engine
        replies = await asyncio.gather(*[_answer(e) for e in (b, a) * 3])
        assert sum(r.status == 0 for r in replies) == 3
        rejected = next(r for r in replies if r.status)
        assert hdr(rejected, "Retry-After") == "1" and hdr(rejected, "RateLimit-Remaining") == "0"
        await _close(remotes)

    asyncio.run(main())


TIGHT_BUDGET = {"name": "budget", "limit_keys": ["header:x-org"], "algorithm": "cost_based",
                "algorithm_config": {"budget": 2, "period": "1d",
                                     "staged_actions": [{"threshold_percent": 100, "action": "reject"}]},
                "consistency": "strict"}


async def _all_or_nothing(url):
    (a, b), remotes, _ = await _fleet(url, _bundle(BUCKET, TIGHT_BUDGET))
    assert [(await _answer(e)).status for e in (a, b, a)] == [0, 0, 429]
    bucket_key = remote_key(rule_key("p1", "per-org", "acme"))
    tat = local_value("g", await remotes[0].client.hget(bucket_key, "v"))
    # The refused third request charged neither rule: the bucket holds two charges (2 s of debt).
    assert tat == T0 + 2.0
    await _close(remotes)
    return a, b


def test_two_strict_rules_commit_all_or_none(redis_server):
    asyncio.run(_all_or_nothing(redis_server.url))


def test_cluster_keys_in_different_slots_are_compensated(redis_cluster):
    slots = {key_slot(remote_key(rule_key("p1", name, "acme"))) for name in ("per-org", "budget")}
    assert len(slots) == 2  # the two rules' keys live in two slots: two calls, then a refund

    a, b = asyncio.run(_all_or_nothing(redis_cluster.url))
    assert a.strict.backend.compensations == 1  # a's second request: bucket charged, budget refused, refunded
    assert b.strict.backend.compensations == 0


def test_store_down_enforces_on_local_counters_and_is_counted(redis_server):
    async def main():
        (a,), remotes, clock = await _fleet(redis_server.url, _bundle(BUCKET), n=1, timeout_s=0.2)
        assert [(await _answer(a)).status for _ in range(5)] == [0] * 5  # in the store, mirrored here
        redis_server.kill()
        statuses = [(await _answer(a)).status for _ in range(20)]
        # 15 tokens were left (the mirror knew of the 5 taken): exactly those, then refusals.
        assert statuses == [0] * 15 + [429] * 5
        assert a.metrics.strict_decisions.values[("local",)] == 20
        assert a.metrics.strict_decisions.values[("store",)] == 5
        await _close(remotes)

    asyncio.run(main())


def test_the_script_agrees_with_the_engines_limiters(redis_server):
    """strict.lua's arithmetic against TokenBucket and CostBudget over many random steps."""
    async def main():
        remote = await connect(redis_server.url)
        store = StrictStore(remote, TIMEOUT_S)
        rng = random.Random(7)
        now = T0
        for trial in range(30):
            rate, burst = rng.choice([(0.5, 3), (1 / 60 * 1000, 1000), (7.3, 11.9), (1000.0, 2000.0)])
            ref = {}
            bucket = TokenBucket(_Dict(ref), rate, burst)
            key = f"R4:p-{trial}3:tb"
            budget_key = f"R4:p-{trial}3:cb"
            budget = CostBudget(_Dict(ref), 5_000_000, "1h", [(100, "reject", 0)])
            for _ in range(40):
                now += rng.choice([0.0, 0.001, 0.137, 1.0, 3.3])
                cost = rng.choice([1, 2, 0.5, burst / 3, burst])
                micros = rng.choice([1, 250_000, 1_000_000, 3_000_000])
                want_tb = bucket.acquire(key, cost, now).allowed
                want_cb = budget.acquire(budget_key, micros, now).allowed
                got, _ = await store.acquire([bucket.claim(key, cost)], now)
                assert (got is None) == want_tb, (trial, now, cost)
                got, _ = await store.acquire([budget.claim(budget_key, micros, now)], now)
                assert (got is None) == want_cb, (trial, now, micros)
                raw = await remote.client.hget(remote_key(key), "v")
                if key in ref:
                    assert local_value("g", raw) == ref[key]
        await remote.close()

    asyncio.run(main())


class _Dict(dict):
    def __init__(self, backing):
        super().__init__()
        self.backing = backing
        self.get = backing.get
        self.put = backing.__setitem__
        self.delete = lambda k: backing.pop(k, None)


async def _burst(url, n_keys=30, flush=None):
    remote = await connect(url)
    store = StrictStore(remote, TIMEOUT_S)
    bucket = TokenBucket(_Dict({}), 1, 2)
    claims = [[bucket.claim(f"R2:p1{k}:k", 1)] for k in range(n_keys)]
    await store.acquire(claims[0], T0)  # the first call loads the script
    if flush is not None:
        flush()
    batches = store.script.batches
    # Three rounds over every key, all made in one loop iteration: each key admits two, refuses the third.
    results = await asyncio.gather(*[store.acquire(c, T0) for _ in range(3) for c in claims])
    await remote.close()
    return store.script.batches - batches, [r[0] for r in results]


def test_calls_made_in_one_loop_iteration_share_one_pipeline(redis_server):
    batches, refused = asyncio.run(_burst(redis_server.url))
    assert batches == 1
    assert refused == [None] * 30 + [0] + [None] * 29 + [0] * 30  # key 0 had one token taken already


def test_a_store_that_lost_its_scripts_is_given_the_script_again(redis_server):
    batches, refused = asyncio.run(_burst(redis_server.url, flush=lambda: redis_server.call("SCRIPT", "FLUSH")))
    assert refused.count(None) == 59


def test_a_cluster_pipeline_reaches_every_master(redis_cluster):
    assert len({key_slot(remote_key(f"R2:p1{k}:k")) * 3 // 16384 for k in range(30)}) == 3  # all three nodes
    batches, refused = asyncio.run(_burst(redis_cluster.url))
    assert refused.count(None) == 59


def test_a_hung_store_is_given_up_at_the_deadline_and_used_again_once_it_answers(redis_server):
    async def main():
        (a,), remotes, clock = await _fleet(redis_server.url, _bundle(BUCKET), n=1, timeout_s=0.05)
        store = a.strict.backend
        assert (await _answer(a)).status == 0
        redis_server.pause()  # SIGSTOP: the socket stays open, nothing answers
        try:
            started = time.monotonic()
            assert (await _answer(a)).status == 0  # decided locally once the 50 ms deadline passed
            assert time.monotonic() - started < 1.0
            deadline = time.monotonic() + 5
            while not store._down_until:  # silence for SILENT_TIMEOUTS deadlines: the store is away
                assert time.monotonic() < deadline, "the store was never considered away"
                assert (await _answer(a)).status in (0, 429)
            assert a.metrics.strict_decisions.values[("local",)] >= 1
        finally:
            redis_server.resume()
        store._down_until = 0.0  # skip the rest of the retry window
        before = a.metrics.strict_decisions.values[("store",)]
        deadline = time.monotonic() + 5
        while a.metrics.strict_decisions.values[("store",)] == before:
            assert time.monotonic() < deadline, "the store was not used again"
            await _answer(a, org="other")
        await _close(remotes)

    asyncio.run(main())
