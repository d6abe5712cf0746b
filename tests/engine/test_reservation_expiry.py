"""Unsettled reservations: expiry keeps up with any rate, and open ones are capped (issue 13, 14c)."""

from pyengine.clock import FakeClock
from pyengine.decision.reservations import DEFAULT_TTL_S, Reservations

from .helpers import decide, make_engine, unsigned_jwt
from .test_llm_usage import chat

ORG = {"Authorization": "Bearer " + unsigned_jwt({"org_id": "acme"})}
BIG = {
    "bundle_version": 1,
    "policies": [{"id": "llm", "spec": {"selector": {"pathPrefix": "/v1/"}, "rules": [
        {"name": "tpm", "limit_keys": ["jwt:org_id"], "algorithm": "token_bucket_llm",
         "algorithm_config": {"tokens_per_minute": 10**12, "default_max_completion": 10}}]}}],
}
RATE = 50_000  # unsettled reservations opened within one second: 5x what a tick used to expire


def test_fifty_thousand_unsettled_reservations_in_one_second_all_expire_after_their_ttl():
    clock = FakeClock()
    engine = make_engine(BIG, clock=clock)
    body = chat(content="x" * 40)
    start = clock.now_s()
    for i in range(RATE):
        clock.t = start + i / RATE  # spread over one second, in time order as the engine opens them
        assert decide(engine, headers=ORG, method="POST", uri="/v1/chat/completions", body=body).reservation_id
    assert len(engine.reservations) == RATE
    clock.t = start + DEFAULT_TTL_S + (RATE // 2 - 0.5) / RATE  # the first half is due, the rest not yet
    engine.upkeep()
    assert len(engine.reservations) == RATE // 2
    clock.t = start + DEFAULT_TTL_S + 1.0
    engine.upkeep()  # one tick expires everything due, however many
    assert len(engine.reservations) == 0
    m = engine.metrics
    assert m.reservations_expired.values[()] == RATE
    assert m.reservations_evicted.values[()] == 0
    assert "fairvisor_reservations_open 0" in m.render()


def test_expiry_stops_at_the_first_reservation_not_yet_due():
    rs = Reservations(ttl_s=10.0)
    ids = [rs.open([], float(t), None).id for t in range(5)]  # at 0, 1, 2, 3, 4
    rs.take(ids[1])  # settled in between: no longer open, never counted as expired
    assert rs.expire(12.0) == 2  # at 0 and 2 (at 1 was settled); 3 and 4 are not due
    assert [rs.get(i) is not None for i in ids] == [False, False, False, True, True]
    assert rs.expire(12.0) == 0


def test_open_reservations_are_capped_oldest_expire_early_and_are_counted():
    clock = FakeClock()
    engine = make_engine(BIG, clock=clock)
    engine.reservations.max_open = 100
    body = chat(content="x" * 40)
    ids = [decide(engine, headers=ORG, method="POST", uri="/v1/chat/completions", body=body).reservation_id
           for _ in range(150)]
    engine.upkeep()  # nothing is due yet: only the cap acts
    assert len(engine.reservations) == 100
    assert all(engine.reservations.get(r) is None for r in ids[:50])  # the oldest went first
    assert all(engine.reservations.get(r) is not None for r in ids[50:])
    m = engine.metrics
    assert m.reservations_evicted.values[()] == 50
    assert m.reservations_expired.values[()] == 0
    # The ones that went early stay charged: a late settle for them is a lost one.
    tpm = engine.bundle.policies[0].rules[0].limiter
    before = tpm.peek("llm\x1ftpm\x1facme", clock.now_s())
    engine.upkeep()
    assert tpm.peek("llm\x1ftpm\x1facme", clock.now_s()) == before


def test_open_reservations_leave_nothing_for_the_cycle_collector_to_visit():
    """A decision service whose gateway never settles holds up to a million reservations. Were
    they tracked, each full collection would visit all of them while every decision waits (520 ms
    for a million, measured); their objects must be untracked once a collection has seen them."""
    import gc

    clock = FakeClock()
    engine = make_engine(BIG, clock=clock)
    body = chat(content="x" * 40)
    for _ in range(50):  # warm: the engine's own structures exist
        decide(engine, headers=ORG, method="POST", uri="/v1/chat/completions", body=body)
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(5000):
        clock.t += 0.001
        assert decide(engine, headers=ORG, method="POST", uri="/v1/chat/completions", body=body).reservation_id
    gc.collect()
    assert len(engine.reservations) == 5050
    # Tracked, each reservation was three objects or more (itself, its charges, a tuple per
    # charge): 15,000 here. What grows is the console's bounded sample of recent decisions.
    assert len(gc.get_objects()) - before < 1000
