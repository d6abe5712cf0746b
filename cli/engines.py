"""`fairvisor run`'s engines: FAIRVISOR_ENGINES processes, each started, watched and restarted on its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from pyengine.engine_paths import engine_env, engine_sockets, per_engine

from .instance_guard import SocketWatch
from .processes import STOP_TIMEOUT_S, engine_answers, signal_quietly, spawn, stop

POLL_S = 0.1  # the supervisor loop period: a dead engine is restarted within about this long
CRASH_WINDOW_S = 1.0  # an engine that dies younger than this is crash-looping: back off
MAX_BACKOFF_S = 5.0
PID_FILE = "engine.pid"  # in the nginx runtime dir; engine i > 0: engine-<i>.pid (per_engine)


class EngineBusy(Exception):
    """An engine refused to start: another live process owns its socket or state dir."""


class Engine:
    """One engine process: its index, socket, environment and restart bookkeeping."""

    def __init__(self, index: int, count: int, socket_path: str, env: dict, pid_path: str):
        self.index = index
        self.name = "engine" if count == 1 else f"engine {index}"
        self.socket = socket_path
        self.env = env
        self.pid_path = pid_path
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restarts = 0  # consecutive crash-loop restarts (deaths younger than CRASH_WINDOW_S)
        self.restart_at: float | None = None  # when a dead engine is started again
        self.watch = SocketWatch(socket_path)

    def start(self) -> None:
        self.watch.engine_gone()
        self.restart_at = None
        self.proc = spawn([sys.executable, "-m", "pyengine"], self.env)
        self.started_at = time.monotonic()
        with open(self.pid_path, "w") as f:
            f.write(f"{self.proc.pid}\n")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Engines:
    """The edge's engines. log(msg) reports to the operator; fail_mode names what nginx does meanwhile."""

    def __init__(self, settings, env: dict, runtime_dir: str, log):
        self.log = log
        self.fail_mode = settings.fail_mode
        count = settings.engines
        pid_base = os.path.join(runtime_dir, PID_FILE)
        self.engines = [Engine(i, count, path, engine_env(env, settings, i), per_engine(pid_base, i))
                        for i, path in enumerate(engine_sockets(settings))]

    def start(self) -> None:
        for engine in self.engines:
            engine.start()

    def wait_ready(self, timeout_s: float, stopping) -> str | None:
        """None once every engine answers on its socket; else why not (stopping() ends the wait early)."""
        deadline = time.monotonic() + timeout_s
        waiting = list(self.engines)
        while waiting and time.monotonic() < deadline and not stopping():
            for engine in list(waiting):
                if engine.proc.poll() is not None:
                    return (f"the {engine.name} exited with status {engine.proc.returncode} before answering on "
                            f"{engine.socket} (its reason is above)")
                if engine_answers(engine.socket):
                    engine.watch.engine_ready()
                    waiting.remove(engine)
            if waiting:
                time.sleep(POLL_S / 2)
        if waiting and not stopping():
            return f"the {waiting[0].name} did not answer on {waiting[0].socket} within {timeout_s:.0f} s"
        return None

    def check(self, stopping) -> None:
        """One supervision step: a dead engine is restarted (after a back-off when crash-looping),
        an engine whose socket was removed or replaced is stopped (then restarted). Raises
        EngineBusy when an engine refused to start because its socket or state dir is taken."""
        now = time.monotonic()
        for engine in self.engines:
            if engine.alive():
                self._check_socket(engine)
                continue
            if engine.restart_at is None:
                self._schedule_restart(engine, now)
            if now >= engine.restart_at and not stopping():  # at once, unless crash-looping
                engine.start()

    def _schedule_restart(self, engine: Engine, now: float) -> None:
        from pyengine.instance_lock import EXIT_BUSY

        code = engine.proc.returncode
        if code == EXIT_BUSY:
            raise EngineBusy(f"the {engine.name} refused to start: another live process owns {engine.socket} "
                             "or the state dir (its reason is above); stopping rather than serve on someone "
                             "else's engine")
        young = now - engine.started_at < CRASH_WINDOW_S
        engine.restarts = engine.restarts + 1 if young else 0
        self.log(f"{engine.name} exited with status {code}; restarting (nginx applies fail mode "
                 f"'{self.fail_mode}' meanwhile)")
        # Crash loop: back off (this engine only; the others keep being watched).
        engine.restart_at = now + (min(MAX_BACKOFF_S, POLL_S * 2 ** engine.restarts) if engine.restarts else 0.0)

    def _check_socket(self, engine: Engine) -> None:
        """The engine's socket removed or replaced: its nginx workers no longer reach it. Restart it."""
        if not engine.watch.watching:
            if engine_answers(engine.socket, timeout_s=0.05):
                engine.watch.engine_ready()  # a restarted engine is up
            return
        problem = engine.watch.problem()
        if problem:
            self.log(f"ERROR: the {engine.name} socket {engine.socket} was {problem} while the {engine.name} "
                     f"(pid {engine.proc.pid}) ran; nginx cannot reach it there. Restarting the {engine.name}")
            stop(engine.proc, signal.SIGTERM, STOP_TIMEOUT_S)

    def signal_all(self, sig: int) -> None:
        for engine in self.engines:
            signal_quietly(engine.proc, sig)

    def stop(self) -> None:
        """SIGTERM to every engine at once, then each waited for (KILL past the timeouts); logged."""
        self.signal_all(signal.SIGTERM)
        for engine in self.engines:
            if engine.proc is None:
                continue
            try:
                engine.proc.wait(timeout=STOP_TIMEOUT_S)  # one TERM only: a second one ends its clean shutdown
            except subprocess.TimeoutExpired:
                stop(engine.proc, signal.SIGTERM, STOP_TIMEOUT_S)  # TERM again, then KILL
            self.log(f"{engine.name} stopped (status {engine.proc.returncode})")
