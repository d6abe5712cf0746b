"""Compiled rules: each binds one policy rule to its limiter, its key extractors and its cost.

A rule's `apply` charges on allow and returns (Outcome, charged amount); `undo` is the exact
inverse, used when a later rule of the same request rejects (all-or-nothing, like
lua-resty-limit-traffic's uncommit). Amounts are in the limiter's unit: tokens or micro-units.
A rule that can be strict (pyengine.decision.strict) also has `claims`: what `apply` would
charge, without touching state: (the limiter's claims for the store, the amount, None), or
(None, 0, the refusing Outcome) when a per-request check refuses before any state is read.
"""

from ..algorithms.concurrency import InFlight
from ..algorithms.cost_based import CostBudget
from ..algorithms.outcome import Outcome
from ..algorithms.token_bucket import TokenBucket
from ..algorithms.token_bucket_llm import LLMTokenLimiter
from ..llm.request import llm_of
from .numbers import client_amount, client_tokens
from ..state import keys

MICROS = 1_000_000


_MISSING = object()


def key_value(view, limit_key: str, extractor):
    """A limit key's value for this request, extracted once however many rules use it."""
    cache = view.keys
    v = cache.get(limit_key, _MISSING)
    if v is _MISSING:
        v = cache[limit_key] = extractor(view)
    return v


def _reject(reason: str) -> Outcome:
    return Outcome(allowed=False, limit=0, window_s=0, remaining=0, reset_s=0, retry_after_s=0,
                   reason=reason, warning=None, delay_ms=0)


def _cost_reader(source: str, fixed: float, default: float):
    """A function view -> cost for `fixed`, `header:<name>` or `query:<name>`: a client number,
    clamped (pyengine.decision.numbers): unusable -> default, absurdly large -> above every capacity."""
    if source == "fixed":
        return lambda view: fixed
    kind, _, name = source.partition(":")
    if kind == "header":
        lname = name.lower()
        return lambda view: client_amount(view.header(lname), default)
    return lambda view: client_amount(view.query_param(name), default)


class CompiledRule:
    """Common part: name, key extraction, `match`, the state-key prefix and on_missing_key."""

    __slots__ = ("name", "policy_id", "key_fns", "match", "prefix", "reserves", "missing_key",
                 "reject_missing", "state_key", "strict")

    def __init__(self, name, policy_id, key_fns, match, prefix, on_missing_key="skip"):
        self.name = name
        self.policy_id = policy_id
        self.key_fns = key_fns  # tuple of (limit key, extractor)
        self.match = match  # tuple of (limit key, extractor, required value)
        self.prefix = prefix  # keys.rule_prefix(policy, rule, shadow)
        self.reserves = False  # True when the charge must be settled after the response
        # A request without a key value: skipped (None), counted on the rule's one shared key,
        # or refused with missing_limit_key (state_key returns None, reject_missing says why).
        self.missing_key = keys.absent(prefix) if on_missing_key == "shared" else None
        self.reject_missing = on_missing_key == "reject"
        # state_key(view) -> str | None: this request's counter key (None: no key, skipped).
        self.state_key = _key_function(key_fns, prefix, self.missing_key)
        # consistency "strict" in fleet mode: the StrictRule that decides it in the store
        # (pyengine.decision.strict); None decides it here, from local counters.
        self.strict = None

    def matches(self, view) -> bool:
        for lk, fn, want in self.match:
            if key_value(view, lk, fn) != want:
                return False
        return True



def _key_function(key_fns: tuple, prefix: str, missing_key):
    """view -> the rule's state key, or `missing_key` when a limit key has no value. Built once
    per rule; the one-key form (most rules) is one dict lookup and one keys.one_value call."""
    if len(key_fns) == 1:
        [(lk, fn)] = key_fns
        one_value = keys.one_value  # the key's format has one owner, pyengine.state.keys

        def one_key(view):
            cache = view.keys
            v = cache.get(lk, _MISSING)
            if v is _MISSING:
                v = cache[lk] = fn(view)
            return missing_key if v is None else one_value(prefix, v)
        return one_key

    def values_key(view):
        parts = []
        for lk, fn in key_fns:
            v = key_value(view, lk, fn)
            if v is None:
                return missing_key
            parts.append(v)
        return keys.values_key(prefix, parts)
    return values_key


class TokenBucketRule(CompiledRule):
    __slots__ = ("bucket", "cost", "fixed_cost")

    def __init__(self, name, policy_id, key_fns, match, prefix, store, cfg, on_missing_key="skip"):
        super().__init__(name, policy_id, key_fns, match, prefix, on_missing_key)
        self.bucket = TokenBucket(store, cfg.tokens_per_second, cfg.burst)
        self.cost = _cost_reader(cfg.cost_source, cfg.fixed_cost, cfg.default_cost)
        self.fixed_cost = cfg.fixed_cost if cfg.cost_source == "fixed" else None

    def apply(self, view, key, now_s):
        cost = self.fixed_cost
        if cost is None:
            cost = self.cost(view)
        return self.bucket.acquire(key, cost, now_s), cost

    def claims(self, view, key, now_s):
        cost = self.fixed_cost
        if cost is None:
            cost = self.cost(view)
        return (self.bucket.claim(key, cost),), cost, None

    def undo(self, key, amount, at_s, now_s):
        self.bucket.refund(key, amount, now_s)


class LLMRule(CompiledRule):
    """token_bucket_llm: reserve prompt estimate + requested completion on TPM/TPD."""

    __slots__ = ("limiter", "cfg", "burst_tokens")

    def __init__(self, name, policy_id, key_fns, match, prefix, store, cfg, on_missing_key="skip"):
        super().__init__(name, policy_id, key_fns, match, prefix, on_missing_key)
        self.cfg = cfg
        self.burst_tokens = cfg.burst_tokens or cfg.tokens_per_minute
        self.limiter = LLMTokenLimiter(store, cfg.tokens_per_minute, self.burst_tokens, cfg.tokens_per_day)
        self.reserves = True

    def completion_tokens(self, req) -> int:
        cfg = self.cfg
        want = client_tokens(req.max_output_tokens) or cfg.default_max_completion
        if cfg.max_completion_tokens is not None and want > cfg.max_completion_tokens:
            want = cfg.max_completion_tokens
        return want * req.choices  # the cap is per choice; n choices are n completions

    def _tokens(self, view) -> int | str:
        """The reservation in tokens, or the reason a per-request cap refuses it."""
        req = llm_of(view)
        cfg = self.cfg
        completion = self.completion_tokens(req)
        reason = LLMTokenLimiter.check_request(req.prompt_tokens, completion, cfg.max_prompt_tokens, cfg.max_tokens_per_request)
        return req.prompt_tokens + completion if reason is None else reason

    def apply(self, view, key, now_s):
        tokens = self._tokens(view)
        if tokens.__class__ is str:
            return _reject(tokens), 0
        return self.limiter.reserve(key, tokens, now_s), tokens

    def claims(self, view, key, now_s):
        tokens = self._tokens(view)
        if tokens.__class__ is str:
            return None, 0, _reject(tokens)
        return self.limiter.claims(key, tokens, now_s), tokens, None

    def undo(self, key, amount, at_s, now_s):
        self.limiter.refund(key, amount, at_s, now_s)

    def settle(self, key, reserved, actual_tokens, at_s, now_s):
        self.limiter.settle(key, reserved, actual_tokens, at_s, now_s)


class CostRule(CompiledRule):
    """cost_based: a money or unit budget per UTC-aligned period, with staged actions."""

    __slots__ = ("budget", "cost", "llm_usd", "pricing", "default_completion")

    def __init__(self, name, policy_id, key_fns, match, prefix, store, cfg, pricing, on_missing_key="skip"):
        super().__init__(name, policy_id, key_fns, match, prefix, on_missing_key)
        self.llm_usd = cfg.cost_key == "llm_usd"
        stages = [(s.threshold_percent, s.action, s.delay_ms or 0) for s in cfg.staged_actions]
        # USD budgets show RateLimit numbers in cents; unit budgets in their own unit.
        per_unit = 10_000 if self.llm_usd else MICROS
        self.budget = CostBudget(store, int(round(cfg.budget * MICROS)), cfg.period, stages, per_unit)
        self.pricing = pricing
        self.reserves = self.llm_usd
        self.default_completion = 1000
        if not self.llm_usd:
            self.cost = _cost_reader(cfg.cost_key, cfg.fixed_cost, cfg.default_cost)

    def price(self, model: str | None):
        """The model's Price (pyengine/llm/pricing.py), or None: no price for it."""
        return self.pricing.price(model)

    def usd_micros(self, price, prompt_tokens: int, completion_tokens: int, cached_input_tokens: int = 0,
                   cache_write_tokens: int = 0) -> int:
        # Counts are clamped (client numbers) and prices bounded (POLICY_MAX): exact integers.
        return price.usd_micros(client_tokens(prompt_tokens), client_tokens(completion_tokens),
                                client_tokens(cached_input_tokens), client_tokens(cache_write_tokens))

    def completion_tokens(self, req) -> int:
        return (client_tokens(req.max_output_tokens) or self.default_completion) * req.choices

    def _micros(self, view) -> int | None:
        """This request's cost in micro-units; None: its model has no price."""
        if not self.llm_usd:
            return int(round(self.cost(view) * MICROS))
        req = llm_of(view)
        price = self.price(req.model)
        if price is None:
            return None
        return self.usd_micros(price, req.prompt_tokens, self.completion_tokens(req))

    def apply(self, view, key, now_s):
        micros = self._micros(view)
        if micros is None:
            return _reject("unknown_model_price"), 0
        return self.budget.acquire(key, micros, now_s), micros

    def claims(self, view, key, now_s):
        micros = self._micros(view)
        if micros is None:
            return None, 0, _reject("unknown_model_price")
        return (self.budget.claim(key, micros, now_s),), micros, None

    def undo(self, key, amount, at_s, now_s):
        self.budget.refund(key, amount, at_s, now_s)

    def settle(self, key, reserved_micros, actual_micros, at_s, now_s):
        if actual_micros < reserved_micros:
            self.budget.refund(key, reserved_micros - actual_micros, at_s, now_s)
        elif actual_micros > reserved_micros:
            self.budget.charge(key, actual_micros - reserved_micros, now_s)


class ConcurrencyRule(CompiledRule):
    """concurrency: a lease per request in flight, released when the answer ends (Settle, or
    POST /v1/usage in the decision service), by undo on a later rejection, or at lease_s."""

    __slots__ = ("in_flight",)

    def __init__(self, name, policy_id, key_fns, match, prefix, store, cfg, on_missing_key="skip"):
        super().__init__(name, policy_id, key_fns, match, prefix, on_missing_key)
        self.in_flight = InFlight(store, cfg.max_in_flight, cfg.lease_s)
        self.reserves = True  # held until the answer ends: the reservation carries the lease

    def apply(self, view, key, now_s):
        return self.in_flight.acquire(key, now_s)  # the amount is the lease's end time

    def undo(self, key, amount, at_s, now_s):
        self.in_flight.release(key, amount, now_s)

    def release(self, key, lease_end_s, now_s):
        self.in_flight.release(key, lease_end_s, now_s)
