"""The admin endpoints in the engine (pyengine/admin.py): token check, routes, and the public
/readyz that carries nothing but status, version and hash (contract §2, §8)."""

import json

import pytest
from hypothesis import given, strategies as st

from pyengine.protocol.messages import Admin, Health
from tests.fuzz.budget import fuzz

from .helpers import described, make_engine, one_rule_bundle

RULE = {"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 1, "burst": 1}}
TOKEN = "s3cret-token"


def admin(engine, uri: bytes, auth: bytes | None = None, method: bytes = b"GET"):
    return engine.handle(Admin(uri=uri, method=method, authorization=auth))


def busy(**settings):
    engine = make_engine(one_rule_bundle(RULE, version=4), decision_log="off", **settings)
    for _ in range(3):
        described(engine, xff="192.0.2.9")
    return engine


def test_public_health_is_status_version_and_hash_only():
    engine = busy()
    body = json.loads(engine.handle(Health()).body)
    assert body == {"status": "ok", "ready": True, "policy_version": 4, "policy_hash": engine.bundle.hash}


def test_public_health_not_ready_carries_no_errors():
    from pyengine.config import from_env
    from pyengine.engine import Engine

    engine = Engine(from_env({}, decision_log="off"))
    engine.last_errors = ["policy.json: $.policies: secret detail"]
    reply = engine.handle(Health())
    assert reply.status == 503
    assert json.loads(reply.body) == {"status": "not_ready", "ready": False, "reason": "no_policy_loaded"}
    full = json.loads(admin(engine, b"/readyz").body)
    assert full["errors"] == engine.last_errors and full["state"]["backend"] == "memory"


def test_admin_readyz_has_the_detail():
    engine = busy()
    reply = admin(engine, b"/readyz?verbose=1")
    body = json.loads(reply.body)
    assert reply.status == 200 and body["policy_version"] == 4
    assert body["top_rejected_keys"][0]["rejections"] == 2
    assert body["state"] == {"backend": "memory", "status": "ok", "keys": len(engine.store), "durable": False}


def test_admin_metrics_reports_the_shim_counts_it_carries():
    engine = busy()
    reply = engine.handle(Admin(uri=b"/metrics", method=b"GET", engine_unavailable_delta=3))
    assert reply.status == 200 and "fairvisor_engine_unavailable_total 3" in reply.body


def test_routes_404_and_405():
    engine = busy()
    assert admin(engine, b"/nope").status == 404
    assert admin(engine, b"/metrics", method=b"DELETE").status == 405
    assert admin(engine, b"/livez", method=b"HEAD").status == 200


@pytest.mark.parametrize("auth", [None, b"", b"Bearer", b"Bearer ", b"Bearer wrong", b"Basic " + TOKEN.encode(),
                                  b"Bearer " + TOKEN.encode() + b"x", b"Bearer " + TOKEN[:-1].encode(),
                                  b"Bearer " + TOKEN.encode() + b", Bearer " + TOKEN.encode(),
                                  TOKEN.encode()])
def test_with_a_token_anything_else_is_401(auth):
    engine = busy(admin_token=TOKEN)
    for uri in (b"/metrics", b"/readyz", b"/livez", b"/nope"):
        reply = admin(engine, uri, auth)
        assert reply.status == 401 and reply.headers[0] == "WWW-Authenticate"
        assert "policy_version" not in reply.body


@pytest.mark.parametrize("auth", [b"Bearer " + TOKEN.encode(), b"bearer " + TOKEN.encode(),
                                  b"  Bearer  " + TOKEN.encode() + b" "])
def test_the_token_opens_every_endpoint(auth):
    engine = busy(admin_token=TOKEN)
    assert [admin(engine, uri, auth).status for uri in (b"/metrics", b"/readyz", b"/livez")] == [200, 200, 200]


def test_without_a_token_none_is_needed():
    assert admin(busy(), b"/readyz").status == 200


_NEAR_TOKEN = st.builds(lambda scheme, pre, post: scheme + b" " + pre + TOKEN.encode() + post,
                        st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"Basic", b"Bearer:", b""]),
                        st.binary(max_size=3), st.binary(max_size=3))


@fuzz(300)
@given(st.one_of(st.binary(max_size=80), _NEAR_TOKEN))
def test_no_other_bytes_pass_the_token_check(auth):
    scheme, _, cred = auth.strip().partition(b" ")
    expected = scheme.lower() == b"bearer" and cred.strip() == TOKEN.encode()
    assert _API.authorized(auth) is expected


_API = busy(admin_token=TOKEN).admin
