"""One memo object per engine: every table the decision path fills is the engine's, sized in pyengine.memo."""

import json
from pathlib import Path

from pyengine.memo import SIZES, Memo, Table

from .helpers import decide, make_engine, unsigned_jwt

FIVE_RULES = Path(__file__).parent.parent / "fixtures" / "policies" / "five_rules.json"
CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()


def _one_request(engine, org="org-1"):
    return decide(engine, headers={"Authorization": "Bearer " + unsigned_jwt({"org_id": org}),
                                   "X-Forwarded-For": "10.0.0.7", "User-Agent": "curl/8"},
                  method="POST", uri="/v1/chat/completions", body=CHAT)


def test_a_decision_fills_the_engines_tables_and_no_other():
    engine = make_engine(json.loads(FIVE_RULES.read_text()))
    assert isinstance(engine.memo, Memo)
    before = {name: c["entries"] for name, c in engine.memo.counts().items()}
    assert _one_request(engine).status == 0
    assert decide(engine, uri="/elsewhere").status == 0  # unmatched: a shared (memoised) verdict
    after = {name: c["entries"] for name, c in engine.memo.counts().items()}
    for name in ("jwt", "target", "route", "verdict", "price"):
        assert after[name] > before[name], name
    # A second engine starts empty: nothing is shared through module globals.
    other = make_engine(json.loads(FIVE_RULES.read_text()))
    assert all(c["entries"] == 0 for c in other.memo.counts().values())


def test_a_reload_gives_the_new_bundle_fresh_route_and_price_tables():
    bundle = json.loads(FIVE_RULES.read_text())
    engine = make_engine(bundle)
    _one_request(engine)
    old_routes = engine.memo.route
    bundle["bundle_version"] += 1
    engine.load_bytes(json.dumps(bundle).encode(), "policy.json")
    assert engine.memo.route is not old_routes and len(engine.memo.route) == 0
    _one_request(engine)
    assert len(engine.memo.route) == 1 and len(old_routes) == 1  # the old bundle's stay its own


def test_every_table_is_sized_in_one_place_and_cleared_whole_when_full():
    memo = Memo()
    assert set(memo.counts()) == set(SIZES)
    t = Table("x", 3)
    for n in range(4):
        t.remember(n, n)
    assert dict(t) == {3: 3} and t.clears == 1
    jwt = memo.jwt
    for n in range(SIZES["jwt"] + 1):
        jwt.remember(str(n), None)
    assert memo.counts()["jwt"] == {"entries": 1, "max_entries": SIZES["jwt"], "clears": 1}


def test_metrics_show_every_table_of_the_memo():
    engine = make_engine(json.loads(FIVE_RULES.read_text()))
    _one_request(engine)
    text = engine.scrape().body
    for name in SIZES:
        assert f'fairvisor_engine_memo_entries{{table="{name}"}}' in text, name
    assert f'fairvisor_engine_memo_entries{{table="jwt"}} {len(engine.memo.jwt)}' in text
