"""Open LLM reservations: what each allowed request reserved, until its actual usage settles it.

A reservation is created when an allowed request charged a rule that `reserves` (LLM tokens,
`llm_usd` budgets). Settlement refunds the unused part or charges the excess on every such
rule, exactly once. A reservation never settled (client vanished, gateway never reported)
expires after `ttl_s` and stays charged as reserved: over-counting is the safe side.
"""

import itertools
import os

import msgspec

from .rules import ConcurrencyRule, CostRule, LLMRule

DEFAULT_TTL_S = 900.0
# Open reservations held at most (~430 bytes each with one LLM rule, measured: ~0.4 GiB). Past
# it the oldest expire early, charged as reserved like any expiry: a decision service whose
# gateway never settles cannot grow the engine without bound, whatever its request rate.
DEFAULT_MAX_OPEN = 1_000_000


class Charge(msgspec.Struct, gc=False):
    """One reserving rule's part of a reservation: `amount` is tokens, micro-USD or a lease's end
    (s), as that rule charged it. Not tracked by the cycle collector (see Reservation)."""

    rule: object  # the CompiledRule that charged it (pyengine.decision.rules)
    key: str  # its state key
    amount: int | float

    def __iter__(self):  # rule, key, amount = charge
        return iter((self.rule, self.key, self.amount))


class Reservation(msgspec.Struct, gc=False):
    """An open reservation. It and its charges are invisible to the cycle collector: they hold no
    cycle (rules never point back at reservations), and a million open ones would otherwise be
    four million tracked objects, each full collection a pause of half a second (measured:
    520 ms) while every decision waits. `charges` is a tuple of Charge, which CPython untracks
    too at its first collection."""

    id: str
    at_s: float  # when it was reserved (epoch s): refunds apply only within that period
    charges: tuple  # (Charge, ...): tokens or micro-USD per reserving rule
    model: str | None
    prompt_estimate_tokens: int
    # Tokens reserved on the first LLM token rule (all LLM rules reserve the same estimate); 0
    # without one. Metrics and settlement replies report it.
    tokens: int = 0
    prompt_chars: int = 0  # characters the estimate was made from
    # The request's adapter (llm/providers.py ADAPTERS, from llm/formats.py adapter_name): its
    # answer is settled in that format. None: plain HTTP (settled without usage: the
    # reservation stands, or is refunded on error).
    llm_format: str | None = None


class Reservations:
    """Held in insertion order, which is time order (the engine clock never steps back) with one
    TTL: the due ones are always a prefix, so expiry costs O(expired), whatever the rate."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_open: int = DEFAULT_MAX_OPEN):
        self.ttl_s = ttl_s
        self.max_open = max_open
        self.evicted = 0  # reservations expired early by max_open, ever (a counter)
        self._open: dict[str, Reservation] = {}
        # A per-process random prefix: ids from before an engine restart never collide.
        self._prefix = os.urandom(4).hex()
        self._seq = itertools.count(1)

    def __len__(self) -> int:
        return len(self._open)

    def open(self, charges, at_s: float, llm_request, llm_format: str | None = None) -> Reservation:
        rid = f"{self._prefix}-{next(self._seq):x}"
        req = llm_request
        held = []
        tokens = 0
        for rule, key, amount in charges:
            if not tokens and isinstance(rule, LLMRule):
                tokens = amount
            held.append(Charge(rule, key, amount))
        r = self._open[rid] = Reservation(rid, at_s, tuple(held), req.model if req else None,
                                          req.prompt_tokens if req else 0, tokens,
                                          req.prompt_chars if req else 0, llm_format)
        return r

    def get(self, rid: str) -> Reservation | None:
        return self._open.get(rid)

    def take(self, rid: str) -> Reservation | None:
        """Remove and return an open reservation (settlement happens once)."""
        return self._open.pop(rid, None)

    def expire(self, now_s: float) -> int:
        """Drop every reservation past its TTL (returns how many), then the oldest beyond
        `max_open` (counted in `evicted`). Both stay charged as reserved."""
        cutoff = now_s - self.ttl_s
        due = []
        # One iterator over the prefix: popping the front and restarting would rescan the
        # dict's deleted slots each time (quadratic in a burst of expiries).
        for rid, r in self._open.items():
            if r.at_s > cutoff:
                break
            due.append(rid)
        excess = len(self._open) - len(due) - self.max_open
        if excess > 0:
            due.extend(itertools.islice(self._open, len(due), len(due) + excess))
            self.evicted += excess
        pop = self._open.pop
        for rid in due:
            pop(rid)
        return len(due) - max(excess, 0)


def completion_allowance(r: Reservation, llm_request) -> int:
    """Output tokens this request reserved: the least any reserving rule set aside for it.

    A stream cut there never spends more than was admitted, so concurrent streams of one
    tenant cannot overrun the budget by more than what their reservations already hold."""
    allowance = None
    for rule, _key, _amount in r.charges:
        if isinstance(rule, (LLMRule, CostRule)):
            c = rule.completion_tokens(llm_request)
        else:
            continue
        allowance = c if allowance is None else min(allowance, c)
    return allowance or 0


def settle(r: Reservation, prompt_tokens: int, completion_tokens: int, model: str | None, now_s: float,
           refund: bool = True, cached_input_tokens: int = 0, cache_write_tokens: int = 0) -> None:
    """Refund or charge the difference between reserved and actual on every reserving rule.
    `refund` False: charge any excess but refund nothing (usage unknown: the reservation stands).
    Token rules count every prompt token; money rules price the cached and cache-written ones
    (parts of `prompt_tokens`) at their own prices."""
    actual_tokens = prompt_tokens + completion_tokens
    for rule, key, amount in r.charges:
        if isinstance(rule, LLMRule):
            actual = actual_tokens
        elif isinstance(rule, CostRule):
            price = rule.price(model or r.model)
            if price is None:
                continue
            actual = rule.usd_micros(price, prompt_tokens, completion_tokens, cached_input_tokens,
                                     cache_write_tokens)
        elif isinstance(rule, ConcurrencyRule):
            rule.release(key, amount, now_s)  # the answer ended: the request is no longer in flight
            continue
        else:
            continue
        rule.settle(key, amount, actual if refund or actual > amount else amount, r.at_s, now_s)


def refund_all(r: Reservation, now_s: float) -> None:
    """The request never produced usage (upstream error): give everything back."""
    for rule, key, amount in r.charges:
        rule.undo(key, amount, r.at_s, now_s)
