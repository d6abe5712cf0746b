"""The engine's answers to every shim message but Decide: Hello, Health, Metrics, Admin, Settle, DebugSession, Usage.

Engine.handle answers Decide itself (the hot path) and hands every other message here; an
exception raised here is answered by Engine.handle (500 / engine_error) and counted.
"""

from . import debug_session
from .protocol.messages import (PROTOCOL_VERSION, Admin, DebugSession, ErrorReply, Health, Hello, Metrics, Reply,
                                Settle, Usage)
from .usage import handle_usage


def handle_other(engine, t, msg):
    if t is Hello:
        if msg.protocol_version != PROTOCOL_VERSION:
            return ErrorReply(code="version_mismatch",
                              message=f"engine speaks protocol {PROTOCOL_VERSION}, shim {msg.protocol_version}")
        report_shim_counts(engine, msg)
        return engine.hello_reply
    if t is Health:
        return engine.health()
    if t is Metrics:
        report_shim_counts(engine, msg)
        return engine.scrape()
    if t is Admin:
        report_shim_counts(engine, msg)
        return engine.admin.handle(msg)
    if t is Settle:
        if engine.llm_proxy is not None:
            return engine.llm_proxy.settle(msg, engine.clock.now_s())
        if msg.cut:
            engine.decision_log.cutoff(engine.clock.now_s(), msg.reservation_id, msg.counted_tokens)
        return Reply(status=200, content_type="application/json", body="{}")
    if t is DebugSession:
        if engine.debug is None:
            return debug_session.NOT_FOUND
        return engine.debug.endpoint(msg.kind, msg.method.decode("latin-1"), msg.secret, engine.clock.now_s())
    if t is Usage:
        status, body = handle_usage(msg.body, engine.reservations, engine.bundle, engine.clock.now_s(), engine.metrics)
        return Reply(status=status, content_type="application/json", body=body)
    return ErrorReply(code="bad_message", message=f"unexpected message {t.__name__}")

def report_shim_counts(engine, msg) -> None:
    """Counts the shim kept while it could not reach an engine, now reported (Hello, Metrics)."""
    if msg.engine_unavailable_delta > 0:
        engine.metrics.engine_unavailable.inc((), msg.engine_unavailable_delta)
    if msg.settle_lost_delta > 0:
        engine.metrics.llm_settlements.inc(("lost",), msg.settle_lost_delta)
