"""The engine process: a uvloop Unix-socket server with background upkeep and ordered shutdown."""

import asyncio
import logging
import os
import signal

from .instance_lock import EXIT_BUSY, InstanceBusy, SocketIdentity, hold, live_owner
from .protocol.connection import ConnectionProtocol, FrameStats
from .protocol.framing import DEFAULT_MAX_FRAME_BYTES
from .protocol.limits import ConnectionLimits
from .socket_access import SocketAccessError, apply as apply_socket_access, unreachable_reason, who_may_connect
from .upkeep import Upkeep

log = logging.getLogger("fairvisor.server")

SOCKET_MODE = 0o660  # the default: owner and group (nginx's group) only (FAIRVISOR_ENGINE_SOCKET_MODE)
SHUTDOWN_GRACE_S = 2.0
UPKEEP_INTERVAL_S = 1.0
# Policy-file watch and durable-state flush: a changed policy is in force, and a kill -9 loses
# at most about this much accounting (plus one write), both well within the 1 s promised.
WATCH_INTERVAL_S = 0.5
# Decision-log writes: often enough that a reject flood's records go out in small pieces
# (12k records/s cost ~4 ms of event loop per write, instead of a ~40 ms stall once a second).
# Short, so a reject flood's flush is a short pause: 20 ms batches of a 30k/s flood gave a p99
# of 4-5 ms against 13-16 ms at 0.1 s, for the same engine CPU (docs/performance.md).
LOG_FLUSH_INTERVAL_S = 0.02


class EngineServer:
    """Owns the listening socket, the live connections and the upkeep task.

    Shutdown order: stop accepting, close connections (each once it has written the reply to
    every frame it read: at once, or when its strict answers from the store are in), wait up to
    the grace period, then let the engine flush its state.
    """

    def __init__(self, engine, socket_path: str, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 limits: ConnectionLimits | None = None, socket_mode: int = SOCKET_MODE,
                 socket_group: str | None = None, nginx_user: str | None = None):
        self.engine = engine
        self.socket_mode = socket_mode
        self.socket_group = socket_group  # FAIRVISOR_ENGINE_SOCKET_GROUP
        self.nginx_user = nginx_user  # the workers' user to check (FAIRVISOR_NGINX_USER)
        self.socket_path = socket_path
        self.max_frame_bytes = max_frame_bytes
        self.connections: set[ConnectionProtocol] = set()
        self.frame_stats = FrameStats()
        self.limits = limits or ConnectionLimits()
        if self.limits.metrics is None:
            self.limits.metrics = engine.metrics
        engine.scrape_hooks.append(self._report_transport)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self.socket_identity: SocketIdentity | None = None

    async def start(self) -> None:
        _remove_stale_socket(self.socket_path)  # InstanceBusy when a live process listens there
        loop = asyncio.get_running_loop()
        handle = self.engine.handle
        # The umask makes bind() create the socket owner-only: a chmod afterwards alone would leave
        # a window in which a permissive umask (e.g. 000) makes it world-connectable. Group and
        # mode are applied once the group is the configured one (socket_access.apply).
        old_umask = os.umask(0o177)
        try:
            self._server = await loop.create_unix_server(
                lambda: ConnectionProtocol(handle, self.connections, self.max_frame_bytes, self.frame_stats,
                                           self.limits),
                path=self.socket_path,
                backlog=1024,
            )
        finally:
            os.umask(old_umask)
        self.socket_identity = SocketIdentity(self.socket_path)
        try:
            apply_socket_access(self.socket_path, self.socket_mode, self.socket_group)
        except SocketAccessError:
            self._server.close()  # nobody may reach an engine that refuses to start
            await self._server.wait_closed()
            self.socket_identity.unlink_if_ours()
            raise
        self._say_who_may_connect()
        # All background work on one timer (pyengine.upkeep), in this order when due together.
        self.upkeep = Upkeep([
            (LOG_FLUSH_INTERVAL_S, self.engine.decision_log.flush, "decision log flush"),
            (WATCH_INTERVAL_S, self.engine.watch, "watch"),
            (UPKEEP_INTERVAL_S, self.engine.upkeep, "upkeep"),
            (self.limits.reap_interval_s, lambda: self.limits.reap(self.connections), "connection reap"),
        ], count_error=lambda: self.engine.metrics.engine_errors.inc(("upkeep",)))
        self._tasks = [loop.create_task(self.upkeep.run())]
        if self.engine.fleet is not None:
            self.engine.fleet.start()  # the sync rounds with the shared store (pyengine.fleet)
        log.info("engine listening on %s", self.socket_path)

    def _say_who_may_connect(self) -> None:
        log.info("engine socket %s: %s", self.socket_path, who_may_connect(self.socket_path))
        if self.nginx_user:
            reason = unreachable_reason(self.socket_path, self.nginx_user)
            if reason:
                # Every request would fail open (or closed) with the cause only in nginx's error.log.
                log.error("nginx workers (user %s) cannot open the engine socket: %s; set "
                          "FAIRVISOR_ENGINE_SOCKET_GROUP to their group, or run them as the engine's user "
                          "(docs/operations.md#engine-socket-access)", self.nginx_user, reason)

    def _report_transport(self, metrics) -> None:
        metrics.shim_connections.set((), len(self.connections))
        metrics.frames.values[()] = self.frame_stats.frames
        metrics.frame_reads.values[()] = self.frame_stats.reads
        metrics.shim_pending_bytes.set((), self.limits.pending_bytes)

    def request_stop(self) -> None:
        self._stopped.set()

    async def serve_until_stopped(self) -> None:
        await self._stopped.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_S
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        # Only the socket we bound: a path removed or taken over meanwhile is another process's.
        if self.socket_identity is not None and not self.socket_identity.unlink_if_ours():
            log.warning("engine socket %s is no longer ours (removed or replaced): left in place", self.socket_path)
        if self.engine.fleet is not None:
            await self.engine.fleet.stop()  # the journal's last round
        self.engine.close()
        log.info("engine stopped")


def _remove_stale_socket(path: str) -> None:
    """A crashed engine's leftover goes; a socket some live process listens on is never touched."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    reason = live_owner(path)
    if reason is not None:
        raise InstanceBusy(reason)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def hold_instance_locks(settings) -> list:
    """The state dir's and the socket's locks, before any state is read (InstanceBusy when taken)."""
    return [hold(os.path.join(settings.state_dir, "engine.lock"), f"state dir {settings.state_dir}"),
            hold(settings.engine_socket + ".lock", f"engine socket {settings.engine_socket}")]


async def serve(engine, socket_path: str, settings=None) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP asks the engine to reload its policy."""
    access = {} if settings is None else {"socket_mode": settings.engine_socket_mode,
                                          "socket_group": settings.engine_socket_group,
                                          "nginx_user": settings.nginx_user}
    server = EngineServer(engine, socket_path, **access)
    strict_task = None
    if settings is not None and settings.state_url:
        strict_task = asyncio.get_running_loop().create_task(_use_strict_store(engine, settings))
    await server.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, server.request_stop)
    loop.add_signal_handler(signal.SIGINT, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, engine.request_reload)
    await server.serve_until_stopped()
    if strict_task is not None:
        strict_task.cancel()


async def _use_strict_store(engine, settings) -> None:
    """Fleet mode: rules with consistency=strict are decided in the store (pyengine.fleet.strict)."""
    from .fleet import strict
    from .fleet.url import connect

    store = strict.StrictStore(None, strict.timeout_s(settings.engine_timeout_ms))
    engine.use_strict_backend(store)
    await strict.attach_when_reachable(store, settings.state_url, connect)


def main() -> int:
    """Entry point of `python -m pyengine` and `fairvisor engine`."""
    import uvloop

    from .config import ConfigError, from_env
    from .engine import build_engine

    try:
        settings = from_env()
    except ConfigError as exc:
        print(f"fairvisor engine: {exc}", flush=True)
        return 2
    # With FAIRVISOR_ENGINES > 1 the engines share `fairvisor run`'s output: each line names its engine.
    who = "%(name)s" if settings.engines == 1 else f"%(name)s[engine {settings.engine_index}]"
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {who}: %(message)s",
    )
    try:
        locks = hold_instance_locks(settings)  # noqa: F841 - held until the process exits
        # A refused policy at start does not stop the engine: it answers 503 no_policy_loaded
        # (and /readyz says why) until a valid file appears, like a failed reload would.
        engine = build_engine(settings)
        uvloop.run(serve(engine, settings.engine_socket, settings))
    except SocketAccessError as exc:
        print(f"fairvisor engine: {exc}", flush=True)
        return 2
    except InstanceBusy as exc:
        print(f"fairvisor engine: refusing to start: {exc}; give this instance its own "
              f"FAIRVISOR_STATE_DIR / FAIRVISOR_ENGINE_SOCKET", flush=True)
        return EXIT_BUSY
    return 0
