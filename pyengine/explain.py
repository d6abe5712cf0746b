"""`fairvisor explain`: why one request gets its verdict, rule by rule, without touching the hot path.

A separate walk over the compiled bundle in the pipeline's order: kill switches, then every
policy's selector, each rule's `match` and limit keys, then a peek at each applicable rule's
limiter (apply, then the exact undo, so state is left as it was). The verdict itself comes
from `Engine.decide` afterwards, so it is the engine's own answer, not this module's guess.
"""

import time
from types import CoroutineType

from .decision_log import shown_values
from .decision.rules import key_value
from .decision.request import view_from_decide
from .state import keys

_ALGORITHM = {"TokenBucketRule": "token_bucket", "LLMRule": "token_bucket_llm", "CostRule": "cost_based",
              "ConcurrencyRule": "concurrency"}


def selector_miss(sel, method: str, host: str, path: str) -> str | None:
    """Why a selector does not match, or None when it does."""
    if sel.methods is not None and method not in sel.methods:
        return f"selector: method {method} not in {sorted(sel.methods)}"
    if sel.hosts is not None and host not in sel.hosts:
        return f"selector: host {host!r} not in {sorted(sel.hosts)}"
    if not sel.matches(method, host, path):
        if sel.path_exact is not None:
            return f"selector: path {path} is not {sel.path_exact}"
        return f"selector: path {path} not under {sel.path_prefix}"
    return None


def describe_selector(sel) -> str:
    parts = [f"pathExact={sel.path_exact}" if sel.path_exact is not None else f"pathPrefix={sel.path_prefix}"]
    if sel.methods is not None:
        parts.append("methods=" + ",".join(sorted(sel.methods)))
    if sel.hosts is not None:
        parts.append("hosts=" + ",".join(sorted(sel.hosts)))
    return " ".join(parts)


def match_miss(rule, view) -> str | None:
    for lk, fn, want in rule.match:
        got = key_value(view, lk, fn)
        if got != want:
            shown = "missing" if got is None else repr(got)
            return f"match: {lk} is {shown}, the rule wants {want!r}"
    return None


def _missing_key(rule, view) -> str:
    for lk, fn in rule.key_fns:
        if key_value(view, lk, fn) is None:
            return lk
    return "?"


def _outcome(o, amount) -> dict:
    out = {"allowed": o.allowed, "cost": amount}
    if o.limit:
        out.update(limit=o.limit, remaining=o.remaining, window_s=o.window_s, reset_s=o.reset_s)
    for name in ("reason", "warning"):
        if getattr(o, name):
            out[name] = getattr(o, name)
    if o.retry_after_s:
        out["retry_after_s"] = o.retry_after_s
    if o.delay_ms:
        out["delay_ms"] = o.delay_ms
    return out


def _walk_rules(policy, view, now_s, shadow_mark: bool, stopped: str | None) -> tuple[list[dict], bool]:
    """Rule entries of one matched policy; returns (entries, rejected)."""
    entries = []
    matched = [r for r in policy.rules if not r.match or match_miss(r, view) is None]
    use_fallback = not policy.plain and not matched and policy.fallback is not None
    candidates = [(r, True) for r in policy.rules]
    if policy.fallback is not None:
        candidates.append((policy.fallback, use_fallback))
    rejected = False
    for rule, applicable in candidates:
        e = {"rule": rule.name, "algorithm": _ALGORITHM.get(type(rule).__name__, type(rule).__name__),
             "limit_keys": [lk for lk, _ in rule.key_fns], "fallback": rule is policy.fallback}
        entries.append(e)
        if rule is policy.fallback and not applicable:
            e.update(status="skipped", why="fallback: used only when no rule's match holds")
            continue
        miss = match_miss(rule, view) if rule.match else None
        if miss is not None:
            e.update(status="skipped", why=miss)
            continue
        key = rule.state_key(view)
        if key is not None:
            e["key"] = shown_values(key)
        if stopped is not None or rejected:  # the pipeline never looks at this rule
            e.update(status="not_reached", why=stopped or "an earlier rule of this policy rejected")
            continue
        if key is None:
            if rule.reject_missing:
                e.update(status="reject", why=f"missing key: {_missing_key(rule, view)} (on_missing_key: reject)",
                         outcome={"allowed": False, "reason": "missing_limit_key"})
                rejected = True
            else:
                e.update(status="skipped", why=f"missing key: {_missing_key(rule, view)}")
            continue
        if key == rule.missing_key:
            e["why"] = f"missing key: {_missing_key(rule, view)} (on_missing_key: shared counter)"
        state_key = keys.shadow(key) if shadow_mark else key
        outcome, amount = rule.apply(view, state_key, now_s)
        if outcome.allowed:
            rule.undo(state_key, amount, now_s, now_s)  # peek only: leave the state as it was
        e.update(status="allow" if outcome.allowed else "reject", outcome=_outcome(outcome, amount))
        rejected = rejected or not outcome.allowed
    return entries, rejected


def explain_request(engine, msg) -> dict:
    """The explanation of Decide `msg` against the engine's bundle, then the engine's verdict."""
    return trace(engine, msg)[0]


def trace(engine, msg) -> tuple[dict, object, int | None]:
    """(explanation, the engine's Verdict, its decision time in us): the walk below, then the
    engine's own untraced decision of the same request (debug sessions use all three). When the
    decision awaits the store, the second item is a coroutine giving (Verdict, time in us) and
    filling the explanation's verdict, and the third is None."""
    bundle = engine.bundle
    now_s = engine.clock.now_s()
    view = view_from_decide(msg, bundle.header_index, joins=bundle.header_joins, family=bundle.family)
    req = {"method": view.method, "host": view.host, "path": view.path}
    out = {"request": req, "kill_switches": [], "policies": []}
    stopped = None
    for i, ks in enumerate(bundle.kill_switches):
        e = {"index": i, "reason": ks.reason or ""}
        if ks.hits(view, now_s):
            e["status"] = "hit"
            stopped = stopped or f"kill switch #{i} rejected first"
        elif ks.expires_at_s is not None and now_s >= ks.expires_at_s:
            e["status"] = "expired"
        else:
            e["status"] = "no_match"
        out["kill_switches"].append(e)
    runtime = engine.pipeline.runtime_switches  # added through the admin API (pyengine.overlay)
    hit = runtime.match(view, now_s) if runtime is not None else None
    if hit is not None:
        out["kill_switches"].append({"index": len(out["kill_switches"]), "id": keys.kill_switch_id(hit.hits_key),
                                     "reason": hit.reason or "", "status": "hit"})
        stopped = stopped or "a runtime kill switch rejected first"
    global_shadow = bundle.global_shadow_active(now_s)
    out["global_shadow"] = global_shadow
    shadow_failed = False
    for sel, policy in bundle.routes.entries:
        shadow = policy.shadow or global_shadow
        p = {"policy": policy.id, "mode": "shadow" if shadow else "enforce", "selector": describe_selector(sel)}
        out["policies"].append(p)
        miss = selector_miss(sel, view.method, view.host, view.path)
        if miss is not None:
            p.update(status="skipped", why=miss, rules=[])
            continue
        p["status"] = "matched"
        halt = stopped
        if shadow and shadow_failed and halt is None:
            halt = "an earlier shadow policy would reject"
        p["rules"], rejected = _walk_rules(policy, view, now_s, shadow and not policy.shadow, halt)
        if rejected and shadow:
            shadow_failed = True
            p["outcome"] = "would_reject"
        elif rejected:
            stopped = f"policy {policy.id} rejected"
            p["outcome"] = "reject"
    start_ns = time.perf_counter_ns()
    verdict = engine.decide_untraced(msg)
    if verdict.__class__ is CoroutineType:  # strict rules: the store decides (pyengine.decision.strict)
        return out, _finished_later(out, engine, verdict, start_ns), None
    return out, verdict, finish(out, engine, verdict, start_ns)


async def _finished_later(out: dict, engine, pending, start_ns: int):
    """(Verdict, decision time in us) of a decision that awaited the store; fills out["verdict"]."""
    verdict = await pending
    return verdict, finish(out, engine, verdict, start_ns)


def finish(out: dict, engine, verdict, start_ns: int) -> int:
    """out["verdict"] from the engine's answer; returns the decision time in us."""
    latency_us = (time.perf_counter_ns() - start_ns) // 1000
    d = engine.last_decision
    pairs = verdict.headers
    out["verdict"] = {
        "action": "reject" if verdict.status else (("throttle" if d.delay_ms else "warn") if d.warning else "allow"),
        "status": verdict.status or 200,
        "reason": (d.reason if verdict.status else d.warning) or "",
        "policy": d.policy_id or "",
        "rule": d.rule or "",
        "headers": [[pairs[i], pairs[i + 1]] for i in range(0, len(pairs), 2)],
        "body": verdict.body,
    }
    return latency_us
