"""GET /v1/admin/summary: everything the status page shows, as one JSON object (docs/admin-api.md#summary).

Built on request from bounded structures (pyengine.console.stats, the overlay, the breaker
index): its cost does not grow with traffic, only with what it lists (at most a few thousand
entries), and the page polls it every 2 s.
"""

import os
import time

import msgspec

from ..decision_log import shown_values
from ..guards.breaker import CLOSED, OPEN
from ..overlay.model import rfc3339
from ..overlay.overrides import KeyedLimiter
from ..decision.rules import CostRule, LLMRule
from ..state import keys

_json = msgspec.json.Encoder()
TOP_N = 10


def _limiter_for(limiter, key: str, now_s: float):
    if limiter.__class__ is KeyedLimiter:
        o = limiter.by_key.get(key)
        return o[1] if o is not None and now_s < o[0] else limiter.base
    return limiter


def _budgets(engine, now_s: float) -> list[dict]:
    out = []
    show = engine.decision_log.hasher.show
    for rule, key, start_s, spent, prev_rate in list(engine.console.budgets.values()):
        if rule.__class__ is CostRule:
            budget, bkey = _limiter_for(rule.budget, key, now_s), key
            unit = "usd_micros" if rule.llm_usd else "micros"
        elif rule.__class__ is LLMRule:
            lim = _limiter_for(rule.limiter, key, now_s)
            budget, bkey, unit = lim.tpd, keys.day(key), "tokens"
            if budget is None:
                continue
        else:
            continue
        total = budget._budget
        left = budget.peek(bkey, now_s)
        elapsed_s = now_s - start_s
        # Spend per second over the current window; the last window's while this one is young.
        rate = prev_rate if elapsed_s < 10 and prev_rate is not None else spent / max(elapsed_s, 1.0)
        out.append({"policy": rule.policy_id, "rule": rule.name, "key": show(shown_values(key)), "unit": unit,
                    "limit": total, "used": total - max(left, 0) if left < total else 0,
                    "used_pct": round(100 * (total - left) / total, 1),
                    "exhausted_in_s": int(left / rate) if rate > 0 and left > 0 else (0 if left <= 0 else None)})
    out.sort(key=lambda b: -b["used_pct"])
    return out[:TOP_N]


def _breakers(engine, now_s: float) -> list[dict]:
    out = []
    b = engine.bundle
    guards = {p.id: p.guards for p in (b.policies if b is not None else ()) if p.guards is not None}
    show = engine.decision_log.hasher.show
    for key, pid in list(engine.tripped.items())[:200]:
        g = guards.get(pid)
        if g is None or g.breaker is None or keys.is_shadow(key):
            continue
        state, *_ = g.breaker.state_of(engine.store.get(key), now_s)
        if state == CLOSED:
            continue
        out.append({"policy": pid, "key": show(keys.parse(key).fields[1]),
                    "state": "open" if state == OPEN else "half_open"})
    return out


def _switches(engine, now_s: float) -> list[dict]:
    show = engine.decision_log.hasher.show
    out = []
    b = engine.bundle
    for ks in b.kill_switches if b is not None else ():
        if ks.expires_at_s is None or ks.expires_at_s > now_s:
            out.append({"id": "bundle", "scope_key": "", "key": show(ks.value), "reason": ks.reason,
                        "route": ks.route, "expires_at": rfc3339(ks.expires_at_s), "source": "bundle"})
    for rec in engine.overlay.switches.values():
        if rec.expires_at_s is None or rec.expires_at_s > now_s:
            out.append({"id": rec.id, "scope_key": rec.scope_key, "key": show(rec.scope_value), "reason": rec.reason,
                        "route": rec.route, "expires_at": rfc3339(rec.expires_at_s), "source": "admin"})
    return out[:500]


def _overrides(engine, now_s: float) -> list[dict]:
    show = engine.decision_log.hasher.show
    return [{"id": r.id, "scope_key": r.scope_key, "key": show(r.scope_value),
             "rules": "/".join(x for x in (r.policy, r.rule) if x) or "*",
             "change": f"x{r.multiplier:g}" if r.multiplier is not None
             else ", ".join(f"{k}={v:g}" for k, v in (r.limits or {}).items()),
             "expires_at": rfc3339(r.expires_at_s), "reason": r.reason}
            for r in list(engine.overlay.overrides.values())[:500] if r.expires_at_s > now_s]


def _counter(metric) -> int:
    return int(sum(metric.values.values()))


def summary(engine) -> dict:
    now_s = engine.clock.now_s()
    b = engine.bundle
    m = engine.metrics
    result, at_s = getattr(engine, "last_reload", (None, None))
    policy = None if b is None else {"version": b.version, "hash": b.hash, "source": engine.policy_source or "file",
                                     "loaded_at": rfc3339(getattr(engine, "loaded_at_s", None)),
                                     "policies": len(b.policies)}
    return {
        "generated_at": rfc3339(now_s),
        "key_mode": "hashed" if engine.decision_log.hashed else "raw",
        "policy": policy,
        "last_reload": {"result": result, "at": rfc3339(at_s), "errors": list(engine.last_errors)},
        "rates": engine.console.rate_series(now_s),
        "tenants": engine.console.top_tenants(TOP_N),
        "budgets": _budgets(engine, now_s),
        "kill_switches": _switches(engine, now_s),
        "overrides": _overrides(engine, now_s),
        "breakers": _breakers(engine, now_s),
        "last_rejections": [{"ts": r.ts, "policy": r.policy, "rule": r.rule, "reason": r.reason, "key": r.key,
                             "status": r.status} for r in reversed(engine.console.last_rejections)],
        "health": {
            "ready": b is not None,
            "engine_pid": os.getpid(),
            "engine_started_at": rfc3339(engine.started_at_s),
            "uptime_s": int(time.time() - engine.started_at_s),
            "engine_errors": _counter(m.engine_errors),
            "fail_open_requests": _counter(m.engine_unavailable),  # counted by the shim while the engine was away
            "shim_connections": _counter(m.shim_connections),
            "decision_log_dropped": _counter(m.decision_log_dropped),
            "state_keys": len(engine.store),
            "reservations_open": len(engine.reservations),
        },
    }


def summary_reply(engine) -> tuple[int, str, str]:
    return 200, "application/json", _json.encode(summary(engine)).decode()
