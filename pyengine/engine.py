"""The Engine: one engine process's parts wired together, and the answer to every Decide (the hot path).

The parts: the bundle in force (pyengine.policy_holder), the runtime overlay put into effect
(pyengine.runtime_overlay), upkeep and reports (pyengine.engine_reports), the other shim
messages (pyengine.engine_messages), debug-session decisions (pyengine.debug_decide).
"""

import logging
import time
from types import CoroutineType

import msgspec

from .clock import SystemClock
from .coverage import Coverage
from .decision_log import DecisionLog
from . import debug_session, jitter, metrics_edge
from .admin import AdminApi
from .engine_errors import ENGINE_ERROR, EngineErrors
from .errors import PolicyError
from .guards.policy_guards import index_tripped
from .decision.memo import Memo
from .metrics import EngineMetrics
from .overlay.registry import Overlay
from .policy_holder import PolicyHolder
from . import engine_messages, engine_reports
from .engine_reports import PipelineSink
from .debug_decide import DebuggableDecide
from .runtime_overlay import RuntimeOverlay
from .admin_api import AdminRoutes
from .console import page as console_page, summary as console_summary
from .console.stats import ConsoleStats
from .decision.pipeline import Pipeline
from .decision.trace import Decided
from .decision.strict import Strict
from .protocol.messages import (SURFACE_INLINE, Admin, Decide, ErrorReply, Health, Hello, Metrics, Reply, Settle,
                                Usage, Verdict)
from .llm.formats import adapter_name, request_format
from .decision.llm_proxy import LLMProxy
from .recent import RecentRequests
from .decision.request import normalize_path, strip_provider_prefix, view_from_decide
from .decision.reservations import Reservations
from .resources import DEFAULT_POLICY
from .selftest import Selftests
from .state.memory import MemoryStore
from .state.snapshot import Snapshots
from .decision.verdict import Decision, render

log = logging.getLogger("fairvisor.engine")

DEFAULT_POLICY_PATH = str(DEFAULT_POLICY)
_json = msgspec.json.Encoder()


class Engine:
    def __init__(self, settings, clock=None, store=None):
        self.settings = settings
        self.clock = clock or SystemClock()
        self.store = store if store is not None else MemoryStore(max_keys=settings.max_state_keys)
        self.metrics = EngineMetrics()
        self.memo = Memo()  # every memo table of this engine, sized and counted in one place
        metrics_edge.register(self)  # fairvisor/edge's metric names too
        self.errors = EngineErrors(self.metrics, hide_values=settings.log_keys != "raw")
        self.decision_log = DecisionLog.from_settings(settings, self.metrics, self.memo)
        self.coverage = Coverage(memo=self.memo.coverage_route)  # traffic no policy limited, since start (fairvisor coverage)
        # Kill switches and limit overrides added through the admin API (pyengine.overlay).
        self.overlay = Overlay(settings.trusted_proxies, self.memo)
        self.pipeline = Pipeline(PipelineSink(self.metrics, self, self.coverage))
        self.admin_routes = AdminRoutes(self)  # /v1/admin/ (served by the admin listener, contract §8)
        # The status page's figures (pyengine.console): the decision path offers it each allowed
        # decision (it keeps a sample); the decision log hands over the rejections it drains.
        self.console = ConsoleStats(self.metrics, self.decision_log.hasher, self.memo.shown_values)
        self._console_seen = self.console.seen
        self.decision_log.listener = self.console.rejected
        self.admin_routes.extra["/status"] = console_page.page_reply
        self.admin_routes.extra["/v1/admin/summary"] = lambda: console_summary.summary_reply(self)
        self.recent = RecentRequests()  # the last requests decided, for a candidate's replay (what_if)
        self.selftests = Selftests(self.store)  # open `fairvisor selftest` runs
        self.reservations = Reservations()
        self._provider_prefixes = settings.mode == "reverse_proxy"
        self._targets, self._verdicts = self.memo.target, self.memo.verdict  # read per request
        # The LLM reverse proxy: streaming recipes and provider-usage settlement, in each
        # request's own format (FAIRVISOR_LLM_FORMAT=auto picks it per request: llm/formats.py).
        self.llm_format = settings.llm_format
        self.llm_proxy = (LLMProxy(self.reservations, self.metrics, self.decision_log)
                          if settings.mode == "reverse_proxy" and settings.llm_format else None)
        self.started_at_s = time.time()
        self.tripped: dict[str, str] = {}  # breaker keys not closed -> policy id; survives reloads
        # The bundle in force, its loading and watching (pyengine.policy_holder).
        self.policy = PolicyHolder(settings, self.clock, self.store, self.metrics, self.decision_log, self.overlay,
                                   self.memo, self.tripped, lambda: self.runtime.count_switches(self.clock.now_s()))
        # The admin API's switches and overrides put into effect (pyengine.runtime_overlay).
        self.runtime = RuntimeOverlay(self.overlay, self.policy, self.pipeline, self.store, self.metrics,
                                      self.decision_log, self.clock)
        self.overlay_changed = self.runtime.changed
        self.overlay_replaced = self.runtime.replaced
        self.load_bytes = self.policy.load_bytes
        self.load_file = self.policy.load_file
        self.request_reload = self.policy.request_reload
        self.watch_policy = self.policy.watch
        self.start_from_last_good = self.policy.start_from_last_good
        self.snapshots: Snapshots | None = None  # durable state, set by enable_durable_state
        self.fleet = None  # pyengine.fleet.node.FleetNode in fleet mode (FAIRVISOR_STATE_URL)
        self.scrape_hooks: list = []  # fn(metrics) run before /metrics renders (the server's counts)
        # Debug sessions (pyengine.debug_session): None when FAIRVISOR_DEBUG_SESSION_SECRET is unset,
        # so the decision path checks one attribute, not the settings, per request.
        self.debug = debug_session.DebugSessions(settings.debug_session_secret) \
            if settings.debug_session_secret else None
        self.hide_reason = settings.hide_reason
        # FAIRVISOR_LOG_LEVEL=debug: one trace line per decision, decided once here.
        self.trace_log = settings.log_level.lower() == "debug"
        # decide(msg) -> the reply to one Decide frame.
        self.decide = DebuggableDecide(self) if self.debug is not None or self.hide_reason or self.trace_log \
            else self.decide_untraced
        self.admin = AdminApi(self, settings.admin_token)  # the admin listener's endpoints (contract §8)

    # The policy holder's state, read by tooling and the admin endpoints.
    bundle = property(lambda self: self.policy.bundle)
    generation = property(lambda self: self.policy.generation)
    hello_reply = property(lambda self: self.policy.hello_reply)
    bundle_bytes = property(lambda self: self.policy.bundle_bytes)
    loaded_at_s = property(lambda self: self.policy.loaded_at_s)
    last_reload = property(lambda self: self.policy.last_reload)
    last_good = property(lambda self: self.policy.last_good)
    policy_source = property(lambda self: self.policy.policy_source)
    strict = property(lambda self: self.policy.strict)

    @property
    def last_errors(self) -> list[str]:
        return self.policy.last_errors

    @last_errors.setter
    def last_errors(self, errors: list[str]) -> None:
        self.policy.last_errors = errors

    def watch(self) -> None:
        """Called by the server every WATCH_INTERVAL_S: policy file watch and durable-state flush."""
        self.watch_policy()
        if self.snapshots is not None:
            self.snapshots.flush(self.clock.now_s())

    def enable_durable_state(self, config_path: str | None = None, counters: bool = True) -> int:
        """Restore `<state_dir>/state` into this engine's store (which must track dirty keys)
        and keep it written from now on; with `config_path`, also keep the last bundle accepted
        from it (pyengine.state.last_good). Returns the entries restored. `counters` False (fleet
        mode: the shared store is where counters last) keeps only the overlay and last good."""
        restored, enabled = 0, True
        if counters:
            self.snapshots = Snapshots(self.settings.state_dir, self.store, self.metrics)
            restored = self.snapshots.restore(self.clock.now_s())
            enabled = self.snapshots.enabled  # False: a locked dir belongs to another engine
        if enabled:
            self.overlay.enable(self.settings.state_dir, self.clock.now_s())
            self.runtime.sync_pipeline()
        index_tripped(self.store.as_dict().items(), self.tripped)
        if config_path is not None and enabled:
            self.policy.keep_last_good(self.settings.state_dir, config_path)
        return restored

    def upkeep(self) -> None:
        """Called by the server about every second (pyengine.engine_reports)."""
        engine_reports.upkeep(self)

    def scrape(self) -> Reply:
        """GET /metrics: the Prometheus text exposition (public in decision-service mode, and admin)."""
        return engine_reports.scrape(self)

    def health(self) -> Reply:
        """The public /readyz (contract §2): status, version and hash, nothing more."""
        return engine_reports.health(self)

    def _guard_gauges(self) -> None:
        engine_reports.guard_gauges(self)

    def use_strict_backend(self, backend) -> None:
        """Fleet mode: rules with consistency=strict are decided by `backend` from now on
        (pyengine.fleet.strict.StrictStore); the bundle in force is recompiled for it."""
        counter = self.metrics.strict_decisions
        for path in ("store", "local"):
            counter.inc((path,), 0)  # both exist from the start, so rate() works
        self.policy.use_strict(Strict(backend, self.store, lambda path: counter.inc((path,))))

    def close(self) -> None:
        """Final flush at shutdown: decision log and a last durable-state snapshot."""
        self.decision_log.flush()
        if self.snapshots is not None:
            self.snapshots.close(self.clock.now_s())

    # -- messages ----------------------------------------------------------------------

    def handle(self, msg):
        t = type(msg)
        if t is Decide:
            return self.decide(msg)  # answers engine_error itself (all-or-nothing, the right surface)
        try:
            return engine_messages.handle_other(self, t, msg)
        except Exception:  # noqa: BLE001 - our bug: counted, logged, answered; the engine keeps serving
            where = _WHERE.get(t, "frame")
            self.errors.record(where)
            if t in (Usage, Health, Metrics, Admin):
                body = _json.encode({"status": 500, "title": "Internal Server Error", "reason": "engine_error"})
                return Reply(status=500, content_type="application/problem+json", body=body.decode())
            return ErrorReply(code="engine_error", message=f"engine error in {where}")

    def decide_with_decision(self, msg: Decide):
        """For tooling (`fairvisor test`, what-if, tests): (Verdict, the Decision behind it), or,
        when strict rules await the store, a coroutine giving that pair."""
        kept = Decided()
        verdict = self.decide_untraced(msg, kept)
        if verdict.__class__ is CoroutineType:
            return _paired_later(verdict, kept)
        return verdict, kept.decision

    def decide_untraced(self, msg: Decide, tracer=None):
        """The decision itself: what every request gets (debug sessions add a trace around it).
        `tracer` (pyengine.decision.trace) records the steps and is handed the final Decision."""
        if msg.generation != self.generation:
            return self.hello_reply  # the shim re-describes the request with the new header list
        d = None
        try:
            start = time.perf_counter()
            bundle = self.bundle
            if bundle is None:
                d = Decision(status=503, reason="no_policy_loaded")
                if tracer is not None:
                    tracer.decided(d)
                verdict = render(d, msg.surface, self._raw_format(msg), self._verdicts)
                self.metrics.decisions.inc(("reject", "no_policy_loaded", ""))
                return verdict
            view = view_from_decide(msg, bundle.header_index, self._provider_prefixes, bundle.header_joins,
                                    bundle.family, self._targets)
            fmt = request_format(self.llm_format, msg.uri, view.path) if msg.surface == SURFACE_INLINE else None
            if self.llm_proxy is not None:
                view.prompt_ratio = self.llm_proxy.estimator.prompt.get
            now_s = self.clock.now_s()
            if self.selftests.runs:  # empty but during `fairvisor selftest`
                hit = self.selftests.decide(bundle, view, now_s, msg.surface, fmt)
                if hit is not None:  # scratch state only: no metric, log, coverage or replay sample
                    d = hit[1]
                    if tracer is not None:
                        tracer.decided(d)
                    return hit[0]
            self.recent.add(now_s, msg, bundle.header_names)
            d = self.pipeline.decide(bundle, view, now_s, tracer)
            if d.__class__ is not Decision:  # a Pending: strict rules wait on the store (decision.strict)
                return self._resolve(d, msg, view, fmt, bundle, start, tracer)
            return self._finish(d, msg, view, fmt, bundle, now_s, start, tracer)
        except Exception:  # noqa: BLE001 - an exception is our bug, never an allow
            return self._engine_error(msg, d, tracer)

    async def _resolve(self, pending, msg: Decide, view, fmt, bundle, start: float, tracer):
        """The reply to a request with strict rules, once the store (or local state) decided."""
        d = None
        try:
            d = await pending.resolve()
            return self._finish(d, msg, view, fmt, bundle, pending.now_s, start, tracer)
        except Exception:  # noqa: BLE001 - an exception is our bug, never an allow
            return self._engine_error(msg, d, tracer)

    def _finish(self, d: Decision, msg: Decide, view, fmt, bundle, now_s: float, start: float, tracer):
        """Jitter, reservation, verdict, metrics and log of a decided request; raises on our bugs
        (the caller answers engine_error with `d`, whose charges it undoes)."""
        if tracer is not None:
            tracer.decided(d)  # before the reservation opens: its rules are the real ones again
        if d.retry_after_s > 1 and self.settings.retry_jitter:
            jitter.apply(d, view, bundle.client_ip)  # per-client Retry-After spread (pyengine.jitter)
        if d.reserved:
            r = self.reservations.open(d.reserved, now_s, view.llm, adapter_name(fmt, view.path))
            d.reservation_id = r.id
            self.metrics.tokens_reserved.inc((), r.tokens)
        verdict = render(d, msg.surface, fmt, self._verdicts)
        if d.reservation_id and self.llm_proxy is not None and msg.surface == SURFACE_INLINE:
            self.llm_proxy.attach(verdict, d.reservation_id, view)
        m = self.metrics
        if d.outcome is not None:
            m.last_outcome[(d.policy_id, d.rule)] = d.outcome  # fairvisor/edge's remaining gauges
        if d.status:
            m.decisions.inc(("reject", d.reason, d.policy_id or ""))
            self.decision_log.decision("reject", d, bundle, view, now_s)
        elif d.warning:
            action = d.action
            m.decisions.inc((action, d.warning, d.policy_id or ""))
            self.decision_log.decision(action, d, bundle, view, now_s)
            self._console_seen(d)
        else:
            m.decisions.inc(("allow", "", d.policy_id or ""))
            self._console_seen(d)
        m.duration.observe(time.perf_counter() - start)
        return verdict

    def _engine_error(self, msg: Decide, d: Decision | None, tracer=None) -> Verdict:
        """Reject the request whose decision raised: undo what an allow charged (the pipeline
        undid its own charges already), count, log; the engine goes on serving."""
        self.errors.record("decide")
        if d is not None and d.status == 0:
            if d.reservation_id:
                self.reservations.take(d.reservation_id)
            self.errors.undo(d.charged, self.clock.now_s())
        if tracer is not None:
            tracer.decided(ENGINE_ERROR)
        self.metrics.decisions.inc(("reject", "engine_error", ""))
        return render(ENGINE_ERROR, msg.surface, self._raw_format(msg), self._verdicts)

    def _raw_format(self, msg: Decide) -> str | None:
        """The request's format without a view (no policy, or the decision failed): from the raw
        target, so the rejection still has the shape the client's SDK expects."""
        if msg.surface != SURFACE_INLINE or self.llm_format is None:
            return None
        path = strip_provider_prefix(msg.uri.decode("utf-8", "replace").partition("?")[0])
        return request_format(self.llm_format, msg.uri, normalize_path(path))

async def _paired_later(pending, kept):
    """(Verdict, Decision) of a decision that awaited the store (Engine.decide_with_decision)."""
    verdict = await pending
    return verdict, kept.decision


_WHERE = {Settle: "settle", Usage: "usage", Health: "health", Metrics: "metrics", Hello: "hello", Admin: "admin"}


def build_engine(settings, clock=None) -> Engine:
    """An Engine with the configured policy (or the bundled default) loaded when valid."""
    if settings.state_url:
        # Fleet mode (contract §9): counters are journaled for the shared store, not snapshotted.
        from .fleet.node import FleetNode

        clock = clock or SystemClock()
        node = FleetNode(settings, clock)
        engine = Engine(settings, clock=clock, store=node.store)
        engine.fleet = node
        node.attach(engine)
        engine.enable_durable_state(settings.config_file, counters=False)
    else:
        # Dirty tracking costs one Python call per store write; it is what lets a snapshot write
        # only what changed each tick instead of the whole store.
        engine = Engine(settings, clock=clock, store=MemoryStore(track_dirty=True, max_keys=settings.max_state_keys))
        # The bundled default ships with the code: it has no last good version to fall back to.
        engine.enable_durable_state(settings.config_file)
    path = settings.config_file or DEFAULT_POLICY_PATH
    try:
        engine.load_file(path)
    except PolicyError as exc:
        for line in exc.errors:
            log.error("policy refused: %s", line)
        engine.start_from_last_good(exc.errors)
    return engine
