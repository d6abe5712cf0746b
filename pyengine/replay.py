"""Dry-run replay (`fairvisor test`): JSON-line requests through an in-memory Engine on a fake clock.

Nothing leaves the process: no socket, no nginx, no files written. The same policy and the
same request file always give the same decisions, because time comes only from the file
(`timestamp`) or from a fixed step per request.
"""

import datetime
import json

import msgspec

from .clock import FakeClock
from .config import from_env
from .decision_log import DecisionLog, rfc3339_ms
from .engine import Engine
from .policy.loader import parse_json
from .policy.shape_errors import locate
from .protocol.messages import SURFACE_INLINE, Decide, Usage

DEFAULT_START_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z, when no request carries a timestamp


class RequestFileError(ValueError):
    """A request line cannot be used; the message starts with `<file>:<line>:`."""


class UsageSpec(msgspec.Struct, forbid_unknown_fields=True):
    prompt_tokens: int
    completion_tokens: int


class RequestSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One request of a replay file. Units: timestamp in UTC epoch seconds or RFC 3339."""

    method: str = "GET"
    path: str = "/"  # path and query, as the client sent them
    headers: dict[str, str] = {}
    body: str | dict | list | None = None  # a string is sent as UTF-8, JSON values re-encoded
    timestamp: float | str | None = None
    host: str = "localhost"
    remote_addr: str = "127.0.0.1"  # nginx's TCP peer; a trusted proxy, so X-Forwarded-For counts
    id: str = ""  # shown in the output; defaults to the line number
    expect: str | None = None  # an action (allow, reject, warn, throttle) or a reason code
    usage: UsageSpec | None = None  # actual LLM usage, settled right after an allow


class Result(msgspec.Struct, omit_defaults=True):
    line: int
    id: str
    time: str
    method: str
    path: str
    action: str  # allow | reject | warn | throttle
    status: int  # what the client gets: 200 on allow
    reason: str = ""  # reject reason or warning
    policy: str = ""
    rule: str = ""
    remaining: int | None = None  # of the rule whose RateLimit numbers the response carries
    limit: int | None = None
    retry_after_s: int = 0
    delay_ms: int = 0
    would_reject: list[str] = []  # shadow policies: "policy/rule: reason"
    expect: str | None = None
    passed: bool | None = None  # expect met; None without an expectation




def epoch_s(value: float | str, where: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RequestFileError(f"{where}: timestamp: not RFC 3339: {value!r}") from None
    if dt.tzinfo is None:
        raise RequestFileError(f"{where}: timestamp: needs a UTC offset, e.g. Z: {value!r}")
    return dt.timestamp()


def parse_requests(text: str, source: str) -> list[tuple[int, RequestSpec]]:
    """(line number, request) for every non-blank line; `#` starts a comment line."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        # Our wording, never msgspec's (it changes between releases): the loader's JSON
        # checks, then the field path and what was expected (shape_errors).
        errors: list = []
        doc = parse_json(line.encode(), errors)
        if not errors:
            try:
                out.append((n, msgspec.convert(doc, RequestSpec)))
                continue
            except msgspec.ValidationError as e:
                errors.append(locate(e, doc, RequestSpec, "$"))
            except RecursionError:
                errors.append(("$", "nested too deeply"))
        path, message = errors[0]
        raise RequestFileError(f"{source}:{n}: {path}: {message}")
    return out


def body_bytes(body) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":")).encode()


def build_decide(engine: Engine, spec: RequestSpec, request_id: str) -> Decide:
    """Describe the request the way the shim's inline surface does: only the headers asked for."""
    hello = engine.hello_reply
    lower = {k.lower(): v.encode() for k, v in spec.headers.items()}
    return Decide(generation=hello.generation, surface=SURFACE_INLINE, method=spec.method.encode(),
                  uri=spec.path.encode(), host=spec.host.encode(), remote_addr=spec.remote_addr.encode(),
                  headers=[lower.get(h) for h in hello.headers],
                  body=body_bytes(spec.body) if hello.needs_body else None, request_id=request_id.encode())


def new_engine(policy: bytes, source: str, start_s: float) -> Engine:
    """An Engine with default settings, no decision-log file, the policy loaded (or PolicyError)."""
    engine = Engine(from_env({}, decision_log="off"), clock=FakeClock(start_s))
    engine.decision_log = DecisionLog(None, "raw", metrics=engine.metrics, memory=True)
    engine.load_bytes(policy, source)
    return engine


def start_time(requests: list[tuple[int, RequestSpec]], source: str) -> float:
    """The first request's timestamp, else DEFAULT_START_S (`fairvisor test --start` overrides)."""
    if requests and requests[0][1].timestamp is not None:
        n, spec = requests[0]
        return epoch_s(spec.timestamp, f"{source}:{n}")
    return DEFAULT_START_S


def _result(n: int, spec: RequestSpec, verdict, d, now_s: float, shadow: list[str]) -> Result:
    action = "reject" if verdict.status else d.action
    if verdict.status:
        status, reason = verdict.status, d.reason or ""
    else:
        status, reason = 200, d.warning or ""
    o = d.outcome
    r = Result(line=n, id=spec.id or str(n), time=rfc3339_ms(now_s), method=spec.method.upper(), path=spec.path,
               action=action, status=status, reason=reason, policy=d.policy_id or "", rule=d.rule or "",
               remaining=o.remaining if o is not None else None, limit=o.limit if o is not None else None,
               retry_after_s=d.retry_after_s, delay_ms=d.delay_ms, would_reject=shadow, expect=spec.expect)
    if spec.expect is not None:
        r.passed = spec.expect in (action, reason)
    return r


def tick(clock, spec: RequestSpec, where: str, step_ms: int, first: bool) -> None:
    """Move the clock to the request's timestamp, or `step_ms` on from the previous request."""
    if spec.timestamp is not None:
        t = epoch_s(spec.timestamp, where)
        if t < clock.now_s():
            raise RequestFileError(f"{where}: timestamp: goes back in time "
                                   f"({rfc3339_ms(t)} < {rfc3339_ms(clock.now_s())})")
        clock.set(t)
    elif not first:
        clock.advance(step_ms / 1000)


def replay(engine: Engine, requests: list[tuple[int, RequestSpec]], source: str, step_ms: int) -> list[Result]:
    """Decide every request in order; `step_ms` advances the clock between requests without a timestamp."""
    clock = engine.clock
    results = []
    for i, (n, spec) in enumerate(requests):
        tick(clock, spec, f"{source}:{n}", step_ms, first=i == 0)
        # Built from the HelloReply in force, so the engine never asks to re-describe it.
        verdict, decision = engine.decide_with_decision(build_decide(engine, spec, spec.id or str(n)))
        shadow = [f"{rec.policy}/{rec.rule}: {rec.reason}" for rec in engine.decision_log.drain()
                  if rec.event == "would_reject"]
        results.append(_result(n, spec, verdict, decision, clock.now_s(), shadow))
        if verdict.reservation_id and spec.usage is not None:
            report = {"reservation_id": verdict.reservation_id, **msgspec.structs.asdict(spec.usage)}
            engine.handle(Usage(body=json.dumps(report).encode()))
    return results


def summary(results: list[Result]) -> dict:
    by_action: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for r in results:
        by_action[r.action] = by_action.get(r.action, 0) + 1
        if r.reason:
            by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
    return {
        "requests": len(results),
        "by_action": dict(sorted(by_action.items())),
        "by_reason": dict(sorted(by_reason.items())),
        "would_reject": sum(len(r.would_reject) for r in results),
        "expectations": sum(1 for r in results if r.passed is not None),
        "expectations_failed": sum(1 for r in results if r.passed is False),
    }
