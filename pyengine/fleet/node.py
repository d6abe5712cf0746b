"""One engine's membership of a fleet: its journaled store, its sync task, and what it reports.

Built by pyengine.engine.build_engine when FAIRVISOR_STATE_URL is set; started by the server
(EngineServer.start) once the event loop runs. The store being unreachable never stops the
engine: it starts, serves from local counters and reports `degraded` until a round succeeds.
"""

import asyncio
import logging

from pyengine.fleet.journal import FleetStore
from pyengine.fleet.overlay_sync import POLL_INTERVAL_S, OverlaySync
from pyengine.fleet.sync import Sync, new_engine_id
from pyengine.metrics import Counter, Gauge

log = logging.getLogger("fairvisor.fleet")

# A key new to this engine wakes the sync early, but rounds stay at least this far apart, so
# a flood of new keys costs at most 200 rounds a second.
EARLY_ROUND_GAP_S = 0.005
FINAL_PUSH_TIMEOUT_S = 2.0  # at shutdown: the journal's last round, so a clean restart loses nothing


class FleetMetrics:
    def __init__(self, registry):
        self.degraded = registry.add(Gauge("fairvisor_state_degraded",
                                           "1 while the shared state store is unreachable (fleet mode)."))
        self.sync_errors = registry.add(Counter("fairvisor_state_sync_errors_total",
                                                "Sync rounds with the shared state store that failed."))
        self.keys_synced = registry.add(Counter("fairvisor_state_sync_keys_total",
                                                "State keys whose deltas the store confirmed."))
        self.lag = registry.add(Gauge("fairvisor_state_sync_lag_seconds",
                                      "Seconds since the last sync round the store confirmed."))
        self.backlog = registry.add(Gauge("fairvisor_state_sync_backlog_keys",
                                          "Keys changed here that the store has not confirmed yet."))


class FleetNode:
    def __init__(self, settings, clock):
        from pyengine.fleet import url as fleet_url  # the redis client import is fleet-only

        self._url = fleet_url
        self.settings = settings
        self.clock = clock
        self.store = FleetStore(clock.now_s, settings.max_state_keys)
        self.metrics: FleetMetrics | None = None  # set by attach, once the engine's registry exists
        self.engine_id = new_engine_id(settings.engine_index)
        self.sync = Sync(self.store, self.engine_id, clock.now_s)
        self.interval_s = settings.sync_interval_ms / 1000
        self.degraded = True  # until the first round succeeds
        self.remote = None
        self.overlay: OverlaySync | None = None
        self._stopped = asyncio.Event()
        self._wake: asyncio.Event | None = None  # set by a first sight (FleetStore.on_first_sight)
        self._task: asyncio.Task | None = None
        self.started_at_s = clock.now_s()

    def attach(self, engine) -> None:
        """Join `engine` (built over self.store): metrics, the overlay's publication."""
        self.metrics = self.sync.metrics = FleetMetrics(engine.metrics.registry)
        self.metrics.degraded.set((), 1)
        self.overlay = OverlaySync(engine)
        engine.scrape_hooks.append(self.report)

    # -- lifecycle (the server's event loop) -------------------------------------------
    def start(self) -> None:
        self._wake = asyncio.Event()
        self.store.on_first_sight = self._wake.set
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _next_round(self, loop, last_s: float) -> bool:
        """Wait for the next round: the interval, or earlier once a key new here was written
        (never sooner than EARLY_ROUND_GAP_S after the last). False = stop."""
        wake = self._wake
        due_s = max(0.0, last_s + self.interval_s - loop.time())
        try:
            if self.degraded:  # no early rounds against a store that just failed
                await asyncio.wait_for(self._stopped.wait(), due_s)
            else:
                await asyncio.wait_for(wake.wait(), due_s)
        except asyncio.TimeoutError:
            pass
        gap = last_s + min(EARLY_ROUND_GAP_S, self.interval_s) - loop.time()
        if gap > 0:
            await asyncio.sleep(gap)
        wake.clear()
        return not self._stopped.is_set()

    async def _run(self) -> None:
        """Every interval: (re)connect when needed, a sync round, and the overlay's round when
        due. Never raises: any store trouble leaves the engine on local counters, retrying."""
        loop = asyncio.get_running_loop()
        client = None
        overlay_due_s = 0.0
        last_s = loop.time() - self.interval_s  # the first round (the connect) at once
        while await self._next_round(loop, last_s):
            last_s = loop.time()
            try:
                if client is None:
                    client = await self._connect()
                    await self.sync.load_script(client)
                await asyncio.wait_for(self.sync.round(client), max(1.0, 20 * self.interval_s))
                if self.overlay is not None and loop.time() >= overlay_due_s:
                    overlay_due_s = loop.time() + POLL_INTERVAL_S
                    await asyncio.wait_for(self.overlay.round(client), 1.0)
                self._state(True)
            except Exception as exc:  # noqa: BLE001 - keep enforcing locally, retry next interval
                was_ok = self.sync.last_error is None
                self.sync.failed(exc)
                if was_ok:
                    log.warning("shared state store %s unreachable (%s): enforcing from local counters, "
                                "%d keys waiting", self.describe_url(), self.sync.last_error, self.sync.backlog_keys)
                client = None  # reconnect (which also reloads the script a restarted server forgot)
                self._state(False)

    async def _connect(self):
        if self.remote is not None:
            try:
                await self.remote.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                pass
            self.remote = None
        self.remote = await self._url.connect(self.settings.state_url)
        self.sync.by_slot = self.remote.is_cluster
        return self.remote.client

    def _state(self, ok: bool) -> None:
        if ok and self.degraded:
            log.info("shared state store reachable (%s): in sync", self.describe_url())
        self.degraded = not ok
        self.metrics.degraded.set((), 0 if ok else 1)

    async def stop(self) -> None:
        """Stop the rounds, then push the journal once more (bounded) and close."""
        self._stopped.set()
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        if self.remote is not None and not self.degraded:
            try:
                await asyncio.wait_for(self.sync.round(self.remote.client), FINAL_PUSH_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - the store went away at the end: say what is lost
                log.warning("final sync failed (%s): %d keys' last deltas not pushed", exc, self.sync.backlog_keys)
            await self.remote.close()

    # -- reporting ---------------------------------------------------------------------
    def describe_url(self) -> str:
        return self._url.mask(self.settings.state_url)

    def report(self, metrics) -> None:
        """Scrape hook: the gauges that are a function of time."""
        last = self.sync.last_ok_s
        self.metrics.lag.set((), self.clock.now_s() - (last if last is not None else self.started_at_s))
        self.metrics.backlog.set((), self.sync.backlog_keys)

    def readiness(self) -> dict:
        """The `state` object of the admin /readyz."""
        last = self.sync.last_ok_s
        body = {
            "backend": "redis-cluster" if self.remote is not None and self.remote.is_cluster else "redis",
            "url": self.describe_url(),
            "status": "degraded" if self.degraded else "ok",
            "engine_id": self.engine_id,
            "sync_interval_ms": self.settings.sync_interval_ms,
            "lag_s": round(self.clock.now_s() - (last if last is not None else self.started_at_s), 3),
            "backlog_keys": self.sync.backlog_keys,
            "keys": len(self.store),
        }
        if self.sync.last_error:
            body["last_error"] = self.sync.last_error
        return body
