"""`fairvisor selftest`: prove on the live edge (nginx, shim, engine) that every rule in force enforces.

The admin listener starts a run (pyengine.selftest): a per-run secret and, per rule, a request
its selector and keys accept. Each rule gets a probe (applied once: it must match) and a drain
(applied until it rejects: the client's 429 and headers must come back), sent to the public
URL. The engine answers them itself on scratch counters: no tenant's state or metric moves,
no upstream is reached. The run is ended (scratch state deleted) whatever happens.
"""

import http.client
import json
import urllib.parse

import click

from .admin_client import admin_url_option, call, refused
from .output import echo_json, table

EXIT_CANNOT_ENFORCE = 1
EXIT_UNREACHABLE = 3
EXIT_FAILS_OPEN = 6  # the edge lets requests through without the engine (or refuses all of them)
TIMEOUT_S = 5.0

ENFORCING, SHADOW, SKIPPED, CANNOT_MATCH, NOT_DRIVEN, NO_ENGINE = (
    "enforcing", "shadow", "skipped", "cannot_match", "not_driven", "no_engine")
_FAILING = (CANNOT_MATCH, NO_ENGINE)


class EdgeUnreachable(Exception):
    """The public URL did not answer at all."""


def send(url: str, mode: str, req: dict, header_value: str) -> tuple[int, dict]:
    """One self-test request through the edge: (status, lower-cased response headers)."""
    parts = urllib.parse.urlsplit(url)
    headers = dict(req.get("headers") or {})
    headers["X-Fairvisor-Selftest"] = header_value
    body = req.get("body")
    if mode == "decision_service":  # the request is described to /v1/decision (contract §2)
        method, target = "POST", parts.path.rstrip("/") + "/v1/decision"
        headers.update({"X-Original-Method": req["method"], "X-Original-URI": req["path"]})
        if req.get("host"):
            headers["X-Original-Host"] = req["host"]
    else:
        method, target = req["method"], parts.path.rstrip("/") + req["path"]
        if req.get("host"):
            headers["Host"] = req["host"]
        if body:
            headers.setdefault("Content-Type", "application/json")
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = conn_cls(parts.netloc, timeout=TIMEOUT_S)
        conn.request(method, target, body=body.encode() if body else None, headers=headers)
        resp = conn.getresponse()
        resp.read()
        got = {k.lower(): v for k, v in resp.getheaders()}
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        raise EdgeUnreachable(f"{url}: {exc}") from None
    return resp.status, got


def public_cause(url: str) -> str:
    """", cause: <why>" from the public /readyz, which names why nginx cannot reach the engine
    (timeout, refused, permission_denied, ...); "" when it says nothing more."""
    parts = urllib.parse.urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = conn_cls(parts.netloc, timeout=TIMEOUT_S)
        conn.request("GET", parts.path.rstrip("/") + "/readyz")
        body = json.loads(conn.getresponse().read())
        conn.close()
    except (OSError, http.client.HTTPException, ValueError):
        return ""
    cause = body.get("cause") if isinstance(body, dict) else None
    return f" (cause: {cause}, from {url}/readyz)" if isinstance(cause, str) and cause else ""


def no_mark(status: int, h: dict) -> tuple[str, str]:
    """Why an answer carries no self-test mark: (result, cause)."""
    if h.get("x-fairvisor-degraded") == "engine_unavailable":
        return NO_ENGINE, ("the edge FAILS OPEN: it let the request through without a decision "
                           "(X-Fairvisor-Degraded: engine_unavailable, FAIRVISOR_FAIL_MODE=open): nginx cannot "
                           "reach the engine (stopped, or a socket its workers may not open)")
    if status == 503 and h.get("x-fairvisor-reason") == "engine_unavailable":
        return NO_ENGINE, ("nginx cannot reach the engine (stopped, or a socket its workers may not open); "
                           "FAIRVISOR_FAIL_MODE=closed refuses every request with 503")
    return CANNOT_MATCH, (f"the answer ({status}) carries no self-test mark: this route does not reach the "
                          "engine (an nginx location without the shim?) or the edge dropped the header")


def check_rule(url: str, plan: dict, rule: dict) -> dict:
    out = {"policy": rule["policy"], "rule": rule["rule"], "mode": rule["mode"], "algorithm": rule["algorithm"]}
    if rule.get("cannot_match"):
        return {**out, "result": CANNOT_MATCH, "detail": rule["cannot_match"]}
    prefix = f"{plan['run']}.{plan['secret']}.{rule['index']}"
    status, h = send(url, plan["mode"], rule["request"], prefix + ".probe")
    mark = h.get("x-fairvisor-selftest")
    if mark is None:
        result, cause = no_mark(status, h)
        return {**out, "result": result, "detail": cause}
    if mark not in ("allowed", "rejected"):
        return {**out, "result": CANNOT_MATCH, "detail": f"the live request did not reach the rule: {mark} "
                                                         "(nginx rewrote the path, or dropped a header it keys on)"}
    if mark == "allowed":
        status, h = send(url, plan["mode"], rule["request"], prefix + ".drain")
        mark = h.get("x-fairvisor-selftest")
        if mark is None:
            result, cause = no_mark(status, h)
            return {**out, "result": result, "detail": cause}
        if mark == "allowed":
            return {**out, "result": NOT_DRIVEN, "detail": f"matched; still allowed after "
                                                           f"{h.get('x-fairvisor-selftest-applied')} requests"}
    reason = h.get("x-fairvisor-reason")
    missing = [] if h.get("x-fairvisor-reason") or plan.get("hide_reason") else ["x-fairvisor-reason"]
    if reason in ("rate_limit_exceeded", "concurrency_exceeded", "tpm_exceeded") and not h.get("retry-after"):
        missing.append("retry-after")
    if missing:
        return {**out, "result": CANNOT_MATCH, "detail": f"rejected ({status}) without {', '.join(missing)}"}
    shown = [f"{status} {reason} after {h.get('x-fairvisor-selftest-applied', '1')} requests"]
    shown += [f"{k}: {h[k]}" for k in ("ratelimit-limit", "retry-after") if h.get(k)]
    result = SHADOW if rule["mode"] == "shadow" else ENFORCING
    if result == ENFORCING and rule.get("skipped_missing_key"):
        result = SKIPPED
        shown.append(f"but {rule['skipped_missing_key']} requests since the engine started lacked its key "
                     "and were not limited by it")
    return {**out, "result": result, "status": status, "reason": reason, "detail": "; ".join(shown)}


def render(plan: dict, results: list[dict]) -> str:
    lines = [f"Self-test of bundle version {plan['bundle_version']} ({plan['bundle_hash']}), "
             f"{plan['mode']}, fail mode {plan['fail_mode']}:"]
    rows = [[r["policy"], r["rule"], r["mode"], r["result"], r.get("detail", "")] for r in results]
    lines.append(table(["POLICY", "RULE", "MODE", "RESULT", "DETAIL"], rows) if rows else "  no rules in force")
    counts: dict[str, int] = {}
    for r in results:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    lines.append(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "0 rules")
    return "\n".join(lines)


@click.command("selftest")
@click.option("--url", required=True, metavar="PUBLIC_URL",
              help="The edge's public listener (FAIRVISOR_LISTEN), e.g. http://127.0.0.1:8080.")
@admin_url_option
@click.option("--strict", is_flag=True, help="Also exit 1 when a rule was skipped for a missing key recently.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def selftest(url, admin_url, strict, as_json) -> None:
    """Prove on the live edge that every rule in force matches and rejects at its limit with
    the client's headers (X-Fairvisor-Reason, RateLimit-*, Retry-After), using synthetic
    self-test requests authorised by a per-run secret from the admin listener. They count on
    scratch counters only and never reach an upstream.

    Per rule: enforcing, shadow (would reject), skipped (enforces, but requests since the
    engine started lacked its key), cannot_match (no request can reach it, or the edge answered without it),
    not_driven (matched, limit beyond 20,000 requests), no_engine.

    Exit status: 0 every rule enforces, 1 a rule cannot, 3 unreachable, 5 token refused,
    6 the edge cannot reach the engine (it fails open, or refuses every request).
    """
    status, plan = call(admin_url, "POST", "/v1/admin/selftest")
    if status != 200:
        if status in (502, 503, 504):
            click.echo(f"fairvisor selftest: the admin listener answered {status} ({plan.get('reason', '')}): "
                       f"the engine is unreachable from nginx{public_cause(url)}", err=True)
            raise SystemExit(EXIT_FAILS_OPEN)
        refused(status, plan)
    results: list[dict] = []
    try:
        for rule in plan["rules"]:
            results.append(check_rule(url, plan, rule))
            if results[-1]["result"] == NO_ENGINE:
                break  # every further request would say the same
    except EdgeUnreachable as exc:
        click.echo(f"fairvisor selftest: the public URL did not answer: {exc}", err=True)
        raise SystemExit(EXIT_UNREACHABLE)
    finally:
        call(admin_url, "POST", "/v1/admin/selftest/end", body={"run": plan["run"]})
    if as_json:
        echo_json({"bundle_version": plan["bundle_version"], "bundle_hash": plan["bundle_hash"],
                   "mode": plan["mode"], "fail_mode": plan["fail_mode"], "rules": results})
    else:
        click.echo(render(plan, results))
    got = {r["result"] for r in results}
    if NO_ENGINE in got:
        click.echo(f"fairvisor selftest: {next(r['detail'] for r in results if r['result'] == NO_ENGINE)}", err=True)
        raise SystemExit(EXIT_FAILS_OPEN)
    if got & set(_FAILING) or (strict and SKIPPED in got):
        bad = [f"{r['policy']}/{r['rule']}: {r['detail']}" for r in results
               if r["result"] in _FAILING or (strict and r["result"] == SKIPPED)]
        click.echo("fairvisor selftest: rules that cannot enforce:\n  " + "\n  ".join(bad), err=True)
        raise SystemExit(EXIT_CANNOT_ENFORCE)
