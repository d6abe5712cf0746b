"""Self-test runs: synthetic requests that prove, on the live path, that each rule in force enforces.

An operator starts a run on the admin listener (token-guarded) and gets a per-run secret, the
bundle hash it is bound to, and a plan: for each rule, a request its selector, `match` and
limit keys accept. `fairvisor selftest` sends those requests through nginx and the shim with
`X-Fairvisor-Selftest: <run>.<secret>.<rule index>.<phase>`. Such a request, when the secret
is valid and unexpired, is decided here and nowhere else:

* only its target rule is applied, on a scratch key (pyengine.state.keys.selftest) and at the
  run's start time (no refill while the test drives it), so no tenant's counter, no metric,
  no decision-log line, no coverage count and no replay sample sees it;
* it is never let through: every answer has a non-2xx status (ALLOWED_STATUS when the rule
  allowed it), which the shim sends itself, so it never reaches an upstream, and a gateway
  asking the decision service never forwards it either;
* phase "probe" applies the rule once; phase "drain" applies it until it rejects (at most
  MAX_DRAIN times) and answers that rejection with the headers a client would get.

A request whose header does not carry a valid secret is ordinary traffic (limited like any).
"""

import hashlib
import hmac
import json
import secrets
import time

from .protocol.messages import Verdict
from .decision.request import SELFTEST_HEADER
from .state import keys
from .decision.verdict import Decision, _allow_headers, render

TTL_S = 600  # a run's secret expires this long after it was issued
RUN_ID_BYTES, SECRET_BYTES = 6, 24  # a run id is 12 hex digits, a secret 32 URL-safe base64 characters


def is_run_id(value: str) -> bool:
    return len(value) == 2 * RUN_ID_BYTES and all(c in "0123456789abcdef" for c in value)


def is_secret(value: str) -> bool:
    return len(value) == SECRET_BYTES * 4 // 3 and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)
MAX_RUNS = 4  # open runs; starting another drops the oldest
MAX_DRAIN = 20_000  # rule applications per drain request (a rule whose limit needs more is "not driven")
DRAIN_BUDGET_S = 0.03  # and at most this long: the engine's loop waits, the shim's admin timeout is 100 ms
ALLOWED_STATUS = 409  # the rule allowed it; never 2xx, so nothing forwards it
MARK = "X-Fairvisor-Selftest"  # response header: allowed | rejected | not_matched | key_missing | ...
SYNTHETIC = "fv-selftest"  # limit-key values the plan fills in
_ALGORITHMS = {"TokenBucketRule": "token_bucket", "LLMRule": "token_bucket_llm", "CostRule": "cost_based",
               "ConcurrencyRule": "concurrency"}


class Run:
    __slots__ = ("id", "digest", "started_at_s", "expires_at_s", "bundle_hash", "targets", "keys")

    def __init__(self, run_id: str, secret: str, now_s: float, bundle):
        self.id = run_id
        self.digest = hashlib.sha256(secret.encode()).digest()
        self.started_at_s = now_s
        self.expires_at_s = now_s + TTL_S
        self.bundle_hash = bundle.hash
        self.targets = rules_of(bundle)  # (policy, rule) by plan index
        self.keys: set[str] = set()  # scratch keys written, deleted when the run ends


def rules_of(bundle) -> list:
    out = []
    for p in bundle.policies:
        for r in p.all_rules:
            out.append((p, r))
    return out


def _unsigned_jwt(claims: dict) -> str:
    import base64

    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# Limit keys the plan can set: kind or key -> (header to set, value when the rule needs any).
_HEADER_KEYS = {"ip:country": ("x-country-code", "ZZ"), "ip:asn": ("x-asn", "AS64512"),
                "ip:type": ("x-asn-type", None), "ip:tor": ("x-tor-exit", None)}
_ALWAYS_PRESENT = ("ip:address", "ip:type", "ip:tor", "ua:bot")  # their extractors never answer None


def _request_for(policy, rule) -> tuple[dict | None, str]:
    """The request the plan sends for `rule`, or None and why no request can reach it."""
    sel = policy.spec.selector
    path = sel.pathExact or sel.pathPrefix or "/"
    if sel.pathExact is None and path.endswith("/"):
        path += SYNTHETIC
    method = sel.methods[0] if sel.methods else ("POST" if _llm(rule) else "GET")
    headers: dict[str, str] = {}
    query: list[tuple[str, str]] = []
    claims: dict[str, str] = {}
    model = None  # llm:model: the body's model
    wanted = {lk: want for lk, _fn, want in rule.match}
    for lk in [lk for lk, _ in rule.key_fns] + list(wanted):
        value = wanted.get(lk, SYNTHETIC)
        kind, _, name = lk.partition(":")
        if kind == "header":
            headers[name.lower()] = value
        elif kind == "query":
            query.append((name, value))
        elif kind == "jwt":
            claims[name] = value
        elif lk == "llm:model":
            model = value
        elif lk in _HEADER_KEYS and (lk in wanted or _HEADER_KEYS[lk][1] is not None):
            header, default = _HEADER_KEYS[lk]
            headers[header] = ({"true": "1", "false": "0"}.get(value, value) if lk == "ip:tor"
                               else value if lk in wanted else default)
        elif lk in _ALWAYS_PRESENT and lk not in wanted:
            continue
        else:
            return None, f"{lk} cannot be set by a synthetic request" + (f" to {value!r}" if lk in wanted else "")
    if claims:
        headers["authorization"] = "Bearer " + _unsigned_jwt(claims)
    cfg = _spec_of(policy, rule).algorithm_config
    for source in (getattr(cfg, "cost_source", None), getattr(cfg, "cost_key", None)):
        if source and source.startswith("header:"):
            headers.setdefault(source[7:].lower(), "1")  # one unit a request: the drain counts them
        elif source and source.startswith("query:"):
            query.append((source[6:], "1"))
    if query:
        from urllib.parse import urlencode

        path += "?" + urlencode(query)
    req = {"method": method, "path": path, "host": sel.hosts[0] if sel.hosts else None, "headers": headers}
    if _llm(rule) or model is not None:
        req["body"] = json.dumps({"model": model or "gpt-4o-mini", "max_tokens": 1,
                                  "messages": [{"role": "user", "content": "fairvisor selftest"}]})
    return req, ""


def _spec_of(policy, rule):
    """The rule's validated spec (its algorithm_config), by name; the fallback limit otherwise."""
    for r in policy.spec.rules:
        if r.name == rule.name:
            return r
    return policy.spec.fallback_limit


def _llm(rule) -> bool:
    return hasattr(rule, "burst_tokens") or getattr(rule, "llm_usd", False)


class Selftests:
    """The engine's open runs. `runs` is empty almost always: the decision path checks only that."""

    def __init__(self, store):
        self.store = store
        self.runs: dict[str, Run] = {}

    def start(self, bundle, now_s: float, skipped_counts: dict, given: tuple[str, str] | None = None) -> dict:
        """given: (run id, secret) another engine of the edge chose (pyengine.admin_peers); checked
        with is_run_id / is_secret by the caller."""
        if len(self.runs) >= MAX_RUNS:
            self.end(min(self.runs.values(), key=lambda r: r.started_at_s).id)
        run_id, secret = given or (secrets.token_hex(RUN_ID_BYTES), secrets.token_urlsafe(SECRET_BYTES))
        run = self.runs[run_id] = Run(run_id, secret, now_s, bundle)
        plan = []
        for i, (p, r) in enumerate(run.targets):
            req, why = _request_for(p, r)
            plan.append({"index": i, "policy": p.id, "rule": r.name, "mode": "shadow" if p.shadow else "enforce",
                         "algorithm": _ALGORITHMS.get(type(r).__name__, "?"),
                         "request": req, "cannot_match": why or None,
                         "skipped_missing_key": int(skipped_counts.get((p.id, r.name), 0))})
        return {"run": run_id, "secret": secret, "header": MARK, "expires_in_s": TTL_S,
                "bundle_version": bundle.version, "bundle_hash": bundle.hash, "rules": plan,
                "allowed_status": ALLOWED_STATUS}

    def end(self, run_id: str) -> bool:
        run = self.runs.pop(run_id, None)
        if run is None:
            return False
        for k in run.keys:
            self.store.delete(k)
            self.store.delete(keys.day(k))  # token_bucket_llm's day counter beside the bucket
        return True

    def expire(self, now_s: float) -> None:
        for run in [r for r in self.runs.values() if r.expires_at_s <= now_s]:
            self.end(run.id)

    def _lookup(self, raw: str, now_s: float):
        """(run, index, phase) for a valid, unexpired header value; None otherwise."""
        parts = raw.strip().split(".")
        if len(parts) != 4:
            return None
        run = self.runs.get(parts[0])
        if run is None or run.expires_at_s <= now_s:
            return None
        if not hmac.compare_digest(hashlib.sha256(parts[1].encode()).digest(), run.digest):
            return None
        if not (parts[2].isascii() and parts[2].isdigit()) or len(parts[2]) > 6 or parts[3] not in ("probe", "drain"):
            return None
        return run, int(parts[2]), parts[3]

    def decide(self, bundle, view, now_s: float, surface: int, llm_format):
        """(Verdict, Decision) of a self-test request, or None for ordinary traffic."""
        raw = view.header(SELFTEST_HEADER)
        if raw is None:
            return None
        hit = self._lookup(raw, now_s)
        if hit is None:
            return None
        run, index, phase = hit
        if run.bundle_hash != bundle.hash:
            return _answer("bundle_changed")
        if index >= len(run.targets):
            return _answer("no_such_rule")
        policy, rule = run.targets[index]
        policies = bundle.routes.plan(view.method, view.host, view.path).policies
        if policy not in policies:
            return _answer("not_matched")
        if rule.match and not rule.matches(view):
            return _answer("match_failed")
        key = rule.state_key(view)
        if key is None:
            return _answer("key_missing")
        key = keys.selftest(run.id, key)
        run.keys.add(key)
        at_s = run.started_at_s  # frozen: the bucket does not refill while the test drives it
        outcome, _ = rule.apply(view, key, at_s)
        applied = 1
        deadline = time.perf_counter() + DRAIN_BUDGET_S
        while phase == "drain" and outcome.allowed and applied < MAX_DRAIN:
            outcome, _ = rule.apply(view, key, at_s)
            applied += 1
            if not applied & 255 and time.perf_counter() > deadline:
                break
        count = ("X-Fairvisor-Selftest-Applied", str(applied))
        if outcome.allowed:
            d = Decision(rule=rule.name, policy_id=policy.id, outcome=outcome if outcome.limit else None)
            headers = _allow_headers(d) + [MARK, "allowed", *count]
            d.status, d.reason = ALLOWED_STATUS, "selftest_allowed"
            return Verdict(status=ALLOWED_STATUS, headers=headers, body=""), d
        d = Decision(status=429, reason=outcome.reason, rule=rule.name, policy_id=policy.id,
                     outcome=outcome if outcome.limit else None, retry_after_s=outcome.retry_after_s)
        v = render(d, surface, llm_format)  # exactly what a rejected client gets, plus the marks
        return Verdict(status=v.status, headers=list(v.headers) + [MARK, "rejected", *count], body=v.body), d


def _answer(result: str) -> tuple[Verdict, Decision]:
    reason = f"selftest_{result}"
    body = json.dumps({"status": ALLOWED_STATUS, "reason": reason})
    return (Verdict(status=ALLOWED_STATUS, headers=[MARK, result, "Content-Type", "application/problem+json"],
                    body=body), Decision(status=ALLOWED_STATUS, reason=reason))
