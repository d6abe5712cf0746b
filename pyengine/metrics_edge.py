"""fairvisor/edge's metric names, exported beside ours so its dashboards and alerts keep working.

Each is derived when /metrics is scraped, from what the engine already counts, except the
remaining gauges, which Engine.decide feeds with one dict store per limited decision
(`last_outcome`), and the unused-reservation counter, counted at settlement. Labels are bounded: policy ids, rule names, fixed words; never a tenant's key, and not
fairvisor/edge's `route` (the request path is unbounded). The mapping table is in
docs/observability.md.
"""

from . import __version__
from .metrics import Counter, Gauge, _labels, _num
from .decision.rules import LLMRule


class _Derived(Gauge):
    """A gauge or counter whose samples come from `fn() -> [(label values, value)]` at render time."""

    def __init__(self, name: str, help_text: str, labelnames: tuple, fn, kind: str = "gauge"):
        super().__init__(name, help_text, labelnames)
        self.fn, self.kind = fn, kind

    def lines(self):
        for labels, v in self.fn():
            yield f"{self.name}{_labels(self.labelnames, labels)} {_num(v)}"


def register(engine) -> None:
    """Add the fairvisor/edge names to `engine.metrics` (called once by the Engine)."""
    m = engine.metrics
    r = m.registry
    # (policy id, rule name) -> the Outcome of the last decision whose RateLimit headers that rule
    # gave (Engine.decide); cleared on reload. Bounded by the rules in force.
    m.last_outcome = {}
    m.reservation_unused = r.add(Counter("fairvisor_token_reservation_unused_total",
                                         "Reserved LLM tokens given back at settlement (reserved minus actual)."))
    m.reservation_unused.inc((), 0)

    def remaining():
        return [(k, o.remaining) for k, o in m.last_outcome.items()]

    def tokens_remaining():
        b = engine.bundle
        llm = {(p.id, rule.name) for p in b.policies for rule in p.rules + ((p.fallback,) if p.fallback else ())
               if isinstance(rule, LLMRule)} if b is not None else set()
        return [((pid, name, "tpm" if o.window_s == 60 else "tpd"), o.remaining)
                for (pid, name), o in m.last_outcome.items() if (pid, name) in llm]

    def consumed():
        settled = sum(m.tokens_settled.values.values())
        return [(("reserved",), m.tokens_reserved.values.get((), 0)), (("actual",), settled)]

    def accuracy():
        h = m.estimate_error  # observations of estimated / actual prompt tokens
        return [((), h.count / h.sum)] if h.count and h.sum else []

    def shadow_active():
        b = engine.bundle
        on = b is not None and (any(p.shadow for p in b.policies) or b.global_shadow_active(engine.clock.now_s()))
        return [((), 1 if on else 0)]

    def flag(active):
        def sample():
            b = engine.bundle
            return [((), 1 if b is not None and active(b, engine.clock.now_s()) else 0)]
        return sample

    def config_info():
        b = engine.bundle
        return [((str(b.version), b.hash), 1)] if b is not None else []

    r.add(_Derived("fairvisor_ratelimit_remaining",
                   "Units left on the rule the last limited decision reported (its RateLimit-Remaining).",
                   ("policy", "rule"), remaining))
    r.add(_Derived("fairvisor_tokens_remaining",
                   "Tokens left on an LLM rule at its last decision; window: the tighter of tpm and tpd.",
                   ("policy", "rule", "window"), tokens_remaining))
    r.add(_Derived("fairvisor_tokens_consumed_total", "LLM tokens: reserved before requests, actual once settled.",
                   ("type",), consumed, kind="counter"))
    r.add(_Derived("fairvisor_token_estimation_accuracy_ratio",
                   "Actual / estimated prompt tokens (reciprocal mean of fairvisor_token_estimate_error_ratio).",
                   (), accuracy))
    r.add(_Derived("fairvisor_shadow_mode_active", "1 when any policy in force runs in shadow mode (or global shadow).",
                   (), shadow_active))
    r.add(_Derived("fairvisor_global_shadow_active", "1 while the bundle's global_shadow is enabled and unexpired.",
                   (), flag(lambda b, now_s: b.global_shadow_active(now_s))))
    r.add(_Derived("fairvisor_kill_switch_override_active",
                   "1 while the bundle's kill_switch_override is enabled and unexpired.",
                   (), flag(lambda b, now_s: b.kill_switches_overridden(now_s))))
    r.add(_Derived("fairvisor_config_info", "The policy bundle in force (same as fairvisor_policy_info).",
                   ("version", "hash"), config_info))
    r.add(_Derived("fairvisor_build_info", "This build.", ("version",), lambda: [((__version__,), 1)]))
