"""`fairvisor kill-switch add|list|remove`: runtime kill switches through the admin API (contract §5, §8)."""

import click

from .admin_client import admin_url_option, call, parse_duration, parse_scope, refused, remove_item
from .output import echo_json, table

PATH = "/v1/admin/kill-switches"


@click.group("kill-switch")
def kill_switch() -> None:
    """Refuse one key value's requests at once, without editing the policy.

    A switch acts within a second on every request whose limit key has the value (429,
    kill_switch_active), survives engine restarts and is written to the decision log with the
    token's fingerprint. The reason is for operators; clients never see it.
    """


@kill_switch.command("add")
@click.option("--scope", required=True, metavar="KEY=VALUE", help="A limit key and its value, e.g. jwt:org_id=acme.")
@click.option("--reason", help="Why (operators only: logs, status page).")
@click.option("--ttl", metavar="DURATION", help="Ends after this long: 90s, 30m, 2h, 7d. Default: until removed.")
@click.option("--route", metavar="PREFIX", help="Only under this path prefix.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@admin_url_option
def add(scope, reason, ttl, route, as_json, admin_url) -> None:
    """Add a kill switch; prints its id (for `remove`)."""
    key, value = parse_scope(scope)
    body = {"scope_key": key, "scope_value": value}
    if reason:
        body["reason"] = reason
    if ttl:
        body["ttl_s"] = parse_duration(ttl)
    if route:
        body["route"] = route
    status, out = call(admin_url, "POST", PATH, body)
    if status != 201:
        refused(status, out)
    if as_json:
        echo_json(out)
        return
    ks = out["kill_switch"]
    click.echo(f"{ks['id']}  {ks['scope_key']}={ks['scope_value']}  until {ks['expires_at'] or 'removed'}")
    for w in out.get("warnings", ()):
        click.echo(f"warning: {w}", err=True)


@kill_switch.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@admin_url_option
def list_(as_json, admin_url) -> None:
    """The runtime kill switches in force (the bundle's own are in the policy file)."""
    status, out = call(admin_url, "GET", PATH)
    if status != 200:
        refused(status, out)
    if as_json:
        echo_json(out)
        return
    rows = [[s["id"], f"{s['scope_key']}={s['scope_value']}", s["route"] or "", s["expires_at"] or "-",
             s["created_by"], s["reason"] or ""] for s in out["kill_switches"]]
    click.echo(table(["ID", "SCOPE", "ROUTE", "EXPIRES", "BY", "REASON"], rows) if rows else "no runtime kill switches")


@kill_switch.command("remove")
@click.argument("switch_id", metavar="ID")
@admin_url_option
def remove(switch_id, admin_url) -> None:
    """Remove a runtime kill switch by id."""
    remove_item(admin_url, PATH, switch_id)
