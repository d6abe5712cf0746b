"""Rendered verdicts are shared only where that is safe, and the cache stays bounded."""

from pyengine.algorithms.outcome import Outcome
from pyengine.memo import table
from pyengine.protocol.messages import SURFACE_DESCRIBED, SURFACE_INLINE
from pyengine.verdict import Decision
from pyengine.verdict import render as _render

MEMO = table("verdict")  # the engine's "verdict" table, as Engine passes it


def render(d, surface, llm_format):
    return _render(d, surface, llm_format, MEMO)


def _allow(remaining: int, rid=None) -> Decision:
    d = Decision(rule="per-ip", policy_id="p", outcome=Outcome(True, 10, 2, remaining, 1))
    d.reservation_id = rid
    return d


def test_equal_decisions_share_one_verdict_and_different_ones_do_not():
    a, b = render(_allow(7), SURFACE_DESCRIBED, None), render(_allow(7), SURFACE_DESCRIBED, None)
    assert a is b
    c = render(_allow(6), SURFACE_DESCRIBED, None)
    assert c is not a and ("RateLimit-Remaining", "6") == tuple(c.headers[6:8])
    reject = Decision(status=429, reason="rate_limit_exceeded", rule="per-ip", policy_id="p",
                      outcome=Outcome(False, 10, 2, 0, 3, 3, "rate_limit_exceeded"), retry_after_s=3)
    described, inline = render(reject, SURFACE_DESCRIBED, "openai"), render(reject, SURFACE_INLINE, "openai")
    assert described is render(reject, SURFACE_DESCRIBED, "openai")
    assert described.body != inline.body  # problem+json vs the provider's error shape


def test_reserving_verdicts_are_never_shared():
    """LLMProxy.attach writes the stream recipe into these: each request needs its own."""
    first = render(_allow(7, rid="r-1"), SURFACE_INLINE, "openai")
    second = render(_allow(7, rid="r-1"), SURFACE_INLINE, "openai")
    assert first is not second and first.reservation_id == "r-1"


def test_the_cache_is_bounded():
    for n in range(MEMO.max_entries + 100):
        render(Decision(rule=f"rule-{n}", outcome=Outcome(True, 10, 2, 5, 1)), SURFACE_DESCRIBED, None)
    assert len(MEMO) <= MEMO.max_entries and MEMO.clears >= 1


def test_without_a_memo_nothing_is_shared():
    d = _allow(7)
    assert _render(d, SURFACE_DESCRIBED, None) is not _render(d, SURFACE_DESCRIBED, None)
