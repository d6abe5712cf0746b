"""`fairvisor coverage`: the traffic no policy limits, from the engine's counters since start."""

import click

from .admin_client import admin_url_option, call, refused
from .output import echo_json, fail, plural, table

COVERAGE_PATH = "/v1/admin/coverage"
EXIT_UNDER = 1  # --fail-under not met
TOP_ROUTES = 20  # routes shown per table (--json has them all)


def covered_pct(report: dict) -> float:
    return round(100.0 - report.get("unlimited_pct", 0.0), 2)


def render(r: dict, top: int = TOP_ROUTES) -> str:
    lines = [f"Since {r['since']}: {plural(r['decisions'], 'decision')}, {r['unlimited']} limited by nothing "
             f"({r['unlimited_pct']}%), covered {covered_pct(r)}%"]
    for key, title in (("no_policy", "Matched no policy"),
                       ("no_rule_applied", "Matched a policy, but no rule limited them "
                                           "(every rule skipped, none matched, or shadow only)")):
        part = r[key]
        lines.append("")
        lines.append(f"{title}: {plural(part['requests'], 'request')}")
        if part["routes"]:
            rows = [[x["route"], x["requests"]] for x in part["routes"][:top]]
            lines.append(table(["ROUTE", "REQUESTS"], rows))
            if len(part["routes"]) > top:
                lines.append(f"... {len(part['routes']) - top} more routes (--json shows all)")
    lines.append("")
    skipped = r.get("rules_skipped", [])
    lines.append(f"Rules skipped for a missing key: {len(skipped)}")
    if skipped:
        lines.append(table(["POLICY", "RULE", "SKIPPED"], [[s["policy"], s["rule"], s["skipped"]] for s in skipped]))
    return "\n".join(lines)


@click.command("coverage")
@admin_url_option
@click.option("--fail-under", type=click.FloatRange(0, 100), default=None,
              help="Exit 1 when less than PCT percent of the traffic since start was limited by a rule.")
@click.option("--json", "as_json", is_flag=True, help="Print the engine's report as JSON.")
def coverage(admin_url, fail_under, as_json) -> None:
    """Show the traffic that nothing limits: requests by route that matched no policy, requests
    that matched one but that no rule limited, and rules skipped for a missing key, counted by
    the engine since it started (at most 1,000 routes per table, then "other").

    Exit status: 0, 1 under --fail-under, 3 unreachable, 5 FAIRVISOR_ADMIN_TOKEN refused.
    """
    status, report = call(admin_url, "GET", COVERAGE_PATH)
    if status != 200:
        refused(status, report)
    if as_json:
        echo_json(report)
    else:
        click.echo(render(report))
    if fail_under is not None and covered_pct(report) < fail_under:
        fail(f"fairvisor coverage: {covered_pct(report)}% of the traffic was limited, under --fail-under "
             f"{fail_under:g}%", EXIT_UNDER)
