"""HTTP calls to the edge's admin listener (--admin-url), with FAIRVISOR_ADMIN_TOKEN as Bearer."""

import http.client
import json
import os
import urllib.parse

DEFAULT_ADMIN_URL = "http://127.0.0.1:9090"  # FAIRVISOR_ADMIN_LISTEN's default (contract §5)
EXIT_UNREACHABLE = 3
EXIT_UNAUTHORIZED = 5
TOKEN_ENV = "FAIRVISOR_ADMIN_TOKEN"


class AdminError(Exception):
    """The admin listener could not answer; `exit_code` is what the command exits with."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _headers(extra: dict | None = None) -> dict:
    # The token comes from the environment, never from a flag: ps shows flags.
    token = os.environ.get(TOKEN_ENV)
    h = {"Authorization": f"Bearer {token}"} if token else {}
    h.update(extra or {})
    return h


def call(admin_url: str, method: str, path: str, body: bytes | None = None, timeout_s: float = 5.0,
         headers: dict | None = None) -> tuple[int, bytes]:
    """(status, body) of one admin request; AdminError when unreachable or refused (401)."""
    parts = urllib.parse.urlsplit(admin_url or DEFAULT_ADMIN_URL)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    target = parts.path.rstrip("/") + path
    try:
        conn = conn_cls(parts.netloc, timeout=timeout_s)
        conn.request(method, target, body=body, headers=_headers(headers))
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        raise AdminError(f"admin listener {admin_url}: {exc}", EXIT_UNREACHABLE) from None
    if resp.status == 401:
        raise AdminError(f"admin listener {admin_url}: 401, it needs {TOKEN_ENV} (absent or wrong)",
                         EXIT_UNAUTHORIZED)
    return resp.status, data


def get_json(admin_url: str, path: str, timeout_s: float = 5.0):
    """The JSON body of GET `path`; AdminError unless it answers 200 with JSON."""
    status, data = call(admin_url, "GET", path, timeout_s=timeout_s)
    if status != 200:
        raise AdminError(f"admin listener {admin_url}: GET {path} answered {status}: is this the admin "
                         "listener (FAIRVISOR_ADMIN_LISTEN), and is the engine running?", EXIT_UNREACHABLE)
    try:
        return json.loads(data)
    except ValueError:
        raise AdminError(f"admin listener {admin_url}: GET {path}: not JSON", EXIT_UNREACHABLE) from None
