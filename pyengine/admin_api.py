"""The admin API under /v1/admin/ (contract §8): runtime kill switches and limit overrides, as JSON.

`AdminRoutes.handle(method, path, body, actor)` -> (status, content type, body text). The
admin listener checks the token before calling it and passes `actor`, the token's fingerprint
(`actor_of`), which every change records in the decision log. Errors are problem+json with
`errors: [{path, message}]` naming the bad field by JSON path. docs/admin-api.md and
docs/admin-api.openapi.json describe every route.
"""

import logging

import msgspec

from . import operator_api
from .overlay import model
from .overlay.overrides import targets
from .overlay.registry import Full

log = logging.getLogger("fairvisor.admin")

PREFIX = "/v1/admin/"
JSON = "application/json"
PROBLEM = "application/problem+json"
ACTOR_HEX_CHARS = 12
NO_TOKEN = "no-token"  # the actor when FAIRVISOR_ADMIN_TOKEN is unset (loopback listener)
_json = msgspec.json.Encoder()
_TITLES = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           413: "Content Too Large", 503: "Service Unavailable"}


def actor_of(token: str | None, hasher) -> str:
    """Which token made a change, as the decision log shows it: a keyed hash (pyengine.decision.key_hash's
    install secret), so the log never holds the token nor lets a weak one be guessed from it."""
    if not token:
        return NO_TOKEN
    return "token:" + hasher.digest("fairvisor-admin-token\x00" + token)[:ACTOR_HEX_CHARS]


def _ok(status: int, body) -> tuple[int, str, str]:
    return status, JSON, _json.encode(body).decode()


def problem(status: int, reason: str, detail: str | None = None, errors=None) -> tuple[int, str, str]:
    body = {"status": status, "title": _TITLES.get(status, "Error"), "reason": reason}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = [{"path": p, "message": m} for p, m in errors]
    return status, PROBLEM, _json.encode(body).decode()


class AdminRoutes:
    """The /v1/admin/ routes of one engine (the /status page adds its own, pyengine.console)."""

    def __init__(self, engine):
        self.engine = engine
        self.extra: dict[str, object] = {}  # GET-only routes of other modules: path -> fn() -> reply

    def handle(self, method: str, path: str, body: bytes | None, actor: str) -> tuple[int, str, str]:
        try:
            return self._route(method, path, body, actor)
        except OSError as exc:  # the state dir refused the write: nothing was changed
            log.error("admin change not saved: %s", exc)
            return problem(503, "state_write_failed", "the change could not be saved in the state dir, "
                                                      "so it was not applied")

    def _route(self, method, path, body, actor):
        answer = operator_api.route(self.engine, method, path, body)  # coverage, bundle, replay, selftest
        if answer is not None:
            return answer
        path, _, query = path.partition("?")
        if path in self.extra:
            if method not in ("GET", "HEAD"):
                return problem(405, "method_not_allowed", "GET only")
            return self.extra[path]()
        if not path.startswith(PREFIX):
            return problem(404, "not_found")
        resource, _, item = path[len(PREFIX):].partition("/")
        kind = _KINDS.get(resource)
        if kind is None or "/" in item:
            return problem(404, "not_found")
        if not item:
            if method == "GET":
                return self._list(kind)
            if method == "POST":
                return self._add(kind, body, actor, _given_id(query))
            return problem(405, "method_not_allowed", "GET or POST")
        if method == "GET":
            rec = self._records(kind).get(item)
            return _ok(200, {kind.one: kind.shown(rec)}) if rec else problem(404, "not_found", f"no {kind.one} {item}")
        if method == "DELETE":
            return self._remove(kind, item, actor)
        return problem(405, "method_not_allowed", "GET or DELETE")

    def _records(self, kind) -> dict:
        o = self.engine.overlay
        return o.switches if kind is SWITCHES else o.overrides

    def _list(self, kind):
        now_s = self.engine.clock.now_s()
        recs = sorted(self._records(kind).values(), key=lambda r: r.created_at_s)
        live = [kind.shown(r) for r in recs if r.expires_at_s is None or r.expires_at_s > now_s]
        return _ok(200, {kind.many: live})

    def _add(self, kind, body, actor, given_id: str | None = None):
        """given_id (`?id=`): the record takes it, so that every engine of an edge (FAIRVISOR_ENGINES,
        fairvisor.fanout) holds the change under the id engine 0 chose."""
        e = self.engine
        now_s = e.clock.now_s()
        try:
            rec = kind.parse(body, now_s, actor)
        except model.InvalidRequest as exc:
            return problem(400, "invalid_request", errors=exc.problems)
        if given_id is not None:
            if not model.is_id(given_id, kind.prefix):
                return problem(400, "invalid_request", f"id: expected {kind.prefix} and {model.ID_HEX_CHARS} hex digits")
            if given_id in self._records(kind):
                return problem(409, "exists", f"{kind.one} {given_id} exists")
            rec = msgspec.structs.replace(rec, id=given_id)
        warnings = []
        out = {}
        if kind is SWITCHES:
            try:
                e.overlay.add_switch(rec)
            except Full as exc:
                return problem(409, "too_many", str(exc))
            b = e.bundle
            if b is not None and b.kill_switches_overridden(now_s):
                warnings.append("the bundle's kill_switch_override is in force: no kill switch acts until it ends")
        else:
            try:
                e.overlay.add_override(rec)
            except Full as exc:
                return problem(409, "too_many", str(exc))
            out["applies_to"] = targets(e.bundle, rec)
            if not out["applies_to"]:
                warnings.append(f"no rule of the policy in force is keyed on {rec.scope_key} alone"
                                + (f" in policy {rec.policy}" if rec.policy else "")
                                + (f" named {rec.rule}" if rec.rule else "")
                                + ": it acts once a bundle has one")
        e.overlay_changed((rec.scope_key, rec.scope_value) if kind is OVERRIDES else None)
        e.decision_log.admin(now_s, kind.one + "_added", rec, actor)
        out[kind.one] = kind.shown(rec)
        out["warnings"] = warnings
        return _ok(201, out)

    def _remove(self, kind, item_id, actor):
        e = self.engine
        o = e.overlay
        rec = o.remove_switch(item_id) if kind is SWITCHES else o.remove_override(item_id)
        if rec is None:
            return problem(404, "not_found", f"no {kind.one} {item_id}")
        e.overlay_changed((rec.scope_key, rec.scope_value) if kind is OVERRIDES else None)
        e.decision_log.admin(e.clock.now_s(), kind.one + "_removed", rec, actor)
        return _ok(200, {"removed": kind.shown(rec)})


def _given_id(query: str) -> str | None:
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "id":
            return value
    return None


class _Kind:
    def __init__(self, one, many, prefix, parse, shown):
        self.one, self.many, self.prefix, self.parse, self.shown = one, many, prefix, parse, shown


SWITCHES = _Kind("kill_switch", "kill_switches", model.SWITCH_ID_PREFIX, model.switch_from_json, model.switch_json)
OVERRIDES = _Kind("override", "overrides", model.OVERRIDE_ID_PREFIX, model.override_from_json, model.override_json)
_KINDS = {"kill-switches": SWITCHES, "overrides": OVERRIDES}
