"""`fairvisor override add|list|remove`: limit overrides for one key value through the admin API (contract §8)."""

import click

from .admin_client import admin_url_option, call, parse_duration, parse_scope, refused, remove_item
from .output import echo_json, table

PATH = "/v1/admin/overrides"


@click.group("override")
def override() -> None:
    """Give one key value other limits until a time, without editing the policy.

    For example `fairvisor override add --scope jwt:org_id=acme --multiplier 2 --ttl 3d`:
    org acme gets twice the limits of every rule keyed on jwt:org_id alone, for three days.
    Overrides act within a second, survive restarts and are written to the decision log.
    """


def _limit(ctx, param, values):
    out = {}
    for text in values:
        name, sep, number = text.partition("=")
        try:
            out[name] = float(number)
        except ValueError:
            raise click.BadParameter(f"expected FIELD=NUMBER such as tokens_per_minute=20000, got {text!r}") from None
        if not sep:
            raise click.BadParameter(f"expected FIELD=NUMBER, got {text!r}")
    return out


@override.command("add")
@click.option("--scope", required=True, metavar="KEY=VALUE", help="A limit key and its value, e.g. jwt:org_id=acme.")
@click.option("--multiplier", type=float, help="Scale every limit of the rules (0.001 to 1000).")
@click.option("--limit", "limits", multiple=True, callback=_limit, metavar="FIELD=NUMBER",
              help="Or set one limit absolutely (repeatable): tokens_per_second, burst, tokens_per_minute, "
                   "burst_tokens, tokens_per_day, budget.")
@click.option("--ttl", metavar="DURATION", help="Ends after this long: 90s, 30m, 2h, 7d.")
@click.option("--until", metavar="RFC3339", help="Or ends at this time, e.g. 2030-01-03T18:00:00Z.")
@click.option("--policy", help="Only this policy's rules.")
@click.option("--rule", help="Only this rule (with --policy).")
@click.option("--reason", help="Why (operators only).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@admin_url_option
def add(scope, multiplier, limits, ttl, until, policy, rule, reason, as_json, admin_url) -> None:
    """Add an override; prints its id and the rules it applies to."""
    key, value = parse_scope(scope)
    body = {"scope_key": key, "scope_value": value}
    for name, v in (("multiplier", multiplier), ("policy", policy), ("rule", rule), ("reason", reason),
                    ("expires_at", until)):
        if v is not None:
            body[name] = v
    if limits:
        body["limits"] = limits
    if ttl:
        body["ttl_s"] = parse_duration(ttl)
    status, out = call(admin_url, "POST", PATH, body)
    if status != 201:
        refused(status, out)
    if as_json:
        echo_json(out)
        return
    o = out["override"]
    click.echo(f"{o['id']}  {o['scope_key']}={o['scope_value']}  until {o['expires_at']}  "
               f"applies to {', '.join(out['applies_to']) or 'no rule yet'}")
    for w in out.get("warnings", ()):
        click.echo(f"warning: {w}", err=True)


def _change(o: dict) -> str:
    if o["multiplier"] is not None:
        return f"x{o['multiplier']:g}"
    return ", ".join(f"{k}={v:g}" for k, v in o["limits"].items())


@override.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@admin_url_option
def list_(as_json, admin_url) -> None:
    """The limit overrides in force."""
    status, out = call(admin_url, "GET", PATH)
    if status != 200:
        refused(status, out)
    if as_json:
        echo_json(out)
        return
    rows = [[o["id"], f"{o['scope_key']}={o['scope_value']}", "/".join(x for x in (o["policy"], o["rule"]) if x) or "*",
             _change(o), o["expires_at"], o["created_by"]] for o in out["overrides"]]
    click.echo(table(["ID", "SCOPE", "RULES", "CHANGE", "EXPIRES", "BY"], rows) if rows else "no limit overrides")


@override.command("remove")
@click.argument("override_id", metavar="ID")
@admin_url_option
def remove(override_id, admin_url) -> None:
    """Remove an override by id: the bundle's limits apply again."""
    remove_item(admin_url, PATH, override_id)
