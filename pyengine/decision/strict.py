"""Strict rules (contract §9): claimed by the plan, decided in the store in one atomic call, replayed here.

A strict rule's plan step charges nothing: it records its claims for the store (`rule.claims`:
what its acquire would charge; the policy's breaker meters that amount). Once every local rule
of the request has allowed it, the plan hands its claims to `Strict.pending`, and the engine
awaits `Pending.resolve`: every claim goes to the store in one call (`backend.acquire`,
pyengine.fleet.strict), which checks them all, commits all or none, and answers the values it
found. The rule's own limiter then replays its acquire on those values in a scratch store
(`StrictRule.twin`): that gives the Outcome (headers, Retry-After, warnings) and the value the
store now holds, which is mirrored into the local store. So the header math has one implementation, and local counters stay current for when
the store is away.

Store unreachable or slower than its timeout (`backend.acquire` raises StoreError): the claims
are applied to local counters instead, all or nothing, and counted as `local`. Never an allow
because of the store. Shadow steps of a strict rule always count locally (their own state).
"""

from ..errors import StoreError
from .plan import SEVERITY, allowed, rejected, undo

# The algorithms whose acquire strict.lua implements; `consistency: strict` elsewhere is refused.
STRICT_ALGORITHMS = ("token_bucket", "token_bucket_llm", "cost_based")


class _Scratch(dict):
    """The replay's store: a dict with the Store methods a limiter binds (pyengine.state.store)."""

    put = dict.__setitem__

    def delete(self, key: str) -> None:
        self.pop(key, None)


class StrictRule:
    """A strict rule's replay: the same compiled rule over a scratch store (`twin`)."""

    __slots__ = ("twin", "scratch")

    def __init__(self, twin, scratch):
        self.twin = twin
        self.scratch = scratch

    def replay(self, view, key: str, ops, priors, now_s: float):
        """(Outcome, amount, [(state key, value after)]): the rule's acquire on the store's values."""
        scratch = self.scratch
        scratch.clear()
        for op, value in zip(ops, priors):
            if value is not None:
                scratch[op[0]] = value
        outcome, amount = self.twin.apply(view, key, now_s)
        return outcome, amount, [(op[0], scratch.get(op[0])) for op in ops]


class Strict:
    """The bundle's strict path: the store (`backend`), the local store, and the counts.

    `backend.acquire(ops, now_s)` is awaitable and answers (index of the rejecting op or None,
    the value found per op, None when absent or not read); it raises StoreError when the store
    cannot answer in time. `count(path)` counts one strict decision, path "store" or "local".
    """

    def __init__(self, backend, store, count):
        self.backend = backend
        self.store = store
        # FleetStore.mirror: a value learned from the store is not a local change to push back.
        self.mirror = store.mirror
        self.count = count

    @staticmethod
    def twin(make):
        """A StrictRule whose twin is `make(scratch store)`, the same rule over scratch state."""
        scratch = _Scratch()
        return StrictRule(make(scratch), scratch)

    def pending(self, claims, charged, shadow_charged, best, warning, delay_ms, view, now_s):
        return Pending(self, claims, charged, shadow_charged, best, warning, delay_ms, view, now_s)


class Pending:
    """A request whose strict rules wait on the store; what its plan decided so far."""

    __slots__ = ("strict", "claims", "charged", "shadow_charged", "best", "warning", "delay_ms", "view", "now_s")

    def __init__(self, strict, claims, charged, shadow_charged, best, warning, delay_ms, view, now_s):
        self.strict = strict
        self.claims = claims  # [(rule, state key, store claims, amount)] in plan order
        self.charged = charged  # the local rules' charges: undone if a strict rule rejects
        self.shadow_charged = shadow_charged
        self.best = best  # (ratio, rule, outcome) of the most restrictive allowing rule so far
        self.warning = warning
        self.delay_ms = delay_ms
        self.view = view
        self.now_s = now_s

    async def resolve(self):
        """The request's Decision, once the store (or, failing it, local state) has decided.
        Raises on our own bugs, with the local rules' charges undone (the engine answers
        engine_error); the store's charge, if it committed, stays: towards refusing."""
        try:
            return await self._resolve()
        except BaseException:
            undo(self.charged, self.now_s, self.now_s)
            undo(self.shadow_charged, self.now_s, self.now_s)
            raise

    async def _resolve(self):
        view, now_s = self.view, self.now_s
        ops, spans = [], []
        for rule, key, claim_ops, _ in self.claims:
            spans.append((rule, key, len(ops), len(ops) + len(claim_ops)))
            ops.extend(claim_ops)
        strict = self.strict
        try:
            rejected_at, priors = await strict.backend.acquire(ops, now_s)
        except StoreError:
            strict.count("local")
            return self._locally()
        strict.count("store")
        mirror = strict.mirror
        if rejected_at is not None:  # nothing was written: the refusing claim's headers, from its values
            for rule, key, start, end in spans:
                if start <= rejected_at < end:
                    outcome, _, _ = rule.strict.replay(view, key, ops[start:end], priors[start:end], now_s)
                    for op, value in zip(ops[start:end], priors[start:end]):
                        if value is not None:
                            mirror(op[0], value)
                    if outcome.allowed:
                        raise RuntimeError("strict replay allowed what the store refused")
                    return self._reject(outcome, rule, key)
            raise RuntimeError("strict store refused an op beyond the request's claims")
        found = []
        for rule, key, start, end in spans:
            outcome, amount, after = rule.strict.replay(view, key, ops[start:end], priors[start:end], now_s)
            if not outcome.allowed:
                raise RuntimeError("strict replay refused what the store committed")
            for k, value in after:
                if value is not None:
                    mirror(k, value)
            found.append((rule, key, outcome, amount))
        return self._allow(found)

    def _locally(self):
        """The store is away: the same claims on local counters, all or nothing."""
        view, now_s = self.view, self.now_s
        found = []
        try:
            for rule, key, _, _ in self.claims:
                outcome, amount = rule.apply(view, key, now_s)
                if not outcome.allowed:
                    self._undo(found)
                    return self._reject(outcome, rule, key)
                found.append((rule, key, outcome, amount))
        except BaseException:
            self._undo(found)  # all-or-nothing holds for our own bugs too (the engine undoes `charged`)
            raise
        return self._allow(found)

    def _undo(self, found) -> None:
        for rule, key, _, amount in reversed(found):
            rule.undo(key, amount, self.now_s, self.now_s)

    def _reject(self, outcome, rule, key):
        undo(self.charged, self.now_s, self.now_s)
        undo(self.shadow_charged, self.now_s, self.now_s)
        return rejected(outcome, rule, key)

    def _allow(self, found):
        charged, best, warning, delay_ms = self.charged, self.best, self.warning, self.delay_ms
        for rule, key, outcome, amount in found:
            charged.append((rule, key, amount))
            limit = outcome.limit
            if limit:
                ratio = outcome.remaining / limit
                if best is None or ratio < best[0]:
                    best = (ratio, rule, outcome)
            if outcome.warning is not None and SEVERITY[outcome.warning] > SEVERITY[warning]:
                warning = outcome.warning
            if outcome.delay_ms > delay_ms:
                delay_ms = outcome.delay_ms
        return allowed(charged, best, warning, delay_ms)
