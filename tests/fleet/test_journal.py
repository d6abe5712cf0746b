"""Fleet journal: every limiter's writes become deltas that add up across engines (pyengine.fleet.kinds)."""

from pyengine.algorithms.concurrency import InFlight
from pyengine.algorithms.cost_based import CostBudget
from pyengine.algorithms.token_bucket import TokenBucket
from pyengine.clock import FakeClock
from pyengine.fleet import kinds
from pyengine.fleet.journal import FleetStore
from pyengine.guards.breaker import OPEN, SpendBreaker
from pyengine.guards.loop import LoopDetector
from pyengine.state import keys

T0 = 1_800_000_000.0  # a UTC epoch second (2027), so period arithmetic is real
RULE_KEY = keys.one_value(keys.rule_prefix("p", "r"), "acme")


class Fleet:
    """Engines sharing one in-process 'store' that applies deltas with kinds.merge (the rule
    merge.lua applies in Redis; tests/fleet/test_merge_lua.py proves the two equal)."""

    def __init__(self, n: int):
        self.clock = FakeClock(T0)
        self.stores = [FleetStore(self.clock.now_s, 1000) for _ in range(n)]
        self.remote: dict = {}

    def sync(self, i: int) -> None:
        """Engine i pushes its journal; the store merges; engine i mirrors the answers."""
        store = self.stores[i]
        for key, (kind, acc) in store.take().items():
            merged = kinds.merge(kind, self.remote.get(key, (kind, None))[1], acc, self.clock.now_s(), f"e{i}")
            self.remote[key] = (kind, merged)
            store.mirror(key, kinds.to_local(kind, merged))

    def sync_all(self) -> None:
        """Every engine pushes, then every engine learns every merged value."""
        for i in range(len(self.stores)):
            self.sync(i)
        for store in self.stores:
            for key, (kind, merged) in self.remote.items():
                store.mirror(key, kinds.to_local(kind, merged))


def test_token_bucket_admissions_on_two_engines_add_up():
    f = Fleet(2)
    a, b = (TokenBucket(s, 1.0, 10) for s in f.stores)
    now = f.clock.now_s()
    assert all(a.acquire(RULE_KEY, 1, now).allowed for _ in range(6))
    assert all(b.acquire(RULE_KEY, 1, now).allowed for _ in range(6))
    f.sync_all()
    # 12 taken from a burst of 10: both now see a debt of 2 tokens and refuse.
    assert a.peek(RULE_KEY, now) == -2.0 and b.peek(RULE_KEY, now) == -2.0
    assert not a.acquire(RULE_KEY, 1, now).allowed
    f.clock.advance(3.0)  # the debt is repaid first: 3 s of refill leave 1 token
    assert b.peek(RULE_KEY, f.clock.now_s()) == 1.0


def test_refund_travels_as_negative_debt():
    f = Fleet(1)
    bucket = TokenBucket(f.stores[0], 1.0, 10)
    now = f.clock.now_s()
    bucket.acquire(RULE_KEY, 4, now)
    bucket.refund(RULE_KEY, 3, now)
    kind, acc = f.stores[0].pending[RULE_KEY]
    assert kind == kinds.G and abs(acc[1] - 1.0) < 1e-6


def test_cost_budget_counts_add_up_and_a_refund_to_zero_is_a_delta():
    f = Fleet(2)
    a, b = (CostBudget(s, 100, "1d", []) for s in f.stores)
    now = f.clock.now_s()
    assert a.acquire(RULE_KEY, 40, now).allowed
    assert b.acquire(RULE_KEY, 50, now).allowed
    f.sync_all()
    assert a.peek(RULE_KEY, now) == 10 and b.peek(RULE_KEY, now) == 10
    assert not a.acquire(RULE_KEY, 20, now).allowed
    b.refund(RULE_KEY, 50, now, now)
    f.sync_all()
    assert a.peek(RULE_KEY, now) == 60


def test_new_period_does_not_carry_old_counts():
    f = Fleet(1)
    budget = CostBudget(f.stores[0], 100, "1d", [])
    now = f.clock.now_s()
    budget.acquire(RULE_KEY, 90, now)
    f.sync(0)
    f.clock.advance(86_400)
    budget.acquire(RULE_KEY, 5, f.clock.now_s())
    f.sync(0)
    assert budget.peek(RULE_KEY, f.clock.now_s()) == 95


def test_leases_from_two_engines_share_the_limit_and_releases_propagate():
    f = Fleet(2)
    a, b = (InFlight(s, 3, 60.0) for s in f.stores)
    now = f.clock.now_s()
    _, lease_a = a.acquire(RULE_KEY, now)
    _, lease_b = b.acquire(RULE_KEY, now)
    b.acquire(RULE_KEY, now)
    f.sync_all()
    assert a.in_flight(RULE_KEY, now) == 3
    assert not a.acquire(RULE_KEY, now)[0].allowed
    assert a.release(RULE_KEY, lease_a, now)
    f.sync_all()
    assert b.in_flight(RULE_KEY, now) == 2


def test_lease_taken_and_released_between_syncs_leaves_nothing():
    f = Fleet(1)
    pool = InFlight(f.stores[0], 3, 60.0)
    now = f.clock.now_s()
    _, lease = pool.acquire(RULE_KEY, now)
    pool.release(RULE_KEY, lease, now)
    kind, acc = f.stores[0].pending[RULE_KEY]
    assert kind == kinds.S and acc[2] == [] and acc[3] == []


def test_loop_attempts_on_two_engines_reach_the_threshold():
    f = Fleet(2)
    key = keys.loop_prefix("p") + keys.field("fingerprint")
    a, b = (LoopDetector(s, 60.0, 3) for s in f.stores)
    now = f.clock.now_s()
    assert not a.hit(key, now)
    assert not b.hit(key, now + 1)
    f.sync_all()
    assert a.hit(key, now + 2)  # the third identical request, counted across the fleet


def test_breaker_opened_on_one_engine_is_open_on_the_other():
    f = Fleet(2)
    key = keys.breaker_prefix("p") + keys.field("acme")
    a, b = (SpendBreaker(s, 100.0, 30.0) for s in f.stores)
    now = f.clock.now_s()
    assert a.check(key, 60, now) == (0, False)
    assert b.check(key, 30, now) == (0, False)
    f.sync_all()
    assert a.peek(key, now)[1] == 90
    retry, opened = b.check(key, 20, now + 1)
    assert opened and retry == 30
    f.sync_all()
    assert a.peek(key, now + 2)[0] == OPEN


def test_kill_switch_hits_and_selftest_scratch_stay_local():
    store = FleetStore(FakeClock(T0).now_s, 10)
    store.put(keys.kill_hits("ks1"), (T0 + 5, 1))
    store.put(keys.selftest("run", RULE_KEY), T0 + 1)
    assert store.pending == {}


def test_shadow_and_day_twins_are_journaled_as_rule_state():
    store = FleetStore(FakeClock(T0).now_s, 10)
    store.put(keys.shadow(RULE_KEY), T0 + 1)
    store.put(keys.day(RULE_KEY), (int(T0) + 100, 7))
    assert store.pending[keys.shadow(RULE_KEY)][0] == kinds.G
    assert store.pending[keys.day(RULE_KEY)] == (kinds.P, [kinds.P, int(T0) + 100, 7])
