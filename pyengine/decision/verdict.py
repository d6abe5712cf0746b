"""Turns a Decision into the Verdict the shim applies: contract §4 headers and reject bodies."""

import msgspec

from ..algorithms.outcome import Outcome
from ..protocol.messages import SURFACE_DESCRIBED, Verdict

PROBLEM_TYPE = "https://iana.org/assignments/http-problem-types#quota-exceeded"

# A 400 (ambiguous_header) is about the request's form, not a quota: RFC 9457's about:blank.
BAD_REQUEST_TYPE = "about:blank"

_TITLES = {400: "Bad Request", 429: "Too Many Requests", 503: "Service Unavailable"}
_json = msgspec.json.Encoder()

ALLOW_EMPTY = Verdict(status=0, headers=[])


class Decision(msgspec.Struct, gc=False):
    """The outcome of the pipeline for one request, before it is rendered for a surface.

    `outcome` is the limiter Outcome whose numbers go into the RateLimit headers: the rejecting
    rule's on reject, the most restrictive rule's on allow (None when no limiter applied).
    A msgspec Struct because one is built per request: about 3x cheaper than a __slots__ class
    with keyword defaults; gc=False is safe because nothing it holds refers back to it.
    """

    status: int = 0  # 0 allow, 429 reject, 400 ambiguous_header, 503 not ready or engine_error
    reason: str | None = None  # contract §4 reason code on reject
    rule: str | None = None  # rule name the headers describe
    policy_id: str | None = None
    outcome: Outcome | None = None
    retry_after_s: int = 0
    # The rejecting limiter's state key (pyengine.state.keys: rule identity and key values), or
    # the guard's; None for kill switches and missing keys. Retry-After jitter reads it.
    key: str | None = None
    warning: str | None = None  # X-Fairvisor-Warning value
    delay_ms: int = 0
    detail: str | None = None  # operator-only text (a kill switch's reason): decision log, never the client
    reserved: list | None = None  # [(rule, state key, amount)] of rules settled after the response
    charged: list | None = None  # every (rule, state key, amount) an allow charged, for undo on engine_error
    reservation_id: str | None = None

    @property
    def action(self) -> str:
        """What the decision does to the request, as metrics, the decision log and the tools
        name it: reject, throttle (allowed after a delay), warn or allow."""
        if self.status:
            return "reject"
        if self.warning:
            return "throttle" if self.delay_ms else "warn"
        return "allow"


def rate_limit_headers(rule: str, o, out: list[str]) -> None:
    """draft-ietf-httpapi-ratelimit-headers-11 items plus the legacy trio, appended to `out`."""
    out += (
        "RateLimit-Policy", f'"{rule}";q={o.limit};w={o.window_s}',
        "RateLimit", f'"{rule}";r={o.remaining};t={o.reset_s}',
        "RateLimit-Limit", str(o.limit),
        "RateLimit-Remaining", str(o.remaining),
        "RateLimit-Reset", str(o.reset_s),
    )


_MESSAGES = {
    "rate_limit_exceeded": "Rate limit exceeded",
    "tpm_exceeded": "Token rate limit (tokens per minute) exceeded",
    "tpd_exceeded": "Daily token limit exceeded",
    "prompt_tokens_exceeded": "Prompt is longer than this tenant may send",
    "max_tokens_per_request_exceeded": "Request asks for more tokens than allowed per request",
    "budget_exhausted": "Spend budget exhausted for this period",
    "kill_switch_active": "Access suspended by a kill switch",
    "loop_detected": "Identical requests repeated: agent loop detected",
    "circuit_breaker_open": "Spend circuit breaker is open",
    "unknown_model_price": "No price is configured for this model",
    "concurrency_exceeded": "Too many requests in flight for this key",
    "missing_limit_key": "The request lacks a value this limit is keyed on",
    "ambiguous_header": "A header this edge reads as one value was sent more than once",
    "no_policy_loaded": "No policy is loaded",
    "engine_error": "The rate-limit engine failed on this request; it was not let through",
}


def _message(d: Decision) -> str:
    # Built from the reason code only: d.detail is for operators and never reaches a client.
    text = _MESSAGES.get(d.reason, d.reason or "Rejected")
    if d.retry_after_s:
        text = f"{text}. Retry after {d.retry_after_s} s."
    return text


def _body(d: Decision, surface: int, llm_format: str | None) -> tuple[str, bytes]:
    msg = _message(d)
    unavailable = d.status == 503  # no policy, or engine_error: the providers' server-side error types
    invalid = d.status == 400  # ambiguous_header: the providers' invalid-request error types
    if surface != SURFACE_DESCRIBED and llm_format == "openai":
        etype = "server_error" if unavailable else "invalid_request_error" if invalid else \
            "insufficient_quota" if d.reason == "budget_exhausted" else "rate_limit_error"
        return "application/json", _json.encode({"error": {"message": msg, "type": etype, "code": d.reason}})
    if surface != SURFACE_DESCRIBED and llm_format == "anthropic":
        etype = "api_error" if unavailable else "invalid_request_error" if invalid else "rate_limit_error"
        return "application/json", _json.encode({"type": "error", "error": {"type": etype, "message": msg}})
    if surface != SURFACE_DESCRIBED and llm_format == "gemini":
        status = "UNAVAILABLE" if unavailable else "INVALID_ARGUMENT" if invalid else "RESOURCE_EXHAUSTED"
        return "application/json", _json.encode({"error": {"code": d.status, "message": msg, "status": status}})
    problem = {
        "type": BAD_REQUEST_TYPE if invalid else PROBLEM_TYPE,
        "title": _TITLES.get(d.status, "Rejected"),
        "status": d.status,
        "detail": msg,
        "reason": d.reason,
        "violated-policies": [d.policy_id] if d.policy_id else [],
    }
    return "application/problem+json", _json.encode(problem)


# Verdicts of plain allows (no reservation, no delay) and of rejections are a pure function of
# a few Decision fields and the surface, and repeat a lot under load (a bucket of burst 10 has 11
# `remaining` values; a reject flood repeats one answer): built once and shared. Shared verdicts
# are never mutated (only reserving verdicts are, by LLMProxy). Kept in the engine's "verdict"
# memo table (pyengine.decision.memo), passed to render.


def _allow_headers(d: Decision) -> list[str]:
    headers: list[str] = []
    if d.outcome is not None:
        rate_limit_headers(d.rule, d.outcome, headers)
    if d.warning:
        headers += ("X-Fairvisor-Warning", d.warning)
    return headers


def _build(d: Decision, surface: int, llm_format: str | None) -> Verdict:
    if d.status == 0:
        headers = _allow_headers(d)
        return Verdict(status=0, headers=headers) if headers else ALLOW_EMPTY
    headers: list[str] = []
    if d.outcome is not None:
        rate_limit_headers(d.rule, d.outcome, headers)
    content_type, body = _body(d, surface, llm_format)
    headers += ("X-Fairvisor-Reason", d.reason, "Content-Type", content_type)
    if d.retry_after_s:
        headers += ("Retry-After", str(d.retry_after_s))
    return Verdict(status=d.status, headers=headers, body=body.decode())


def _shared(d: Decision, surface: int, llm_format: str | None, memo) -> Verdict:
    o = d.outcome
    key = (d.status, d.rule, d.warning, d.reason, d.policy_id, d.retry_after_s, surface, llm_format,
           None if o is None else (o.limit, o.window_s, o.remaining, o.reset_s))
    verdict = memo.get(key)
    if verdict is None:
        verdict = memo.remember(key, _build(d, surface, llm_format))
    return verdict


def render(d: Decision, surface: int, llm_format: str | None, memo=None) -> Verdict:
    """The Verdict for one surface: decision service (problem+json) or inline (provider shape).

    With `memo` (the engine's "verdict" table), verdicts of plain allows and of rejections are
    shared (see _shared): callers must not modify them."""
    rid = d.reservation_id
    if d.status or (not rid and not d.delay_ms):
        return _build(d, surface, llm_format) if memo is None else _shared(d, surface, llm_format, memo)
    headers = _allow_headers(d)
    if rid and surface == SURFACE_DESCRIBED:
        headers += ("X-Fairvisor-Reservation", rid)
    return Verdict(status=0, headers=headers, delay_ms=d.delay_ms, reservation_id=rid or "")
