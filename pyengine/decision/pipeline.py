"""The decision path: kill switches, then every matching policy's rules, all-or-nothing.

Order (contract §1): a request with a repeated header that must have one value is refused
first (400 ambiguous_header, pyengine.decision.header_lines), before any key is read; then kill
switches; then, per matching policy in bundle order, its rules whose `match` holds (or its
fallback). The first enforcing rule that rejects ends the request;
every charge made before it is undone, so a rejected request is never charged; so is every
charge made before an exception (the engine then answers engine_error, pyengine.engine_errors).
Shadow policies (and every policy under an active global shadow) count in their own state and
never change the Decision; their would-be rejections go to metrics and the decision log.
A rule without a key value for this request is skipped, counted on its shared key, or refuses
the request (missing_limit_key), as its on_missing_key says.

Everything after the header check is the route's compiled plan (pyengine.decision.plan): one loop.
With a tracer (pyengine.decision.trace, for `fairvisor explain` and debug sessions) the same loop
runs over recording proxies of the plan's steps; without one the path pays one `is None` test.
"""

from .trace import traced_runtime, traced_sink
from .verdict import Decision


def _ambiguous(bundle, view, now_s: float, sink, runtime, trace=None) -> Decision | None:
    """The refusal of a request that repeated a header read as one value, or None when only
    shadow state reads those headers (the would-be refusal is counted; they read as absent).
    Kill switches, the bundle's and the runtime ones (`runtime`), are never in shadow."""
    global_shadow = bundle.global_shadow is not None and bundle.global_shadow_active(now_s)
    switched = runtime.headers() if runtime is not None and runtime.by_key else ()
    for name in view.ambiguous:
        if name in bundle.single_always or (name in bundle.single_enforced and not global_shadow) \
                or name in switched or name not in bundle.header_index:
            if trace is not None:
                trace.ambiguous.append((name, True))
            # The header's name (from the policy or the engine, never a client value) is for operators.
            return Decision(status=400, reason="ambiguous_header", detail=name)
    if trace is not None:
        trace.ambiguous.extend((name, False) for name in view.ambiguous)
    sink.would_reject("", "", "ambiguous_header", "", view)
    return None


class Pipeline:
    """Stateless apart from its metrics sink; all counters live in the store behind the rules."""

    def __init__(self, sink, runtime_switches=None):
        # .skipped(policy, rule) .would_reject(policy, rule, reason, key, view)
        # .unmatched(view) .unlimited(view): allowed with no policy / no rule limiting it
        self.sink = sink
        # Kill switches added through the admin API (pyengine.overlay.switches.SwitchIndex);
        # None while there are none, so the common path tests one attribute (pyengine.runtime_overlay).
        self.runtime_switches = runtime_switches

    def decide(self, bundle, view, now_s: float, tracer=None) -> Decision:
        """The Decision (or a Pending, for strict rules); `tracer` (a decision.trace.Trace, or
        None on the hot path) records every step."""
        if tracer is not None:
            return self._traced(bundle, view, now_s, tracer)
        if view.ambiguous is not None:
            refusal = _ambiguous(bundle, view, now_s, self.sink, self.runtime_switches)
            if refusal is not None:
                return refusal
        shadow = bundle.global_shadow is not None and bundle.global_shadow_active(now_s)
        plan = bundle.routes.plan(view.method, view.host, view.path, shadow)
        return plan.run(bundle, view, now_s, self.sink, self.runtime_switches)

    def _traced(self, bundle, view, now_s: float, trace) -> Decision:
        """decide() with every step recorded into `trace` (decision.trace.Trace)."""
        if not trace.steps:  # a tracer that keeps only the final Decision
            return self.decide(bundle, view, now_s)
        trace.view, trace.now_s = view, now_s
        sink = traced_sink(self.sink, trace)
        if view.ambiguous is not None:
            refusal = _ambiguous(bundle, view, now_s, sink, self.runtime_switches, trace)
            if refusal is not None:
                return refusal
        shadow = trace.global_shadow = bundle.global_shadow is not None and bundle.global_shadow_active(now_s)
        plan = bundle.routes.plan(view.method, view.host, view.path, shadow)
        trace.policies = plan.policies
        trace.overridden = bundle.kill_switches_overridden(now_s)
        return plan.traced(trace).run(bundle, view, now_s, sink, traced_runtime(self.runtime_switches, trace))
