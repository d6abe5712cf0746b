"""Script calls batched per event-loop iteration: one pipelined round trip for every call made in it.

The strict path makes one script call per request; redis-py spends about 100 µs of CPU on one
command sent alone and about 25 µs per command in a pipeline of ten (docs/fleet.md). So the
calls made while the loop handles one batch of frames are queued, and sent together once it
moves on (`call_soon`): a pipeline without MULTI, in which every script call is still atomic by
itself, in the order made. A lone call costs what it did; a burst costs a fraction each.

Every call of a batch shares its deadline (`timeout_s`) and its fate on a broken connection:
each caller gets the exception. A server that lost its scripts (a restart) answers NOSCRIPT:
the script is loaded again and those calls are resent once.
"""

import asyncio

from redis.exceptions import NoScriptError

GRACE_YIELDS = 4  # loop iterations a reply already received needs to reach its caller


class ScriptBatch:
    """`await call(keys, args)` runs `lua` (EVALSHA) on `client` in the current iteration's pipeline."""

    def __init__(self, client, lua: str, timeout_s: float):
        self.client = client
        self.lua = lua
        self.timeout_s = timeout_s
        self.sha: str | None = None
        self._queued: list = []  # (keys, args, future) made since the last flush
        self.batches = 0  # pipelines sent (tests, bench: calls per batch)
        self.calls = 0

    async def load(self) -> None:
        """Load the script now (on attach), so that no decision's deadline pays for it."""
        self.sha = await self.client.script_load(self.lua)

    def call(self, keys, args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((keys, args, future))
        return future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        asyncio.get_running_loop().create_task(self._send(queued))

    async def _send(self, queued) -> None:
        self.batches += 1
        self.calls += len(queued)
        try:
            replies = await self._within_deadline(self._round_trip(queued))
        except BaseException as exc:  # noqa: BLE001 - every caller learns why; cancellation included
            for _, _, future in queued:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), reply in zip(queued, replies):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _within_deadline(self, work):
        """`work`'s result, or TimeoutError after timeout_s. An answer that arrived while this
        event loop was busy elsewhere (a CPU-starved engine sees its timer and the reply in the
        same iteration, the timer first) gets GRACE_YIELDS more loop iterations to be read."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait((task,), timeout=self.timeout_s)
        for _ in range(GRACE_YIELDS if not done else 0):
            await asyncio.sleep(0)
            if task.done():
                break
        if not task.done():
            task.cancel()
            raise TimeoutError(f"no answer from the state store within {self.timeout_s * 1000:.0f} ms")
        return task.result()

    async def _round_trip(self, queued) -> list:
        if self.sha is None:
            self.sha = await self.client.script_load(self.lua)
        replies = await self._pipelined(queued)
        lost = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if lost:
            self.sha = await self.client.script_load(self.lua)
            again = await self._pipelined([queued[i] for i in lost])
            for i, r in zip(lost, again):
                replies[i] = r
        return replies

    async def _pipelined(self, queued) -> list:
        if len(queued) == 1:  # no pipeline object for a lone call
            keys, args, _ = queued[0]
            try:
                return [await self.client.evalsha(self.sha, len(keys), *keys, *args)]
            except NoScriptError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for keys, args, _ in queued:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)
