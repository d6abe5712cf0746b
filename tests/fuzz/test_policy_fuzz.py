"""Fuzzing policy bundles through the engine: a mutated bundle loads and decides, or is refused with a path."""

import json

from hypothesis import given
from hypothesis import strategies as st

from pyengine.clock import FakeClock
from pyengine.config import from_env
from pyengine.engine import Engine
from pyengine.errors import PolicyError
from pyengine.protocol.messages import SURFACE_DESCRIBED, SURFACE_INLINE, Verdict

from ..engine.helpers import decide, unsigned_jwt
from ..policy.test_loader_fuzz import SOURCE, check_outcome, mutated_bundles
from .budget import fuzz
from .test_keys_fuzz import assert_header_safe


@fuzz(300)
@given(mutated_bundles())
def test_mutated_bundle_loads_or_fails_with_located_errors(data):
    check_outcome(data)


REQUESTS = [
    dict(method="POST", uri="/v1/chat/completions", headers={"Authorization": "Bearer " + unsigned_jwt(
        {"org_id": "o", "sub": "s", "tier": "pro"}), "X-Api-Key": "k", "X-Tenant": "t", "X-Token-Estimate": "50"},
         body=b'{"model":"gpt-4o","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}'),
    dict(method="GET", uri="/api/x?tenant=a", headers={"User-Agent": "bot", "X-Forwarded-For": "1.2.3.4"}),
]


@fuzz(150)
@given(mutated_bundles(), st.sampled_from(["decision_service", "reverse_proxy"]))
def test_engine_keeps_the_old_bundle_on_refusal_and_decides_under_a_new_one(data, mode):
    settings = {"mode": mode, "backend_url": "http://127.0.0.1:9", "llm_format": "openai"} \
        if mode == "reverse_proxy" else {}
    engine = Engine(from_env({}, decision_log="off", **settings), clock=FakeClock())
    try:
        engine.load_bytes(data, SOURCE)
    except PolicyError as exc:
        assert engine.bundle is None and engine.last_errors == exc.errors
        assert all(e.startswith(f"{SOURCE}: $") for e in exc.errors)
        return
    for request in REQUESTS:
        for surface in (SURFACE_DESCRIBED, SURFACE_INLINE):
            v = decide(engine, surface=surface, **request)
            assert isinstance(v, Verdict)
            assert_header_safe(v)
    engine.upkeep()


@fuzz(300)
@given(st.text(max_size=24), st.sampled_from(["name", "id", "key"]))
def test_any_policy_string_is_refused_or_cannot_split_a_header(text, where):
    rule = {"name": "r", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
            "algorithm_config": {"rps": 1, "burst": 1}}
    policy = {"id": "p", "spec": {"selector": {"pathPrefix": "/"}, "rules": [rule]}}
    if where == "name":
        rule["name"] = text
    elif where == "id":
        policy["id"] = text
    else:
        rule["limit_keys"] = [f"header:{text}"]
    engine = Engine(from_env({}, decision_log="off"), clock=FakeClock())
    try:
        engine.load_bytes(json.dumps({"bundle_version": 1, "policies": [policy]}).encode(), SOURCE)
    except PolicyError:
        return
    for _ in range(2):  # the second is rejected: every RateLimit header is rendered
        v = decide(engine, headers={text: "v"} if where == "key" else None)
        assert_header_safe(v)
    assert v.status == 429 or where == "key"
