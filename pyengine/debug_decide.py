"""Engine.decide when debug sessions, FAIRVISOR_HIDE_REASON or the debug log level are on.

Bound once by the Engine instead of its plain decide, so the plain path pays nothing for any of
them: a debug session's request is decided with a trace (pyengine.explain) whose steps go into
X-Fairvisor-Debug-* headers and, at log level debug, into one log line per decision.
"""

import logging
from types import CoroutineType

import msgspec

from . import debug_session
from .explain import trace as explain_trace
from .protocol.messages import Decide, HelloReply

log = logging.getLogger("fairvisor.engine")
_json = msgspec.json.Encoder()


class DebuggableDecide:
    def __init__(self, engine):
        self.engine = engine

    def __call__(self, msg: Decide):
        """Engine.decide when debug sessions, FAIRVISOR_HIDE_REASON or the debug log level are on
        (bound once in __init__, so the plain path pays nothing for any of them)."""
        session = self.engine.debug is not None and self._cookie(msg)
        if not (session or self.engine.trace_log):
            verdict = self.engine.decide_untraced(msg)
            if verdict.__class__ is CoroutineType:  # strict rules: the store decides
                return self._hidden_later(verdict)
            return debug_session.without_reason(verdict) if self.engine.hide_reason and verdict.status else verdict
        out, verdict, latency_us = explain_trace(self.engine, msg)
        if latency_us is None:
            return self._traced_later(out, verdict, session)
        return self._traced(out, verdict, latency_us, session)

    async def _hidden_later(self, pending):
        verdict = await pending
        return debug_session.without_reason(verdict) if self.engine.hide_reason and verdict.status else verdict

    async def _traced_later(self, out: dict, pending, session: bool):
        verdict, latency_us = await pending
        return self._traced(out, verdict, latency_us, session)

    def _traced(self, out: dict, verdict, latency_us: int, session: bool):
        if verdict.__class__ is HelloReply:
            return verdict
        if self.engine.trace_log:
            log.debug("decision trace: %s", _json.encode(debug_session.loggable(out, self.engine.settings.log_keys)).decode())
        if session:
            return debug_session.with_headers(verdict, debug_session.debug_headers(out, latency_us))
        return debug_session.without_reason(verdict) if self.engine.hide_reason and verdict.status else verdict

    def _cookie(self, msg: Decide) -> bool:
        """Whether the request carries a valid debug-session cookie (the shim sends Cookie only
        when debug sessions are on: CompiledBundle's header list)."""
        b = self.engine.bundle
        if b is None or msg.generation != self.engine.generation:
            return False
        i = b.header_index.get("cookie")
        raw = msg.headers[i] if i is not None and i < len(msg.headers) else None
        if raw.__class__ is list:  # Cookie in several lines (HTTP/2 splits it): one list (RFC 6265 §5.4)
            raw = b"; ".join(raw)
        return raw is not None and self.engine.debug.valid(raw.decode("utf-8", "replace"), self.engine.clock.now_s())
