"""Tracing one decision: what each step of the real plan did, recorded only when a tracer is attached.

The plan's run loop is the only rule loop, traced or not. With a Trace, Pipeline.decide runs a
copy of the route's plan whose rules, guards and kill switches are wrapped in recording proxies
(`_Step`, `_Switch`) and whose sink records what it is told; the loop itself is unchanged, so the
hot path pays one `is None` test per decision and the trace is the decision, not a re-walk of
it. The engine hands the final Decision to `Trace.decided` (also for no policy, self-tests and
engine errors); pyengine.explain renders the record.
"""

from .rules import key_value

# Event kinds, per traced object (rule, fallback, guards or kill switch), in the order they ran.
NO_MATCH, MISSING, KEY, OUTCOME, CLAIM, GUARD, SWITCH = range(7)


class Decided:
    """A tracer that keeps only the final Decision (Engine.decide_with_decision): no step is traced."""

    __slots__ = ("decision",)
    steps = False

    def __init__(self):
        self.decision = None

    def decided(self, d) -> None:
        self.decision = d


class Trace(Decided):
    """The record of one decision, filled by the pipeline, the plan's proxies and the engine."""

    __slots__ = ("view", "now_s", "ambiguous", "global_shadow", "policies", "overridden",
                 "events", "sink_events", "runtime_hit")
    steps = True

    def __init__(self):
        super().__init__()
        self.view = None  # the engine's RequestView of the request (None: no policy loaded)
        self.now_s = 0.0
        self.ambiguous: list = []  # (header name, refused) of repeated single-value headers
        self.global_shadow = False
        self.policies: tuple = ()  # the plan's matching policies, in bundle order
        self.overridden = False  # kill_switch_override active: no switch was checked
        self.events: dict = {}  # id(traced object) -> [(kind, data)]
        self.sink_events: list = []  # (sink method name, args)
        self.runtime_hit = None  # the admin-API kill switch that refused, if any

    def note(self, obj, kind: int, data) -> None:
        self.events.setdefault(id(obj), []).append((kind, data))

    def of(self, obj) -> list:
        return self.events.get(id(obj), [])

    def decided(self, d) -> None:
        """The final Decision; its charge lists get the real rules back (no proxy outlives the trace)."""
        for name in ("charged", "reserved"):
            got = getattr(d, name)
            if got:
                setattr(d, name, [(_real(r), key, amount) for r, key, amount in got])
        self.decision = d


def _real(obj):
    return obj._obj if type(obj) in (_Step, _Switch) else obj


class _Proxy:
    """Stands in for a rule, guards or kill switch: every attribute is the real object's, a few
    calls are recorded. isinstance and `__class__ is` checks see the real class."""

    __slots__ = ("_obj", "_trace")

    def __init__(self, obj, trace: Trace):
        self._obj = obj
        self._trace = trace

    @property
    def __class__(self):
        return self._obj.__class__

    def __getattr__(self, name):
        return getattr(self._obj, name)


class _Step(_Proxy):
    __slots__ = ()

    def matches(self, view) -> bool:
        ok = self._obj.matches(view)
        if not ok:
            self._trace.note(self._obj, NO_MATCH, match_miss(self._obj, view))
        return ok

    def state_key(self, view):
        key = self._obj.state_key(view)
        if key is None or key == self._obj.missing_key:
            self._trace.note(self._obj, MISSING, missing_key(self._obj, view))
        if key is not None:
            self._trace.note(self._obj, KEY, key)
        return key

    def apply(self, view, key, now_s):
        outcome, amount = self._obj.apply(view, key, now_s)
        self._trace.note(self._obj, OUTCOME, (outcome, amount))
        return outcome, amount

    def claims(self, view, key, now_s):
        got = self._obj.claims(view, key, now_s)
        self._trace.note(self._obj, CLAIM, got)
        return got

    def check(self, view, reshadow, charges, first, now_s):
        hit = self._obj.check(view, reshadow, charges, first, now_s)
        self._trace.note(self._obj, GUARD, hit)
        return hit


class _Switch(_Proxy):
    __slots__ = ()

    def hits(self, view, now_s) -> bool:
        hit = self._obj.hits(view, now_s)
        self._trace.note(self._obj, SWITCH, hit)
        return hit


class _Runtime(_Proxy):
    """The admin API's kill switches (pyengine.overlay.switches.SwitchIndex), recording a hit."""

    __slots__ = ()

    def match(self, view, now_s):
        ks = self._obj.match(view, now_s)
        self._trace.runtime_hit = ks
        return ks


class _Sink(_Proxy):
    """The engine's sink, forwarding every report after recording it."""

    __slots__ = ()

    def __getattr__(self, name):
        real = getattr(self._obj, name)
        trace = self._trace

        def report(*args):
            trace.sink_events.append((name, args))
            return real(*args)
        return report


def traced_steps(steps: tuple, trace: Trace) -> tuple:
    return tuple((kind, _Step(rule, trace), *rest) for kind, rule, *rest in steps)


def traced_switches(switches: tuple, trace: Trace) -> tuple:
    return tuple(_Switch(ks, trace) for ks in switches)


def traced_runtime(runtime, trace: Trace):
    return None if runtime is None else _Runtime(runtime, trace)


def traced_sink(sink, trace: Trace):
    return _Sink(sink, trace)


def match_miss(rule, view) -> str:
    """Which of the rule's `match` conditions failed, and on what value."""
    for lk, fn, want in rule.match:
        got = key_value(view, lk, fn)
        if got != want:
            shown = "missing" if got is None else repr(got)
            return f"match: {lk} is {shown}, the rule wants {want!r}"
    return "match: does not hold"


def missing_key(rule, view) -> str:
    """The first of the rule's limit keys without a value in this request."""
    for lk, fn in rule.key_fns:
        if key_value(view, lk, fn) is None:
            return lk
    return "?"
