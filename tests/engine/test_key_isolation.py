"""Finding 1: key values that contain markers or separators never reach another tenant's counters."""

import json

from pyengine.state import keys

from .helpers import decide, described, make_engine, one_rule_bundle, unsigned_jwt

LLM_RULE = {"name": "tpm", "limit_keys": ["jwt:org_id"], "algorithm": "token_bucket_llm",
            "algorithm_config": {"tokens_per_minute": 1000, "tokens_per_day": 1000, "default_max_completion": 400}}
CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()


def as_org(org: str) -> dict:
    return {"Authorization": "Bearer " + unsigned_jwt({"org_id": org})}


def chat(engine, org):
    return decide(engine, headers=as_org(org), method="POST", uri="/v1/chat/completions", body=CHAT)


def test_a_claim_ending_in_the_old_tpd_suffix_has_its_own_counters_and_raises_nothing():
    engine = make_engine(one_rule_bundle(LLM_RULE))
    assert [chat(engine, "victim").status for _ in range(3)] == [0, 0, 429]  # 401 tokens each, 1000 a day
    # The attacker's values are the victim's key plus the old markers: separate state, no error.
    for org in ("victim\x00tpd", "victim\x1f", "~victim", "Dvictim", "victim4:x", "victim-"):
        assert [chat(engine, org).status for _ in range(3)] == [0, 0, 429], org
    assert chat(engine, "victim").status == 429  # the victim's day was not touched either way
    assert engine.metrics.engine_errors.values[("decide",)] == 0


def test_compound_values_with_the_old_separator_are_different_tuples():
    rule = {"name": "pair", "limit_keys": ["header:x-a", "header:x-b"], "algorithm": "token_bucket",
            "algorithm_config": {"rps": 0.001, "burst": 1}}
    engine = make_engine(one_rule_bundle(rule))
    assert described(engine, headers={"X-A": "x\x1fy", "X-B": "z"}).status == 0
    assert described(engine, headers={"X-A": "x", "X-B": "y\x1fz"}).status == 0  # was the same key before
    assert described(engine, headers={"X-A": "x", "X-B": "y\x1fz"}).status == 429
    held = sorted(k for k in engine.store.as_dict() if keys.parse(k).namespace == keys.RULE)
    assert [keys.rule_values(k) for k in held] == [("x", "y\x1fz"), ("x\x1fy", "z")]


def test_the_key_format_is_length_prefixed_and_old_keys_do_not_parse():
    prefix = keys.rule_prefix("p1", "per-org")
    assert prefix == "R2:p17:per-org"
    assert keys.one_value(prefix, "acme") == "R2:p17:per-org4:acme"
    assert keys.values_key(prefix, ("a", "")) == "R2:p17:per-org1:a0:"
    assert keys.day(keys.shadow(keys.one_value(prefix, "acme"))) == "D~R2:p17:per-org4:acme"
    assert keys.absent(prefix) == "R2:p17:per-org-"
    assert keys.rule_values(keys.absent(prefix)) == ()
    for old in ("p1\x1fper-org\x1facme", "p1\x1fper-org\x1facme\x00tpd", "~p1\x1fr\x1fv", "\x00ks\x1fabc",
                "R12\x1frule\x1fv", "R2:p1", "R02:p1", "R2:p17:per-org9:short", ""):
        assert not keys.is_state_key(old), old
