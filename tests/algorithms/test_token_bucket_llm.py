"""LLMTokenLimiter: reserve/settle/refund across TPM and TPD, day rollover, per-request caps."""

from datetime import datetime, timezone

import pytest

from pyengine.algorithms.outcome import Outcome
from pyengine.algorithms.token_bucket_llm import LLMTokenLimiter
from pyengine.state import keys
from pyengine.state.memory import MemoryStore


def ts(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp())


NOON = float(ts("2026-01-01T12:00:00"))
MIDNIGHT = ts("2026-01-02T00:00:00")
DAY_KEY = keys.day("org1")


def make(tpm=60_000, burst=None, tpd=None):
    store = MemoryStore()
    return LLMTokenLimiter(store, tpm, burst or tpm, tpd), store


def test_tpm_only_reserve_headers():
    limiter, _ = make()
    # 1000 tokens reserved at 1000 tokens/s: full again in 1 s.
    assert limiter.reserve("org1", 1000, NOON) == Outcome(True, 60_000, 60, 59_000, 1)


def test_tpm_headers_stay_tpm_and_60s_with_a_larger_burst():
    limiter, _ = make(tpm=60_000, burst=120_000)
    out = limiter.reserve("org1", 1000, NOON)
    assert (out.limit, out.window_s, out.remaining) == (60_000, 60, 119_000)


def test_settle_refunds_unused_tokens():
    limiter, store = make(tpd=100_000)
    assert limiter.reserve("org1", 1000, NOON).allowed
    limiter.settle("org1", reserved_tokens=1000, actual_tokens=400, reserved_at_s=NOON,
                   now_s=NOON)
    assert limiter.peek("org1", NOON) == 60_000 - 400
    assert store.get(DAY_KEY) == (MIDNIGHT, 400)


def test_settle_charges_excess_into_debt():
    limiter, store = make(tpm=600, tpd=100_000)  # 10 tokens/s
    assert limiter.reserve("org1", 600, NOON).allowed
    limiter.settle("org1", 600, 900, NOON, NOON + 1)
    assert limiter.tpm.peek("org1", NOON + 1) == -290  # -300 plus 1 s of refill
    assert limiter.peek("org1", NOON + 1) == 0
    assert store.get(DAY_KEY) == (MIDNIGHT, 900)
    # 291 tokens short at 10/s: Retry-After 30.
    assert limiter.reserve("org1", 1, NOON + 1) == Outcome(
        False, 600, 60, 0, 30, 30, "tpm_exceeded")


def test_full_refund_restores_both_limits():
    limiter, store = make(tpd=100_000)
    limiter.reserve("org1", 5000, NOON)
    limiter.refund("org1", 5000, NOON, NOON)
    assert limiter.peek("org1", NOON) == 60_000
    assert store.sweep(NOON, 10) == 2  # both states read as absent


def test_tpd_reject_charges_nothing():
    limiter, store = make(tpd=1000)
    assert limiter.reserve("org1", 800, NOON).allowed
    to_midnight_s = 12 * 3600
    assert limiter.reserve("org1", 300, NOON) == Outcome(
        False, 1000, 86_400, 200, to_midnight_s, to_midnight_s, "tpd_exceeded")
    assert limiter.tpm.peek("org1", NOON) == 60_000 - 800
    assert store.get(DAY_KEY) == (MIDNIGHT, 800)


def test_tpm_reject_rolls_back_the_tpd_charge():
    limiter, store = make(tpm=600, tpd=10_000)
    assert limiter.reserve("org1", 600, NOON).allowed
    out = limiter.reserve("org1", 100, NOON)
    assert (out.allowed, out.reason, out.retry_after_s) == (False, "tpm_exceeded", 10)
    assert store.get(DAY_KEY) == (MIDNIGHT, 600)


def test_headers_come_from_the_more_restrictive_limit():
    limiter, _ = make(tpd=100_000)
    # TPM 10000/60000 left (0.17) vs TPD 50000/100000 (0.5): TPM.
    assert limiter.reserve("org1", 50_000, NOON) == Outcome(True, 60_000, 60, 10_000, 50)
    limiter, _ = make(tpd=10_000)
    # TPM 55000/60000 (0.92) vs TPD 5000/10000 (0.5): TPD, reset at midnight.
    assert limiter.reserve("org1", 5000, NOON) == Outcome(True, 10_000, 86_400, 5000, 43_200)


def test_tpd_resets_at_utc_midnight():
    limiter, _ = make(tpd=1000)
    late = MIDNIGHT - 10.0
    assert limiter.reserve("org1", 1000, late).allowed
    out = limiter.reserve("org1", 1, late)
    assert (out.reason, out.retry_after_s, out.reset_s) == ("tpd_exceeded", 10, 10)
    out = limiter.reserve("org1", 1, late + 9.5)
    assert (out.reason, out.retry_after_s) == ("tpd_exceeded", 1)
    out = limiter.reserve("org1", 1000, float(MIDNIGHT))
    assert (out.allowed, out.remaining) == (True, 0)


def test_tpd_refund_after_midnight_is_not_applied_to_the_new_day():
    limiter, store = make(tpd=10_000)
    reserved_at = MIDNIGHT - 0.5
    assert limiter.reserve("org1", 1000, reserved_at).allowed
    after_midnight = MIDNIGHT + 1.0
    assert limiter.reserve("org1", 500, after_midnight).allowed
    limiter.settle("org1", 1000, 200, reserved_at, after_midnight)  # 800 unused
    assert store.get(DAY_KEY) == (MIDNIGHT + 86_400, 500)
    # TPM still gets its refund, capped at burst: 60000 - 1000 - 500 + 1500 refill + 800.
    assert limiter.tpm.peek("org1", after_midnight) == 60_000


def test_tpd_excess_after_midnight_counts_in_the_new_day():
    limiter, store = make(tpd=10_000)
    reserved_at = MIDNIGHT - 0.5
    limiter.reserve("org1", 1000, reserved_at)
    limiter.settle("org1", 1000, 1300, reserved_at, MIDNIGHT + 1.0)
    assert store.get(DAY_KEY) == (MIDNIGHT + 86_400, 300)


@pytest.mark.parametrize(("prompt", "completion", "max_prompt", "max_request", "reason"), [
    (100, 900, None, None, None),
    (100, 900, 100, 1000, None),
    (101, 0, 100, None, "prompt_tokens_exceeded"),
    (101, 10_000, 100, 1000, "prompt_tokens_exceeded"),  # prompt checked first
    (100, 901, 100, 1000, "max_tokens_per_request_exceeded"),
    (0, 1001, None, 1000, "max_tokens_per_request_exceeded"),
])
def test_check_request(prompt, completion, max_prompt, max_request, reason):
    assert LLMTokenLimiter.check_request(prompt, completion, max_prompt, max_request) == reason
