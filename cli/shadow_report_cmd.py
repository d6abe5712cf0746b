"""`fairvisor shadow-report`: what each shadow policy would have rejected, from the decision log."""

import time

import click

from .admin_client import DEFAULT_ADMIN_URL, call, parse_duration, refused
from .output import echo_json, fail, plural, table

DECISIONS_PATH = "/v1/admin/decisions"
BUNDLE_PATH = "/v1/admin/bundle"
TOP_TENANTS = 10
def aggregate(records, shadow_ids=()) -> list[dict]:
    """One entry per policy with would_reject records (and per id in `shadow_ids`, with none):
    counts by rule and reason, and the top tenants (keys as logged)."""
    policies: dict[str, dict] = {pid: {} for pid in shadow_ids}
    for rec in records:
        if rec.get("event") != "would_reject":
            continue
        p = policies.setdefault(str(rec.get("policy", "")), {})
        reasons = p.setdefault("reasons", {})
        k = (str(rec.get("rule", "")), str(rec.get("reason", "")))
        reasons[k] = reasons.get(k, 0) + 1
        tenants = p.setdefault("tenants", {})
        key = str(rec.get("key", "")) or "(no key)"
        tenants[key] = tenants.get(key, 0) + 1
        ts = str(rec.get("ts", ""))
        p["first"] = min(p.get("first", ts), ts)
        p["last"] = max(p.get("last", ts), ts)
    out = []
    for pid, p in sorted(policies.items()):
        reasons, tenants = p.get("reasons", {}), p.get("tenants", {})
        out.append({
            "policy": pid,
            "would_reject": sum(reasons.values()),
            "tenants": len(tenants),
            "first": p.get("first"), "last": p.get("last"),
            "by_rule": [{"rule": r, "reason": why, "requests": n}
                        for (r, why), n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))],
            "top_tenants": [{"key": k, "requests": n}
                            for k, n in sorted(tenants.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TENANTS]],
        })
    return out


def render(report: list[dict], since: str, source: str) -> str:
    lines = [f"Shadow would-rejects since {since} ({source}):"]
    if not report:
        lines.append("  no shadow policy in force and no would_reject record in the window")
    for p in report:
        lines.append("")
        if not p["would_reject"]:
            lines.append(f"{p['policy']}: would have rejected nothing")
            continue
        lines.append(f"{p['policy']}: would have rejected {plural(p['would_reject'], 'request')} of "
                     f"{plural(p['tenants'], 'tenant')} ({p['first']} .. {p['last']})")
        lines.append(table(["RULE", "REASON", "REQUESTS"], [[r["rule"], r["reason"], r["requests"]] for r in p["by_rule"]]))
        lines.append(table(["TENANT KEY", "REQUESTS"], [[t["key"], t["requests"]] for t in p["top_tenants"]]))
    return "\n".join(lines)


def _shadow_policy_ids(bundle: dict) -> list[str]:
    ids = []
    for p in bundle.get("policies") or ():
        if isinstance(p, dict) and (p.get("spec") or {}).get("mode") == "shadow":
            ids.append(str(p.get("id")))
    return ids


@click.command("shadow-report")
@click.option("--admin-url", default=None, envvar="FAIRVISOR_ADMIN_URL", show_envvar=True,
              help=f"Ask the edge's admin listener [default: {DEFAULT_ADMIN_URL}]; sends FAIRVISOR_ADMIN_TOKEN.")
@click.option("--log", "log_path", default=None, type=click.Path(dir_okay=False),
              help="Read this decision log file (and its rotations) instead of asking the edge.")
@click.option("--since", "since", default="24h", show_default=True,
              help="The window: 90s, 15m, 2h, 7d.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def shadow_report(admin_url, log_path, since, as_json) -> None:
    """For each shadow policy, what it would have rejected over the window: requests by rule
    and reason, and the tenants (limit-key values as the decision log shows them, hashed
    unless FAIRVISOR_LOG_KEYS=raw). Asked of the edge, every shadow policy in force is listed,
    also those that would have rejected nothing.

    Exit status: 0, 1 no decision log, 3 unreachable, 5 FAIRVISOR_ADMIN_TOKEN refused.
    """
    if admin_url and log_path:
        raise click.UsageError("give --admin-url or --log, not both")
    window_s = parse_duration(since)
    from pyengine.decision_log import rfc3339_ms

    shadow_ids: list[str] = []
    if log_path:
        from pyengine.log_reader import log_files, recent_records

        if not log_files(log_path):
            fail(f"fairvisor shadow-report: no decision log at {log_path}", 1)
        since_ts = rfc3339_ms(time.time() - window_s)
        records = recent_records(log_path, since_ts, ("would_reject",), max_bytes=1 << 40)
        source = log_path
    else:
        admin_url = admin_url or DEFAULT_ADMIN_URL
        status, answer = call(admin_url, "POST", DECISIONS_PATH, body={"since_s": window_s, "event": ["would_reject"]})
        if status != 200:
            refused(status, answer)
        status, bundle = call(admin_url, "GET", BUNDLE_PATH)
        if status != 200:
            refused(status, bundle)
        shadow_ids = _shadow_policy_ids(bundle)
        records, since_ts, source = answer.get("records", []), answer.get("since", ""), admin_url
    report = aggregate(records, shadow_ids)
    if as_json:
        echo_json({"since": since_ts, "source": source, "policies": report})
    else:
        click.echo(render(report, since_ts, source))
