"""An exception inside the engine is our bug, never an allow: count it, log it (rate-limited), answer.

The fail mode (FAIRVISOR_FAIL_MODE) is for an engine nginx cannot reach. An engine that is
reachable but raised while deciding answers a real rejection instead: 503, reason
``engine_error``, with the usual body of the surface, and keeps serving.
"""

import logging
import sys
import time
import traceback

from .decision.verdict import Decision

log = logging.getLogger("fairvisor.engine")

LOG_INTERVAL_S = 1.0  # at most one traceback per second; the rest are counted in the next line
# The bounded label set of fairvisor_engine_errors_total{where}.
WHERE = ("decide", "settle", "usage", "health", "metrics", "admin", "hello", "frame", "upkeep")

ENGINE_ERROR = Decision(status=503, reason="engine_error")


class EngineErrors:
    """Counts by `where` in the metric, and logs the traceback of at most one per second."""

    def __init__(self, metrics, hide_values: bool = True, clock=time.monotonic):
        self.counter = metrics.engine_errors
        # FAIRVISOR_LOG_KEYS=hashed: an exception's message may quote a client value (a KeyError
        # names its key), so only its type and the stack are logged.
        self.hide_values = hide_values
        self.clock = clock
        self._next_log_s = 0.0
        self._suppressed = 0
        for where in WHERE:
            self.counter.inc((where,), 0)  # every label exists from the start, so rate() works

    def undo(self, charged, now_s: float) -> None:
        """Undo an allow's charges after a later failure (the request is answered engine_error).
        An undo that raises is one more error in the decision: counted and logged like the
        first, and the remaining charges are still undone."""
        for rule, key, amount in reversed(charged or ()):
            try:
                rule.undo(key, amount, now_s, now_s)
            except Exception:  # noqa: BLE001 - counted here; the answer is engine_error already
                self.record("decide")

    def record(self, where: str) -> None:
        """Call from an `except` block: the exception being handled is the one logged."""
        self.counter.inc((where if where in WHERE else "frame",))
        now_s = self.clock()
        if now_s < self._next_log_s:
            self._suppressed += 1
            return
        self._next_log_s = now_s + LOG_INTERVAL_S
        suppressed, self._suppressed = self._suppressed, 0
        more = f" ({suppressed} more since the last one, not logged)" if suppressed else ""
        if not self.hide_values:
            log.exception("engine error in %s: answered engine_error%s", where, more)
            return
        exc = sys.exception()
        stack = "".join(traceback.format_tb(exc.__traceback__)) if exc is not None else ""
        log.error("engine error in %s: answered engine_error%s\nTraceback (message hidden: "
                  "FAIRVISOR_LOG_KEYS=hashed):\n%s%s", where, more, stack, type(exc).__name__)
