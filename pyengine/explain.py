"""`fairvisor explain`: why one request gets its verdict, rule by rule, from the decision itself.

The engine decides the request once with a Trace attached (pyengine.decision.trace): the plan's
own loop records each step it ran (kill switches, matching policies, each rule's `match`, limit
keys and outcome or strict claim, guards), and this module renders that record. Nothing is
re-walked or peeked: a rule the decision never reached is shown as not reached, without a key.
"""

import time
from types import CoroutineType

from .decision_log import shown_values
from .decision.request import view_from_decide
from .decision.trace import CLAIM, GUARD, KEY, MISSING, NO_MATCH, OUTCOME, SWITCH, Trace
from .protocol.messages import Verdict
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


def _rule_entry(rule, policy, trace: Trace, halted: str | None) -> dict:
    """One rule's entry from what the decision recorded about it."""
    e = {"rule": rule.name, "algorithm": _ALGORITHM.get(type(rule).__name__, type(rule).__name__),
         "limit_keys": [lk for lk, _ in rule.key_fns], "fallback": rule is policy.fallback}
    events = trace.of(rule)
    if not events:
        if rule is policy.fallback and halted is None:
            e.update(status="skipped", why="fallback: used only when no rule's match holds")
        else:
            e.update(status="not_reached", why=halted or "an earlier rule of this policy rejected")
        return e
    missing = None
    for kind, data in events:
        if kind is NO_MATCH:
            e.update(status="skipped", why=data)
        elif kind is MISSING:
            missing = data
        elif kind is KEY:
            e["key"] = shown_values(data)
            if missing is not None:
                e["why"] = f"missing key: {missing} (on_missing_key: shared counter)"
        elif kind is OUTCOME:
            outcome, amount = data
            e.update(status="allow" if outcome.allowed else "reject", outcome=_outcome(outcome, amount))
        elif kind is CLAIM:
            _ops, amount, refusal = data
            if refusal is not None:
                e.update(status="reject", outcome=_outcome(refusal, amount))
            else:  # the store decides after the loop; its answer is the verdict
                e.update(status="claim", why="strict: the shared store decides", outcome={"cost": amount})
    if missing is not None and "key" not in e:
        if rule.reject_missing:
            e.update(status="reject", why=f"missing key: {missing} (on_missing_key: reject)",
                     outcome={"allowed": False, "reason": "missing_limit_key"})
        else:
            e.update(status="skipped", why=f"missing key: {missing}")
    return e


def _guards(policy, trace: Trace) -> dict | None:
    for kind, hit in trace.of(policy.guards) if policy.guards is not None else ():
        if kind is GUARD and hit is not None:
            g = {"guard": hit.guard, "reason": hit.reason, "reject": hit.reject}
            if hit.warning:
                g["warning"] = hit.warning
            if hit.delay_ms:
                g["delay_ms"] = hit.delay_ms
            return g
    return None


def _kill_switches(bundle, runtime_hit, trace: Trace, now_s: float) -> tuple[list, str | None]:
    """(entries, why later steps were not reached) of the bundle's switches, then a runtime hit."""
    out, stopped = [], None
    for i, ks in enumerate(bundle.kill_switches):
        e = {"index": i, "reason": ks.reason or ""}
        checked = [hit for kind, hit in trace.of(ks) if kind is SWITCH]
        if checked and checked[0]:
            e["status"] = "hit"
            stopped = stopped or f"kill switch #{i} rejected first"
        elif trace.overridden:
            e["status"] = "overridden"
        elif ks.expires_at_s is not None and now_s >= ks.expires_at_s:
            e["status"] = "expired"
        elif checked or stopped is None:  # not checked: its route does not cover the path
            e["status"] = "no_match"
        else:
            e["status"] = "not_reached"
        out.append(e)
    if runtime_hit is not None:
        out.append({"index": len(out), "id": keys.kill_switch_id(runtime_hit.hits_key),
                    "reason": runtime_hit.reason or "", "status": "hit"})
        stopped = stopped or "a runtime kill switch rejected first"
    return out, stopped


def render(engine, msg, trace: Trace) -> dict:
    """The explanation of a decision traced into `trace`, against the bundle it ran on."""
    bundle = engine.bundle
    view = trace.view
    if view is None and bundle is not None:  # decided before the pipeline (no policy, self-test)
        view = view_from_decide(msg, bundle.header_index, joins=bundle.header_joins, family=bundle.family)
    out = {"request": {"method": view.method, "host": view.host, "path": view.path} if view is not None else {}}
    if bundle is None:
        out.update(kill_switches=[], policies=[], global_shadow=False)
        return out
    out["kill_switches"], stopped = _kill_switches(bundle, trace.runtime_hit, trace, trace.now_s)
    refused = [name for name, hit in trace.ambiguous if hit]
    if trace.ambiguous:
        out["ambiguous_headers"] = [{"header": n, "status": "refused" if hit else "shadow_only"}
                                    for n, hit in trace.ambiguous]
    if refused:
        stopped = stopped or f"ambiguous header {refused[0]} refused the request"
    out["global_shadow"] = trace.global_shadow
    out["policies"] = []
    matching = {id(p) for p in trace.policies}
    would_reject = {args[0] for name, args in trace.sink_events if name == "would_reject"}
    shadow_failed = False
    for sel, policy in bundle.routes.entries:
        shadow = policy.shadow or trace.global_shadow
        p = {"policy": policy.id, "mode": "shadow" if shadow else "enforce", "selector": describe_selector(sel)}
        out["policies"].append(p)
        if refused:  # refused before the route's plan was looked up
            p.update(status="not_reached", why=stopped, rules=[])
            continue
        if id(policy) not in matching:
            miss = selector_miss(sel, view.method, view.host, view.path) if view is not None else None
            p.update(status="skipped", why=miss or "selector: does not match", rules=[])
            continue
        p["status"] = "matched"
        halted = stopped
        if shadow and shadow_failed and halted is None:
            halted = "an earlier shadow policy would reject"
        rules = list(policy.all_rules)
        p["rules"] = [_rule_entry(r, policy, trace, halted) for r in rules]
        guard = _guards(policy, trace)
        if guard is not None:
            p["guards"] = guard
        rejected = any(r.get("status") == "reject" for r in p["rules"]) or (guard is not None and guard["reject"])
        if shadow and (rejected or policy.id in would_reject) and halted is None:
            shadow_failed = True
            p["outcome"] = "would_reject"
        elif rejected and not shadow:
            stopped = stopped or f"policy {policy.id} rejected"
            p["outcome"] = "reject"
    return out


def explain_request(engine, msg) -> dict:
    """The explanation of Decide `msg`: the engine decides it (state is charged as for any
    request) with a Trace attached, and the record is rendered."""
    return trace(engine, msg)[0]


def trace(engine, msg) -> tuple[dict, object, int | None]:
    """(explanation, the engine's Verdict, its decision time in us, tracing included): one
    traced decision (debug sessions use all three). When the decision awaits the store, the
    explanation is filled once it is awaited, the second item is a coroutine giving (Verdict,
    time in us), and the third is None."""
    t = Trace()
    out: dict = {}
    start_ns = time.perf_counter_ns()
    verdict = engine.decide_untraced(msg, t)
    if verdict.__class__ is CoroutineType:  # strict rules: the store decides (pyengine.decision.strict)
        return out, _finished_later(out, engine, msg, t, verdict, start_ns), None
    return out, verdict, finish(out, engine, msg, t, verdict, start_ns)


async def _finished_later(out: dict, engine, msg, t: Trace, pending, start_ns: int):
    """(Verdict, decision time in us) of a decision that awaited the store; fills `out`."""
    verdict = await pending
    return verdict, finish(out, engine, msg, t, verdict, start_ns)


def finish(out: dict, engine, msg, t: Trace, verdict, start_ns: int) -> int:
    """Fill `out` from the trace and the engine's answer; returns the decision time in us."""
    latency_us = (time.perf_counter_ns() - start_ns) // 1000
    out.update(render(engine, msg, t))
    d = t.decision
    if verdict.__class__ is not Verdict or d is None:  # a HelloReply: the shim re-describes the request
        return latency_us
    pairs = verdict.headers
    out["verdict"] = {
        "action": "reject" if verdict.status else d.action,
        "status": verdict.status or 200,
        "reason": (d.reason if verdict.status else d.warning) or "",
        "policy": d.policy_id or "",
        "rule": d.rule or "",
        "headers": [[pairs[i], pairs[i + 1]] for i in range(0, len(pairs), 2)],
        "body": verdict.body,
    }
    return latency_us
