"""merge.lua in a real redis-server and kinds.merge in Python agree on random deltas of every kind.

The sync rebases local values with kinds.merge on what merge.lua answered, so the two must be
one rule; this drives both with the same 3000 random deltas (two engines, five keys a kind)."""

import asyncio
import random
import time

import msgspec
import pytest
import redis.asyncio as aioredis

from pyengine.fleet import kinds
from pyengine.fleet.sync import MERGE_LUA, SLACK_S

pytestmark = pytest.mark.redis


def _delta(rnd: random.Random, kind: str, now: float, stored, engine: str) -> list:
    if kind == kinds.G:
        return [kind, rnd.uniform(-3, 5)]
    if kind == kinds.P:
        return [kind, 60 * rnd.randrange(int(now) // 60 - 1, int(now) // 60 + 2), rnd.randrange(-5, 20)]
    if kind in (kinds.S, kinds.W):
        acc = [kind, rnd.choice([0.0, 10.0]), [now + rnd.random() * 5 for _ in range(rnd.randrange(3))], []]
        if kind == kinds.S and stored is not None:
            own = [m[0] for m in stored[1] if m[1] == engine]
            acc[3] = rnd.sample(own, min(len(own), rnd.randrange(3)))
        return acc
    start = int(now // 60) * 60 - rnd.choice([0, 60])
    return [kind, start, rnd.uniform(0, 3), rnd.uniform(-1, 5), rnd.choice([-1.0, now - rnd.random()]),
            now + rnd.uniform(0, 200)]


def _same(x):
    """msgpack in Lua turns integral floats into integers: compare as floats."""
    if isinstance(x, list):
        return [_same(y) for y in x]
    return float(x) if isinstance(x, (int, float)) else x


def test_lua_and_python_merge_agree(redis_server):
    async def main():
        client = aioredis.Redis(host=redis_server.address[0], port=redis_server.address[1])
        sha = await client.script_load(MERGE_LUA)
        rnd = random.Random(20261204)
        now = float(int(time.time()))  # the script sets real expiries: the values must be current
        stored: dict = {}
        for i in range(3000):
            kind = rnd.choice([kinds.G, kinds.P, kinds.S, kinds.W, kinds.B])
            key = f"test:{kind}{rnd.randrange(5)}"
            engine = rnd.choice(["e0", "e1"])
            now += rnd.random() * 3
            acc = _delta(rnd, kind, now, stored.get(key), engine)
            expected = kinds.merge(kind, stored.get(key), acc, now, engine)
            (raw,) = await client.evalsha(sha, 1, key, engine, i + 1, repr(now), SLACK_S, msgspec.msgpack.encode(acc))
            got = msgspec.msgpack.decode(raw)
            assert _same(got) == _same(expected), (i, kind, acc, stored.get(key))
            stored[key] = got
        # Applying a sequence number twice changes nothing (the sync's exactly-once).
        key = "test:G0"
        before = await client.hget(key, "v")
        await client.evalsha(sha, 1, key, "e0", 1, repr(now), SLACK_S, msgspec.msgpack.encode([kinds.G, 5.0]))
        assert await client.hget(key, "v") == before
        await client.aclose()
    asyncio.run(main())
