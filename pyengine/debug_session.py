"""Debug sessions (FAIRVISOR_DEBUG_SESSION_SECRET): a signed cookie that makes the edge say, in
response headers, which policy and rule decided each of that browser's requests.

* `POST /v1/debug/session` with `X-Fairvisor-Debug-Secret: <secret>` sets the cookie
  `fv_dbg=<expiry_s>.<signature>`; the signature is HMAC-SHA256 over the expiry with a key derived
  from the secret, so the edge keeps no session state and a changed secret ends every session.
* Requests carrying a valid, unexpired cookie get the X-Fairvisor-Debug-* headers (built from
  the explain trace of the same decision: pyengine.explain.trace).
* `POST` or `GET /v1/debug/logout` expires the cookie.
Unset secret: both endpoints answer 404, and the shim is not even asked for the Cookie header.
"""

import hashlib
import hmac

import msgspec

from .protocol.messages import Verdict

COOKIE = "fv_dbg"
SECRET_HEADER = "x-fairvisor-debug-secret"
TTL_S = 900  # a session lasts 15 minutes; start a new one to go on
_KEY_LABEL = b"fairvisor debug session v1"
_MAX_COOKIE_CHARS = 128  # "<10 digits>.<64 hex>": anything much longer is not ours
_json = msgspec.json.Encoder()

# Endpoint kinds (DebugSession.kind).
SESSION, LOGOUT = 0, 1


def _answer(status: int, body: dict, *headers: str) -> Verdict:
    return Verdict(status=status, headers=["Content-Type", "application/json", "Cache-Control", "no-store",
                                           *headers], body=_json.encode(body).decode())


class DebugSessions:
    __slots__ = ("_secret", "_key")

    def __init__(self, secret: str):
        self._secret = secret.encode()
        # A derived key: the secret itself never signs anything a client can see.
        self._key = hmac.new(self._secret, _KEY_LABEL, hashlib.sha256).digest()

    def _sign(self, expiry_s: int) -> str:
        return hmac.new(self._key, str(expiry_s).encode(), hashlib.sha256).hexdigest()

    def cookie_value(self, now_s: float) -> str:
        expiry_s = int(now_s) + TTL_S
        return f"{expiry_s}.{self._sign(expiry_s)}"

    def valid(self, cookie_header: str | None, now_s: float) -> bool:
        """Whether a Cookie header carries an fv_dbg that this secret signed and that has not expired."""
        if not cookie_header or COOKIE not in cookie_header:
            return False
        for part in cookie_header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name == COOKIE and len(value) <= _MAX_COOKIE_CHARS:
                expiry, dot, sig = value.partition(".")
                if dot and expiry.isdigit() and int(expiry) > now_s and \
                        hmac.compare_digest(sig.encode(), self._sign(int(expiry)).encode()):
                    return True
        return False

    def endpoint(self, kind: int, method: str, secret: bytes | None, now_s: float) -> Verdict:
        """The answer to /v1/debug/session (kind SESSION) or /v1/debug/logout (LOGOUT)."""
        if kind == LOGOUT:
            if method not in ("POST", "GET"):
                return _answer(405, {"error": "method_not_allowed"}, "Allow", "GET, POST")
            return _answer(200, {"debug_session": "ended"},
                           "Set-Cookie", f"{COOKIE}=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
                                         "HttpOnly; SameSite=Strict")
        if method != "POST":
            return _answer(405, {"error": "method_not_allowed"}, "Allow", "POST")
        # Constant time over the secret's bytes: the comparison leaks nothing of where they differ.
        if not secret or not hmac.compare_digest(secret, self._secret):
            return _answer(401, {"error": "unauthorized", "detail": "X-Fairvisor-Debug-Secret is missing or wrong"})
        return _answer(200, {"debug_session": "started", "expires_in_s": TTL_S},
                       "Set-Cookie", f"{COOKIE}={self.cookie_value(now_s)}; Path=/; Max-Age={TTL_S}; HttpOnly; "
                                     "SameSite=Strict")


NOT_FOUND = _answer(404, {"error": "not_found", "detail": "debug sessions are off (FAIRVISOR_DEBUG_SESSION_SECRET)"})


def debug_headers(trace: dict, latency_us: int) -> list[str]:
    """X-Fairvisor-Debug-* from an explain trace: who decided, how, in what mode, and how fast.

    Decision is allow | warn | throttle | reject, or would_reject when a shadow policy would have
    refused a request that was let through. Policy and Rule name the deciding pair ("none" when
    no limiter applied)."""
    v = trace["verdict"]
    action, policy, rule, reason = v["action"], v["policy"], v["rule"], v["reason"]
    shadow = next((p for p in trace["policies"] if p.get("outcome") == "would_reject"), None)
    if action == "allow" and shadow is not None:
        action, policy = "would_reject", shadow["policy"]
        hit = next((r for r in shadow["rules"] if r.get("status") == "reject"), None)
        rule = hit["rule"] if hit else "none"
        reason = (hit or {}).get("outcome", {}).get("reason", "")
    mode = "shadow" if trace.get("global_shadow") else "enforce"
    for p in trace["policies"]:
        if p["policy"] == policy:
            mode = p["mode"]
    return ["X-Fairvisor-Debug-Policy", policy or "none", "X-Fairvisor-Debug-Rule", rule or "none",
            "X-Fairvisor-Debug-Decision", action, "X-Fairvisor-Debug-Mode", mode,
            "X-Fairvisor-Debug-Reason", reason or "none", "X-Fairvisor-Debug-Latency-Us", str(latency_us)]


def loggable(trace: dict, log_keys: str) -> dict:
    """The explain trace for the debug log: without the response body, and without raw key
    values unless FAIRVISOR_LOG_KEYS=raw (like the decision log)."""
    out = {k: v for k, v in trace.items() if k != "verdict"}
    out["verdict"] = {k: v for k, v in trace["verdict"].items() if k not in ("body", "headers")}
    if log_keys != "raw":
        out["policies"] = [{**p, "rules": [{k: v for k, v in r.items() if k != "key"} for r in p.get("rules", [])]}
                           for p in trace["policies"]]
    return out


def with_headers(verdict: Verdict, extra: list[str]) -> Verdict:
    """A copy with `extra` headers appended (verdicts may be shared: never mutate one)."""
    return msgspec.structs.replace(verdict, headers=verdict.headers + extra)


def without_reason(verdict: Verdict) -> Verdict:
    """FAIRVISOR_HIDE_REASON: the same verdict without X-Fairvisor-Reason (the body keeps its reason
    code for API clients; operators who hide the header usually mean browsers and scrapers)."""
    h = verdict.headers
    kept = [x for i in range(0, len(h), 2) if h[i] != "X-Fairvisor-Reason" for x in (h[i], h[i + 1])]
    return msgspec.structs.replace(verdict, headers=kept)
