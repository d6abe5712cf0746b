"""POST /v1/usage: a gateway that saw the response reports actual LLM usage for settlement."""

import msgspec

from .decision.numbers import client_tokens
from .decision.reservations import Reservations, settle
from .state import keys


class UsageReport(msgspec.Struct, forbid_unknown_fields=True):
    prompt_tokens: int
    completion_tokens: int
    reservation_id: str | None = None  # from the X-Fairvisor-Reservation header of the allow
    key: str | None = None  # or: a limit-key value (e.g. the org id) to charge without a reservation
    model: str | None = None  # prices `llm_usd` budgets; defaults to the reserved request's model
    # Of prompt_tokens: read from / written to the provider's prompt cache, priced at the model's
    # cached_input_usd_per_mtok / cache_write_usd_per_mtok.
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


_decoder = msgspec.json.Decoder(UsageReport)
_json = msgspec.json.Encoder()


def _problem(status: int, detail: str) -> tuple[int, str]:
    return status, _json.encode({"status": status, "title": "Bad usage report", "detail": detail}).decode()


def _count(metrics, report: UsageReport) -> None:
    metrics.tokens_settled.inc(("prompt",), report.prompt_tokens)
    metrics.tokens_settled.inc(("completion",), report.completion_tokens)


def handle_usage(body: bytes, reservations: Reservations, bundle, now_s: float, metrics) -> tuple[int, str]:
    """Returns (HTTP status, JSON body). Never raises on client input."""
    try:
        report = _decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return _problem(400, str(exc))
    if min(report.prompt_tokens, report.completion_tokens, report.cached_input_tokens, report.cache_write_tokens) < 0:
        return _problem(400, "token counts must be >= 0")
    # Client numbers, clamped before any arithmetic (pyengine.decision.numbers).
    report.prompt_tokens = client_tokens(report.prompt_tokens)
    report.completion_tokens = client_tokens(report.completion_tokens)
    report.cached_input_tokens = client_tokens(report.cached_input_tokens)
    report.cache_write_tokens = client_tokens(report.cache_write_tokens)
    if (report.reservation_id is None) == (report.key is None):
        return _problem(400, "give exactly one of reservation_id and key")
    if report.reservation_id is not None:
        r = reservations.take(report.reservation_id)
        if r is None:
            return _problem(404, "unknown or already settled reservation")
        _count(metrics, report)
        if r.prompt_estimate_tokens and report.prompt_tokens:
            metrics.estimate_error.observe(r.prompt_estimate_tokens / report.prompt_tokens)
        settle(r, report.prompt_tokens, report.completion_tokens, report.model, now_s, True,
               report.cached_input_tokens, report.cache_write_tokens)
        metrics.reservation_unused.inc((), max(0, r.tokens - report.prompt_tokens - report.completion_tokens))
        body = {"settled": True, "reservation_id": r.id, "reserved_tokens": r.tokens,
                "actual_tokens": report.prompt_tokens + report.completion_tokens}
        return 200, _json.encode(body).decode()
    if bundle is None:
        return _problem(503, "no policy loaded")
    _count(metrics, report)
    charged = charge_key(bundle, report.key, report.prompt_tokens, report.completion_tokens, report.model, now_s,
                         report.cached_input_tokens, report.cache_write_tokens)
    return 200, _json.encode({"settled": True, "key": report.key, "rules_charged": charged}).decode()


def charge_key(bundle, key: str, prompt_tokens: int, completion_tokens: int, model, now_s: float,
               cached_input_tokens: int = 0, cache_write_tokens: int = 0) -> int:
    """Charge usage that had no reservation to every single-key reserving rule, for this key."""
    from .decision.rules import CostRule, LLMRule

    n = 0
    for policy in bundle.policies:
        if policy.shadow:
            continue
        for rule in policy.all_rules:
            if not rule.reserves or len(rule.key_fns) != 1:
                continue
            state_key = keys.one_value(rule.prefix, key)
            if isinstance(rule, LLMRule):
                rule.settle(state_key, 0, prompt_tokens + completion_tokens, now_s, now_s)
                n += 1
            elif isinstance(rule, CostRule):
                price = rule.price(model)
                if price is not None:
                    micros = rule.usd_micros(price, prompt_tokens, completion_tokens, cached_input_tokens,
                                             cache_write_tokens)
                    rule.settle(state_key, 0, micros, now_s, now_s)
                    n += 1
    return n
