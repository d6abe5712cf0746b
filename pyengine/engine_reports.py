"""What the engine reports, and its periodic upkeep: the pipeline's sink, state expiry and bounds, the gauges, /metrics, /readyz.

Functions of the Engine (pyengine.engine) rather than methods, so that module keeps to wiring
and the decision; the server calls `upkeep` about every second (pyengine.upkeep).
"""

import logging

import msgspec

from .coverage import Coverage

from .decision.kill_hits import hit_counts
from .guards.policy_guards import breaker_counts
from .protocol.messages import Reply

log = logging.getLogger("fairvisor.engine")

SWEEP_BATCH = 20_000  # state entries examined per upkeep tick
_json = msgspec.json.Encoder()


class PipelineSink:
    """Where the pipeline reports skipped rules and shadow would-rejects."""

    def __init__(self, metrics, engine=None, coverage: Coverage | None = None):
        self.metrics = metrics
        self.engine = engine  # for the decision log: the bundle in force and the clock
        coverage = coverage or Coverage()
        self.unmatched, self.unlimited = coverage.unmatched, coverage.unlimited

    def skipped(self, policy_id: str, rule: str) -> None:
        self.metrics.rule_skipped.inc((policy_id, rule))

    def would_reject(self, policy_id, rule, reason, key, view) -> None:
        self.metrics.would_reject.inc((policy_id, reason))
        self.metrics.decisions.inc(("would_reject", reason, policy_id))
        e = self.engine
        if e is not None:
            e.decision_log.would_reject(e.bundle, policy_id, rule, reason, key, view, e.clock.now_s())
        log.info("shadow would reject: policy=%s rule=%s reason=%s", policy_id, rule, reason)

    def loop_detected(self, policy_id: str, shadow: bool) -> None:
        self.metrics.loop_detected.inc((policy_id,))


def upkeep(engine) -> None:
    """Called by the server about every second: policy file watch and idle-state expiry."""
    engine.watch_policy()
    now_s = engine.clock.now_s()
    store = engine.store
    evicted = store.evictions
    store.sweep(now_s, SWEEP_BATCH)
    if store.evictions > evicted:
        engine.metrics.state_evictions.inc((), store.evictions - evicted)
    rs = engine.reservations
    early = rs.evicted
    expired = rs.expire(now_s)
    if expired:
        engine.metrics.reservations_expired.inc((), expired)
    if rs.evicted > early:
        engine.metrics.reservations_evicted.inc((), rs.evicted - early)
    engine.metrics.reservations_open.set((), len(rs))
    engine.metrics.state_keys.set((), len(engine.store))
    engine.runtime.expire(now_s)
    engine.console.tick(now_s)
    engine.runtime.count_switches(now_s)
    engine.selftests.expire(now_s)
    engine.decision_log.flush()


def guard_gauges(engine) -> None:
    """Breaker and kill-switch gauges, computed when scraped (O(open breakers + switches))."""
    now_s = engine.clock.now_s()
    m = engine.metrics
    m.circuit_state.values.clear()
    m.circuit_breakers.values.clear()
    for pid, (n_open, n_half) in breaker_counts(engine.bundle, engine.tripped, engine.store, now_s).items():
        # Worst state across the policy's keys: 1 open, else 2 half-open, else 0 closed.
        m.circuit_state.set((pid,), 1 if n_open else 2 if n_half else 0)
        m.circuit_breakers.set((pid, "open"), n_open)
        m.circuit_breakers.set((pid, "half_open"), n_half)
    m.kill_switch_hits.values.clear()
    if engine.bundle is not None:
        switches = (*engine.bundle.kill_switches, *engine.overlay.index.by_id.values())
        for switch, hits in hit_counts(engine.store, switches, now_s).items():
            m.kill_switch_hits.set((switch,), hits)


def scrape(engine) -> Reply:
    """GET /metrics: the Prometheus text exposition (public in decision-service mode, and admin)."""
    guard_gauges(engine)
    for name, c in engine.memo.counts().items():
        engine.metrics.memo_entries.set((name,), c["entries"])
        engine.metrics.memo_clears.set((name,), c["clears"])
    for hook in engine.scrape_hooks:
        hook(engine.metrics)
    return Reply(status=200, content_type="text/plain; version=0.0.4", body=engine.metrics.render())

def health(engine) -> Reply:
    """The public /readyz (contract §2): status, version and hash, nothing more."""
    b = engine.bundle
    if b is None:
        # "ready": fairvisor/edge's probes look for that word; ours read "status" (docs/migrating.md).
        body = {"status": "not_ready", "ready": False, "reason": "no_policy_loaded"}
        return Reply(status=503, content_type="application/json", body=_json.encode(body).decode())
    body = {"status": "ok", "ready": True, "policy_version": b.version, "policy_hash": b.hash}
    return Reply(status=200, content_type="application/json", body=_json.encode(body).decode())
