"""What a candidate bundle would change for recent traffic: both bundles replayed in memory.

The recent requests (pyengine.recent) are decided twice, from empty state on a fake clock that
follows their recorded times: once under the bundle in force, once under the candidate. A
request rejected only under the candidate is newly rejected; one rejected only under the
bundle in force is released. Tenants are the rejecting rule's limit-key values, shown as the
decision log shows them (hashed unless FAIRVISOR_LOG_KEYS=raw).
"""

import time

import msgspec

from .clock import FakeClock
from .decision_log import DecisionLog

TOP_TENANTS = 50  # per direction
# The replay runs on the engine's loop, inside the shim's admin timeout (FAIRVISOR_ENGINE_TIMEOUT_MS,
# 100 ms by default): it stops at this budget and says how far it got.
BUDGET_S = 0.05


def _scratch_engine(settings, data: bytes, start_s: float):
    from .engine import Engine  # the engine module imports this one's callers

    engine = Engine(msgspec.structs.replace(settings, decision_log="off"), clock=FakeClock(start_s))
    engine.decision_log = DecisionLog(None, "raw", metrics=engine.metrics, memory=True)
    engine.load_bytes(data, "candidate")
    return engine


def _outcome(engine, now_s: float, msg, recorded_names) -> tuple:
    """(rejection or None, whether a header this engine reads was not recorded) of one request;
    a rejection is (policy, rule, reason, raw key)."""
    names = engine.hello_reply.headers
    engine.clock.set(max(now_s, engine.clock.now_s()))
    got = dict(zip(recorded_names, msg.headers))
    headers = [got.get(n) for n in names]
    verdict, d = engine.decide_with_decision(msgspec.structs.replace(msg, generation=engine.generation,
                                                                     headers=headers))
    rejected = None
    for rec in engine.decision_log.drain():
        if rec.event == "reject":
            rejected = (rec.policy, rec.rule, rec.reason, rec.key)
    if getattr(verdict, "status", 0) and rejected is None:
        rejected = (d.policy_id or "", d.rule or "", d.reason or "", "")
    return rejected, any(n not in got for n in names)


def _tally(pairs, shown) -> list[dict]:
    counts: dict[tuple, int] = {}
    for item in pairs:
        counts[item] = counts.get(item, 0) + 1
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TENANTS]
    return [{"policy": p, "rule": r, "reason": why, "key": shown(k) if k else "", "requests": n}
            for (p, r, why, k), n in rows]


def compare(settings, current: bytes, candidate: bytes, recent: list, shown, budget_s: float = BUDGET_S) -> dict:
    """The replay report; PolicyError when the candidate does not load. `shown(raw key)` is the
    engine's decision-log key display. Requests are replayed oldest first until `budget_s`."""
    start_s = recent[0][0] if recent else 0.0
    after_engine = _scratch_engine(settings, candidate, start_s)
    before_engine = _scratch_engine(settings, current, start_s)
    recorded = len(recent)
    deadline = time.perf_counter() + budget_s
    before, after, unrecorded = [], [], 0
    for now_s, msg, names in recent:
        if time.perf_counter() > deadline:
            break
        b, _ = _outcome(before_engine, now_s, msg, names)
        a, missing = _outcome(after_engine, now_s, msg, names)
        before.append(b)
        after.append(a)
        unrecorded += missing
    recent = recent[:len(before)]
    newly = [a for b, a in zip(before, after) if a is not None and b is None]
    released = [b for b, a in zip(before, after) if b is not None and a is None]
    return {
        "requests": len(recent),
        "recorded": recorded,  # more than "requests" when the budget ran out
        "from": recent[0][0] if recent else None,
        "to": recent[-1][0] if recent else None,
        "rejected_before": sum(1 for b in before if b is not None),
        "rejected_after": sum(1 for a in after if a is not None),
        "newly_rejected": _tally(newly, shown),
        "released": _tally(released, shown),
        # Headers the candidate reads that the shim did not send under the bundle in force:
        # those requests replay as if the header were absent.
        "requests_missing_new_headers": unrecorded,
    }
