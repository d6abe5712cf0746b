"""`fairvisor test` (dry-run replay of JSON-line requests) and `fairvisor explain` (one request, rule by rule)."""

import json
import os
import sys

import click

from .output import echo_json, fail, paint, table


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _source(path: str) -> str:
    return "<stdin>" if path == "-" else os.path.basename(path)


def _start_s(start: str | None) -> float | None:
    if start is None:
        return None
    from pyengine.replay import RequestFileError, epoch_s

    try:
        return epoch_s(start, "--start")
    except RequestFileError as exc:
        fail(f"fairvisor: {exc}", 2)


def _load(policy_file: str, requests, start_s: float | None):
    """(engine, requests) or exit: 1 for a refused policy, 2 for an unusable request file."""
    from pyengine.errors import PolicyError
    from pyengine.replay import new_engine, start_time

    try:
        engine = new_engine(_read(policy_file), _source(policy_file),
                            start_s if start_s is not None else start_time(requests, "requests"))
    except PolicyError as exc:
        fail("\n".join(exc.errors), 1)
    return engine


def _parse(path: str, text: str):
    from pyengine.replay import RequestFileError, parse_requests

    try:
        return parse_requests(text, _source(path))
    except RequestFileError as exc:
        fail(str(exc), 2)


def _notes(r) -> str:
    notes = []
    if r.retry_after_s:
        notes.append(f"retry {r.retry_after_s}s")
    if r.delay_ms:
        notes.append(f"delay {r.delay_ms}ms")
    notes += [f"shadow {w}" for w in r.would_reject]
    if r.passed is False:
        notes.append(paint(f"EXPECTED {r.expect}", "reject", bold=True))
    return "; ".join(notes)


@click.command("test")
@click.argument("policy_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--requests", "requests_file", required=True, metavar="REQS.jsonl",
              type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="One JSON request per line: method, path, headers, body, timestamp, expect, usage.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--clock-step-ms", default=0, show_default=True, type=click.IntRange(min=0),
              help="Time between requests that carry no timestamp, in milliseconds.")
@click.option("--start", default=None, metavar="RFC3339",
              help="Clock at the first request (default: its timestamp, else 2026-01-01T00:00:00Z).")
def test(policy_file, requests_file, fmt, clock_step_ms, start) -> None:
    """Replay requests against a policy in memory (dry run) and report every decision.

    Deterministic: the same files give the same output. Exit status: 0 done and every
    `expect` met, 1 policy refused or an expectation failed, 2 unusable request file.
    """
    from pyengine.replay import RequestFileError, replay, summary

    requests = _parse(requests_file, _read(requests_file).decode("utf-8", "replace"))
    engine = _load(policy_file, requests, _start_s(start))
    try:
        results = replay(engine, requests, _source(requests_file), clock_step_ms)
    except RequestFileError as exc:
        fail(str(exc), 2)
    totals = summary(results)
    if fmt == "json":
        import msgspec

        echo_json({"decisions": json.loads(msgspec.json.encode(results)), "summary": totals})
    else:
        rows = [[r.id, r.time[11:23], f"{r.method} {r.path}", r.action, r.status, r.reason,
                 f"{r.policy}/{r.rule}" if r.rule else r.policy,
                 "" if r.remaining is None else f"{r.remaining}/{r.limit}", _notes(r)] for r in results]
        click.echo(table(["ID", "TIME", "REQUEST", "ACTION", "STATUS", "REASON", "POLICY/RULE", "LEFT", "NOTES"],
                         rows, colour_column=3))
        actions = ", ".join(f"{n} {a}" for a, n in totals["by_action"].items())
        line = f"\n{totals['requests']} requests: {actions}"
        if totals["would_reject"]:
            line += f"; {totals['would_reject']} shadow would-reject"
        if totals["expectations"]:
            line += f"; expectations {totals['expectations'] - totals['expectations_failed']}/{totals['expectations']} met"
        click.echo(line)
    raise SystemExit(1 if totals["expectations_failed"] else 0)


def _explain_text(x: dict) -> str:
    req = x["request"]
    lines = [click.style(f"Request {req['method']} {req['path']} (host {req['host'] or '-'})", bold=True)]
    for h in x.get("ambiguous_headers", ()):
        lines.append(f"repeated header {h['header']}: {paint('reject' if h['status'] == 'refused' else 'would_reject')}"
                     f" ({h['status']})")
    for ks in x["kill_switches"]:
        lines.append(f"kill switch #{ks['index']}: {paint(ks['status'], 'hit' if ks['status'] == 'hit' else 'skipped')}"
                     + (f" ({ks['reason']})" if ks["reason"] else ""))
    if x["global_shadow"]:
        lines.append(paint("global shadow active: every policy only counts", "would_reject"))
    for p in x["policies"]:
        head = f"policy {p['policy']} [{p['mode']}] {p['selector']}: {paint(p['status'])}"
        lines.append(head + (f" - {p['why']}" if "why" in p else "") +
                     (f" -> {paint(p['outcome'])}" if "outcome" in p else ""))
        for r in p["rules"]:
            label = f"  rule {r['rule']}{' (fallback)' if r['fallback'] else ''} [{r['algorithm']}] " \
                    f"keys {','.join(r['limit_keys'])}"
            if "key" in r:
                label += f" = {r['key']}"
            text = f"{label}: {paint(r['status'])}"
            o = r.get("outcome")
            if o and "limit" in o:
                text += f", remaining {o['remaining']}/{o['limit']} (window {o['window_s']}s, cost {o['cost']})"
            if o and o.get("reason"):
                text += f", {o['reason']}, retry after {o.get('retry_after_s', 0)}s"
            if o and o.get("warning"):
                text += f", {o['warning']}"
            if "why" in r:
                text += f" - {r['why']}"
            lines.append(text)
        g = p.get("guards")
        if g is not None:
            lines.append(f"  guard {g['guard']}: {paint('reject' if g['reject'] else 'warn')} {g['reason']}"
                         + (f", {g['warning']}" if g.get("warning") else "")
                         + (f", delay {g['delay_ms']}ms" if g.get("delay_ms") else ""))
    v = x["verdict"]
    lines.append(click.style("Verdict: ", bold=True) + paint(v["action"]) + f" {v['status']}"
                 + (f" {v['reason']}" if v["reason"] else "")
                 + (f" by {v['policy']}/{v['rule']}" if v["rule"] else ""))
    lines += [f"  {name}: {value}" for name, value in v["headers"]]
    return "\n".join(lines)


@click.command("explain")
@click.argument("policy_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--request", "request_file", required=True, metavar="REQ.json",
              type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="One request as a JSON object (the `fairvisor test` line format).")
@click.option("--history", "history_file", default=None, metavar="REQS.jsonl",
              type=click.Path(exists=True, dir_okay=False),
              help="Requests replayed first, so limiters hold the state they would have.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--clock-step-ms", default=0, show_default=True, type=click.IntRange(min=0),
              help="Time between requests that carry no timestamp, in milliseconds.")
def explain(policy_file, request_file, history_file, fmt, clock_step_ms) -> None:
    """Show why one request gets its verdict: kill switches, selectors, each rule's match,
    keys, limiter state and outcome, then the final verdict with its headers.

    Exit status: 0 explained, 1 policy refused, 2 unusable request file.
    """
    from pyengine.explain import explain_request
    from pyengine.replay import RequestFileError, build_decide, replay, tick

    text = _read(request_file).decode("utf-8", "replace")
    one = _parse(request_file, json.dumps(_json_object(text, request_file)))
    history = _parse(history_file, _read(history_file).decode("utf-8", "replace")) if history_file else []
    engine = _load(policy_file, history + one, None)
    spec = one[0][1]
    try:
        replay(engine, history, _source(history_file or "-"), clock_step_ms)
        tick(engine.clock, spec, _source(request_file), clock_step_ms, first=not history)
    except RequestFileError as exc:
        fail(str(exc), 2)
    x = explain_request(engine, build_decide(engine, spec, spec.id or "explain"))
    if fmt == "json":
        echo_json(x)
    else:
        click.echo(_explain_text(x))


def _json_object(text: str, path: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"{_source(path)}: invalid JSON: {exc}", 2)
    if not isinstance(value, dict):
        fail(f"{_source(path)}: expected one JSON object", 2)
    return value


COMMANDS = (test, explain)
