"""pyengine/admin_peers.py: the changes engine 0 tells the shim to bring to the edge's other engines, and under which ids."""

import json

import pytest

from pyengine.admin_peers import PEERS_HEADER, peer_query
from pyengine.protocol.messages import Admin

from .helpers import make_engine, one_rule_bundle

RULE = {"name": "per-org", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 1, "burst": 2}}
SWITCH = json.dumps({"scope_key": "header:x-org", "scope_value": "evil"}).encode()
FLEET = {"engines": 2, "state_url": "redis://127.0.0.1:6379/0"}


def admin(engine, uri: str, method: str = "GET", body: bytes | None = None):
    return engine.handle(Admin(uri=uri.encode(), method=method.encode(), body=body))


def peers(reply) -> str | None:
    h = reply.headers
    return h[h.index(PEERS_HEADER) + 1] if PEERS_HEADER in h[::2] else None


@pytest.fixture
def engine():
    return make_engine(one_rule_bundle(RULE), **FLEET)


def test_a_new_kill_switch_tells_the_other_engines_its_id(engine):
    reply = admin(engine, "/v1/admin/kill-switches", "POST", SWITCH)
    assert reply.status == 201
    switch_id = json.loads(reply.body)["kill_switch"]["id"]
    assert peers(reply) == f"id={switch_id}"
    other = make_engine(one_rule_bundle(RULE), **FLEET)
    assert admin(other, f"/v1/admin/kill-switches?{peers(reply)}", "POST", SWITCH).status == 201
    assert [s["id"] for s in json.loads(admin(other, "/v1/admin/kill-switches").body)["kill_switches"]] == [switch_id]
    removed = admin(engine, f"/v1/admin/kill-switches/{switch_id}", "DELETE")
    assert (removed.status, peers(removed)) == (200, "")


def test_a_selftest_run_tells_the_other_engines_its_id_and_secret(engine):
    reply = admin(engine, "/v1/admin/selftest", "POST")
    run = json.loads(reply.body)
    other = make_engine(one_rule_bundle(RULE), **FLEET)
    again = admin(other, f"/v1/admin/selftest?{peers(reply)}", "POST")
    assert again.status == 200
    assert {k: json.loads(again.body)[k] for k in ("run", "secret")} == {"run": run["run"], "secret": run["secret"]}
    assert admin(other, f"/v1/admin/selftest?{peers(reply)}", "POST").status == 409  # that run exists
    ended = admin(engine, "/v1/admin/selftest/end", "POST", json.dumps({"run": run["run"]}).encode())
    assert (ended.status, peers(ended)) == (200, "")


@pytest.mark.parametrize("query", ["run=0123456789ab", "run=0123456789ab&secret=short", "secret=" + "a" * 32,
                                   "run=0123456789AB&secret=" + "a" * 32, "run=0123456789ab&secret=" + "a" * 31 + "!"])
def test_a_selftest_run_of_another_shape_is_refused(engine, query):
    reply = admin(engine, f"/v1/admin/selftest?{query}", "POST")
    assert reply.status == 400 and engine.selftests.runs == {}


def test_reads_refusals_and_engine_0_only_requests_carry_nothing(engine):
    assert peers(admin(engine, "/v1/admin/kill-switches")) is None
    assert peers(admin(engine, "/v1/admin/kill-switches", "POST", b"{}")) is None  # 400
    assert peers(admin(engine, "/v1/admin/kill-switches/ks_000000000000", "DELETE")) is None  # 404
    assert peers(admin(engine, "/v1/admin/decisions", "POST", b"{}")) is None
    assert peers(admin(engine, "/metrics")) is None


def test_one_engine_never_says_it():
    engine = make_engine(one_rule_bundle(RULE))
    reply = admin(engine, "/v1/admin/kill-switches", "POST", SWITCH)
    assert reply.status == 201 and reply.headers == []


def test_peer_query_table():
    assert peer_query("POST", "/v1/admin/overrides", 201, '{"override": {"id": "ov_0123456789ab"}}') == \
        "id=ov_0123456789ab"
    assert peer_query("DELETE", "/v1/admin/overrides/ov_0123456789ab", 200, "{}") == ""
    assert peer_query("POST", "/v1/admin/replay", 200, "{}") is None
    assert peer_query("POST", "/v1/admin/kill-switches", 201, "not json") is None
    assert peer_query("POST", "/v1/admin/kill-switches", 409, "{}") is None
