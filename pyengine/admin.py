"""The admin listener's endpoints (contract §8): the token check, then one route table.

nginx sends every request of the admin listener here unchanged (the shim's `admin_route`), so
the token is checked in one place and an endpoint is one entry in ROUTES: `/status` and the
`/v1/admin/` API go there too, nothing in nginx or the shim changes for them.
"""

import hashlib
import hmac
import time

import msgspec

from . import admin_api
from .admin_peers import PEERS_HEADER, peer_query
from .protocol.messages import Admin, Reply

_json = msgspec.json.Encoder()
_READ_METHODS = (b"GET", b"HEAD")


def _problem(status: int, title: str, reason: str, headers: list[str] | None = None) -> Reply:
    body = _json.encode({"status": status, "title": title, "reason": reason}).decode()
    return Reply(status=status, content_type="application/problem+json", body=body, headers=headers or [])


UNAUTHORIZED = _problem(401, "Unauthorized", "admin_token_required", ["WWW-Authenticate", 'Bearer realm="fairvisor-admin"'])
NOT_FOUND = _problem(404, "Not Found", "not_found")
METHOD_NOT_ALLOWED = _problem(405, "Method Not Allowed", "method_not_allowed", ["Allow", "GET, HEAD"])


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class AdminApi:
    """Answers Admin frames for one engine; `token` None = no token required (loopback only)."""

    def __init__(self, engine, token: str | None):
        self.engine = engine
        # Compared as sha256 digests with compare_digest: the time taken says nothing about the
        # token, not even its length.
        self._token_digest = _digest(token.encode()) if token else None
        self._token = token
        self._actor: str | None = None  # admin_api.actor_of(token), computed at the first change
        self.routes = {
            "/metrics": engine.scrape,
            "/readyz": self.readiness,
            "/livez": _live,
        }

    def authorized(self, authorization: bytes | None) -> bool:
        if self._token_digest is None:
            return True
        scheme, _, credentials = (authorization or b"").strip().partition(b" ")
        given = _digest(credentials.strip())
        # Both always compared, so a wrong scheme costs the same time as a wrong token.
        return hmac.compare_digest(given, self._token_digest) & (scheme.lower() == b"bearer")

    def handle(self, msg: Admin) -> Reply:
        if not self.authorized(msg.authorization):
            return UNAUTHORIZED
        path = msg.uri.partition(b"?")[0].decode("latin-1")
        route = self.routes.get(path)
        if route is None:
            return self._console(msg, path)
        if msg.method not in _READ_METHODS:
            return METHOD_NOT_ALLOWED
        return route()

    def readiness(self) -> Reply:
        """The admin /readyz: the public body (Engine.health) plus uptime, reload errors, the
        policy's source, the state backend and the top rejected keys."""
        e = self.engine
        b = e.bundle
        if e.fleet is not None:
            state = e.fleet.readiness()
        else:
            state = {"backend": "memory", "status": "ok", "keys": len(e.store),
                     "durable": e.snapshots is not None and e.snapshots.enabled}
        if b is None:
            body = {"status": "not_ready", "ready": False, "reason": "no_policy_loaded", "errors": e.last_errors,
                    "state": state}
            return Reply(status=503, content_type="application/json", body=_json.encode(body).decode())
        # Still ready when the shared store is away: the engine enforces from local counters,
        # and pulling it out of a load balancer would only move its traffic to others.
        body = {"status": "degraded" if state["status"] == "degraded" else "ok", "ready": True,
                "policy_version": b.version, "policy_hash": b.hash,
                "uptime_s": int(time.time() - e.started_at_s), "state": state}
        if e.last_errors:
            body["last_reload_errors"] = e.last_errors
        if e.policy_source == "last_good":  # the configured file was refused at start
            body["policy_source"] = "last_good"
        body["top_rejected_keys"] = e.decision_log.top_rejected()
        return Reply(status=200, content_type="application/json", body=_json.encode(body).decode())

    def _console(self, msg: Admin, path: str) -> Reply:
        """/status, /v1/admin/summary and the /v1/admin/ API (pyengine.admin_api), with the
        token's fingerprint as the actor its audit records name."""
        routes = self.engine.admin_routes
        if not (path.startswith(admin_api.PREFIX) or path in routes.extra):
            return NOT_FOUND
        if self._actor is None:
            self._actor = admin_api.actor_of(self._token, self.engine.decision_log.hasher)
        # The query too: the operator endpoints read theirs (pyengine.operator_api).
        method = msg.method.decode("latin-1")
        status, ctype, body = routes.handle(method, msg.uri.decode("latin-1"), msg.body, self._actor)
        if self.engine.settings.engines > 1:  # engines 1.. of this edge get the change too (admin_peers)
            query = peer_query(method, path, status, body)
            if query is not None:
                return Reply(status=status, content_type=ctype, body=body, headers=[PEERS_HEADER, query])
        return Reply(status=status, content_type=ctype, body=body)


def _live() -> Reply:
    return Reply(status=200, content_type="text/plain", body="ok\n")
