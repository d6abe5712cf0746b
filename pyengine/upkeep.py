"""The engine process's background work on one timer: each job runs when its interval has passed.

One task wakes every `tick_s` (the shortest interval) and runs the jobs that are due, in the
order given, each under its own guard: a job that raises is logged and runs again at its
next turn, and the others still run. Time is the caller's monotonic clock (the event loop's),
so tests drive `tick(now_s)` directly without sleeping.
"""

import asyncio
import logging

log = logging.getLogger("fairvisor.server")


class Job:
    __slots__ = ("interval_s", "fn", "what", "next_s")

    def __init__(self, interval_s: float, fn, what: str):
        self.interval_s = interval_s
        self.fn = fn  # () -> None
        self.what = what  # for the log line when it raises
        self.next_s: float | None = None  # first run: one interval after the first tick


class Upkeep:
    """jobs: (interval_s, fn, what) in the order they run when due together."""

    def __init__(self, jobs, count_error=None):
        self.jobs = [Job(*j) for j in jobs]
        # () -> None, called for each job that raised: the server counts it in
        # fairvisor_engine_errors_total{where="upkeep"}, so a failing job shows beside the log.
        self.count_error = count_error
        self.tick_s = min(j.interval_s for j in self.jobs)

    def tick(self, now_s: float) -> list[str]:
        """Run every job that is due at `now_s`; returns what ran (for tests)."""
        ran = []
        for job in self.jobs:
            if job.next_s is None:
                job.next_s = now_s + job.interval_s
                continue
            if now_s + 1e-9 < job.next_s:
                continue
            # The next turn is one interval after this one; a late tick (a busy loop) does not
            # make a burst of catch-up runs.
            job.next_s += job.interval_s
            if job.next_s <= now_s:
                job.next_s = now_s + job.interval_s
            ran.append(job.what)
            try:
                job.fn()
            except Exception:  # noqa: BLE001 - background work must never stop the server
                log.exception("engine %s failed", job.what)
                if self.count_error is not None:
                    self.count_error()
        return ran

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.tick(loop.time())
        while True:
            await asyncio.sleep(self.tick_s)
            self.tick(loop.time())
