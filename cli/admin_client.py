"""The admin listener's HTTP client for CLI commands: --admin-url, FAIRVISOR_ADMIN_TOKEN, JSON in and out."""

import json
import os
import re

import click

DEFAULT_ADMIN_URL = "http://127.0.0.1:9090"  # FAIRVISOR_ADMIN_LISTEN's default (contract §5)
TOKEN_ENV = "FAIRVISOR_ADMIN_TOKEN"
TIMEOUT_S = 5.0
EXIT_REFUSED = 1  # the edge answered, and refused the request (shown with its reasons)
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNAUTHORIZED = 5  # as `fairvisor status`: the admin listener wants the token (absent or wrong)
_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def auth_headers() -> dict[str, str]:
    """Authorization for the admin listener, from FAIRVISOR_ADMIN_TOKEN (never a flag: ps shows flags)."""
    token = os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


def admin_url_option(fn):
    return click.option("--admin-url", default=DEFAULT_ADMIN_URL, show_default=True, metavar="URL",
                        help="The edge's admin listener (FAIRVISOR_ADMIN_LISTEN). The token comes from "
                             f"{TOKEN_ENV}, never a flag (other users see flags in ps).")(fn)


def parse_duration(text: str) -> int:
    """'90', '90s', '30m', '2h', '7d' -> seconds; click.BadParameter otherwise."""
    m = _DURATION.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise click.BadParameter(f"expected a positive duration such as 90s, 30m, 2h or 7d, got {text!r}")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def parse_scope(text: str) -> tuple[str, str]:
    """'KEY=VALUE' (split at the first '='; limit keys hold no '=') -> (key, value)."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise click.BadParameter(f"expected KEY=VALUE such as jwt:org_id=acme, got {text!r}")
    return key, value


def call(admin_url: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """(status, JSON body) of one admin request; exits 3 when unreachable, 5 on 401."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(admin_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        click.echo(f"--admin-url: expected http://host:port, got {admin_url!r}", err=True)
        raise SystemExit(EXIT_USAGE)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    headers = {"Accept": "application/json", **auth_headers()}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn = conn_cls(parts.netloc, timeout=TIMEOUT_S)
        conn.request(method, parts.path.rstrip("/") + path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        click.echo(f"{admin_url}: cannot reach the admin listener: {exc}", err=True)
        raise SystemExit(EXIT_UNREACHABLE) from None
    if resp.status == 401:
        click.echo(f"{admin_url}: 401 Unauthorized: set {TOKEN_ENV} to the edge's admin token", err=True)
        raise SystemExit(EXIT_UNAUTHORIZED)
    try:
        out = json.loads(raw) if raw else {}
    except ValueError:
        click.echo(f"{admin_url}{path}: answered {resp.status} without JSON: is this the admin listener?", err=True)
        raise SystemExit(EXIT_UNREACHABLE) from None
    return resp.status, out


def refused(status: int, problem: dict) -> None:
    """Print an API refusal (every bad field with its JSON path) and exit 1."""
    lines = [f"refused ({status} {problem.get('reason', '')}): {problem.get('detail', '')}".rstrip(": ")]
    lines += [f"  {e['path']}: {e['message']}" for e in problem.get("errors", ())]
    click.echo("\n".join(lines), err=True)
    raise SystemExit(EXIT_REFUSED)


def remove_item(admin_url: str, collection_path: str, item_id: str) -> None:
    """DELETE one runtime item (kill switch, override) by id; refusals exit 1."""
    status, out = call(admin_url, "DELETE", f"{collection_path}/{item_id}")
    if status != 200:
        refused(status, out)
    click.echo(f"removed {item_id}")
