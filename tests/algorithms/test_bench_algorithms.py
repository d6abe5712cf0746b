"""Hot-path benchmarks on a warm key (run with --benchmark-enable; otherwise they run once)."""

from pyengine.algorithms.cost_based import CostBudget
from pyengine.algorithms.token_bucket import TokenBucket
from pyengine.algorithms.token_bucket_llm import LLMTokenLimiter
from pyengine.state.memory import MemoryStore

NOW_S = 1_767_268_800.25  # 2026-01-01T12:00:00.25Z


def test_bench_token_bucket_acquire(benchmark):
    bucket = TokenBucket(MemoryStore(), 10, 1e12)  # never runs dry during a benchmark
    bucket.acquire("tenant-000001", 1, NOW_S)
    out = benchmark(bucket.acquire, "tenant-000001", 1, NOW_S)
    assert out.allowed and out.limit == 10**12


def test_bench_cost_budget_acquire(benchmark):
    budget = CostBudget(MemoryStore(), 10**15, "1mo",
                        [(80, "warn", 0), (90, "throttle", 500), (100, "reject", 0)])
    budget.acquire("tenant-000001", 1, NOW_S)
    out = benchmark(budget.acquire, "tenant-000001", 1, NOW_S)
    assert out.allowed and out.warning is None and out.window_s == 31 * 86_400


def test_bench_llm_reserve_with_tpd(benchmark):
    limiter = LLMTokenLimiter(MemoryStore(), 10**13, 10**13, tokens_per_day=10**12)
    # Half the day used: TPD (0.5 left) stays tighter than TPM (0.95 left) for every round.
    limiter.reserve("tenant-000001", 5 * 10**11, NOW_S)
    out = benchmark(limiter.reserve, "tenant-000001", 1000, NOW_S)
    assert out.allowed and (out.limit, out.window_s) == (10**12, 86_400)
