"""The operator endpoints of the admin listener: coverage, the bundle in force, recent
decision records, a candidate bundle's replay, and self-test runs (docs/cli.md).

Each handler takes (engine, query: {name: [values]}, body: bytes | None) and answers a Reply;
ROUTES maps (path, method) to it, `route` is what pyengine.admin_api asks first. The admin
listener checks the token before any of them.
"""

import time
from urllib.parse import parse_qs

import msgspec

from . import selftest, what_if
from .config import ADMIN_OFF
from .coverage import reply as coverage_reply
from .decision_log import rfc3339_ms
from .errors import PolicyError
from .log_reader import recent_records
from .protocol.messages import Reply

MAX_SINCE_S = 31 * 86400
MAX_RECORDS = 20_000  # per answer: the newest
EVENTS = ("reject", "warn", "throttle", "would_reject", "reload", "cutoff")
_json = msgspec.json.Encoder()


def _answer(status: int, body, content_type: str = "application/json") -> Reply:
    text = body if isinstance(body, str) else _json.encode(body).decode()
    return Reply(status=status, content_type=content_type, body=text)


def problem(status: int, reason: str, detail: str = "", **extra) -> Reply:
    body = {"status": status, "reason": reason, **({"detail": detail} if detail else {}), **extra}
    return _answer(status, body, "application/problem+json")


def query_of(uri: bytes) -> dict:
    return parse_qs(uri.partition(b"?")[2].decode("latin-1"), keep_blank_values=True)


def route(engine, method: str, path: str, body: bytes | None):
    """The operator endpoint's (status, content type, body) for `path` (query included), or
    None when it is none of ROUTES (pyengine.admin_api routes the rest)."""
    bare, _, query = path.partition("?")
    handler = ROUTES.get((bare, "GET" if method == "HEAD" else method))
    if handler is None:
        if any(p == bare for p, _ in ROUTES):
            allowed = ", ".join(m for p, m in ROUTES if p == bare)
            return 405, "application/problem+json", problem(405, "method_not_allowed", allowed).body
        return None
    reply = handler(engine, parse_qs(query, keep_blank_values=True), body)
    return reply.status, reply.content_type, reply.body


def coverage(engine, query: dict, body) -> Reply:
    return coverage_reply(engine)


def bundle(engine, query: dict, body) -> Reply:
    """The bundle in force, byte for byte as it was loaded (JSON)."""
    if engine.bundle_bytes is None:
        return problem(503, "no_policy_loaded")
    return _answer(200, engine.bundle_bytes.decode("utf-8", "replace"))


def _params(query: dict, body) -> dict:
    """Parameters from a JSON object body (POST), else from the query string ({name: [values]})."""
    if body:
        doc = msgspec.json.decode(body)  # DecodeError: the caller answers 400
        if not isinstance(doc, dict):
            raise msgspec.DecodeError("not an object")
        return {k: v if isinstance(v, list) else [v] for k, v in doc.items()}
    return query


def decisions(engine, query: dict, body) -> Reply:
    """since_s=N (default 3600), event=E (repeatable; all when none), as the query of a GET or
    the JSON object a POST sends: the decision log's recent records."""
    path = engine.settings.decision_log
    if path == "off":
        return problem(404, "decision_log_off", "FAIRVISOR_DECISION_LOG=off: no records are kept")
    try:
        params = _params(query, body)
        since_s = int((params.get("since_s") or ["3600"])[0])
    except (ValueError, TypeError, msgspec.DecodeError):
        return problem(400, "bad_request", 'since_s: a whole number of seconds; a POST body: {"since_s": N, '
                                           '"event": [...]}')
    since_s = max(1, min(since_s, MAX_SINCE_S))
    events = tuple(e for e in params.get("event", ()) if e in EVENTS)
    engine.decision_log.flush()  # what the decision path buffered counts too
    since_ts = rfc3339_ms(engine.clock.now_s() - since_s)
    records = recent_records(path, since_ts, events)
    truncated = len(records) > MAX_RECORDS
    return _answer(200, {"since": since_ts, "records": records[-MAX_RECORDS:], "truncated": truncated})


def replay(engine, query: dict, body) -> Reply:
    """POST a candidate bundle: the recent requests replayed under it and under the bundle in
    force (pyengine.what_if); 422 with the loader's errors when it does not load."""
    if engine.bundle_bytes is None:
        return problem(503, "no_policy_loaded")
    if not body:
        return problem(400, "body_required", "POST the candidate bundle as the request body")
    start = time.perf_counter()
    try:
        report = what_if.compare(engine.settings, engine.bundle_bytes, body, engine.recent.snapshot(),
                                 engine.decision_log.shown_key)
    except PolicyError as exc:
        return problem(422, "invalid_bundle", errors=exc.errors)
    report["replay_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return _answer(200, report)


def selftest_start(engine, query: dict, body) -> Reply:
    """A self-test run: its secret (expires), the bundle it is bound to and a request per rule."""
    if engine.bundle is None:
        return problem(503, "no_policy_loaded")
    if engine.settings.admin_listen == ADMIN_OFF:  # the shim is then never asked for the self-test header
        return problem(409, "admin_listener_off", "self-test runs need FAIRVISOR_ADMIN_LISTEN")
    given = None
    if "run" in query or "secret" in query:  # an edge's engine 0 chose them (pyengine.admin_peers)
        given = ((query.get("run") or [""])[0], (query.get("secret") or [""])[0])
        if not (selftest.is_run_id(given[0]) and selftest.is_secret(given[1])):
            return problem(400, "invalid_request", "run: 12 hex digits, secret: 32 URL-safe base64 characters")
        if given[0] in engine.selftests.runs:
            return problem(409, "exists", f"run {given[0]} exists")
    plan = engine.selftests.start(engine.bundle, engine.clock.now_s(), engine.metrics.rule_skipped.values, given)
    # hide_reason: rejections carry no X-Fairvisor-Reason header (FAIRVISOR_HIDE_REASON), by design.
    plan.update(mode=engine.settings.mode, fail_mode=engine.settings.fail_mode, hide_reason=engine.hide_reason)
    return _answer(200, plan)


def selftest_end(engine, query: dict, body) -> Reply:
    """{"run": ID} (or ?run=ID): the run's secret stops working and its scratch counters are deleted."""
    run = (query.get("run") or [""])[0]
    if not run and body:
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return problem(400, "bad_json")
        run = doc.get("run", "") if isinstance(doc, dict) else ""
    if not isinstance(run, str) or not engine.selftests.end(run):
        return problem(404, "no_such_run")
    return _answer(200, {"run": run, "ended": True})


ROUTES = {
    ("/v1/admin/coverage", "GET"): coverage,
    ("/v1/admin/bundle", "GET"): bundle,
    ("/v1/admin/decisions", "GET"): decisions,
    ("/v1/admin/decisions", "POST"): decisions,
    ("/v1/admin/replay", "POST"): replay,
    ("/v1/admin/selftest", "POST"): selftest_start,
    ("/v1/admin/selftest/end", "POST"): selftest_end,
}
