"""Regressions for defects the fuzzers found, each pinned with the smallest input that showed it."""

from pyengine.decision.request import normalize_path

from ..engine.helpers import described, make_engine, one_rule_bundle

RULE = {"name": "one", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
        "algorithm_config": {"rps": 1, "burst": 1}}


def test_paths_without_a_leading_slash_are_rooted():
    # Found by test_view_and_every_extractor_take_any_request: uri b"\x00" gave path "\x00".
    assert normalize_path("\x00") == "/\x00"
    assert normalize_path("v1/chat") == "/v1/chat"
    assert normalize_path("*") == "/*"
    assert normalize_path("%2Fv1/chat") == "/v1/chat"


def test_a_slashless_described_uri_cannot_sidestep_a_prefix_selector():
    engine = make_engine(one_rule_bundle(RULE, selector={"pathPrefix": "/v1/"}))
    assert described(engine, uri="/v1/chat").status == 0
    assert described(engine, uri="v1/chat").status == 429


def test_an_absurd_provider_count_falls_back_to_the_counted_tokens():
    # Found by test_settlement_is_the_provider_count_or_the_counted_tokens: a usage of 2**70
    # was charged whole, leaving the tenant's bucket empty for ~2 million years.
    from pyengine.llm.providers import OpenAI
    from pyengine.llm.sse import MAX_TOKENS, count

    assert count(MAX_TOKENS) == MAX_TOKENS and count(MAX_TOKENS + 1) is None and count(2**70) is None
    u = OpenAI.usage(b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1180591620717411303424}}\n')
    assert (u.prompt_tokens, u.completion_tokens) == (5, None)


def test_a_trailing_newline_in_a_name_is_refused_so_it_cannot_reach_a_header():
    # Found in the header-injection review: `$` matches before a final "\n", so the name
    # checks accepted `"per-ip\n"`, which then went into RateLimit-Policy and RateLimit.
    import json

    import pytest

    from pyengine.errors import PolicyError
    from pyengine.policy.loader import load_bundle_bytes

    for field, value in (("name", "per-ip\n"), ("limit_keys", ["header:x-key\n"]), ("limit_keys", ["jwt:sub\n"])):
        bundle = one_rule_bundle({**RULE, field: value})
        with pytest.raises(PolicyError, match=r"\$\.policies\[0\]\.spec\.rules\[0\]"):
            load_bundle_bytes(json.dumps(bundle).encode(), "p.json", 0.0)
    bundle = one_rule_bundle(RULE)
    bundle["policies"][0]["id"] = "p1\n"
    with pytest.raises(PolicyError, match=r"\$\.policies\[0\]\.id"):
        load_bundle_bytes(json.dumps(bundle).encode(), "p.json", 0.0)


def test_huge_prices_are_refused_and_huge_estimates_clamped_so_costs_stay_finite():
    # Found by test_engine_keeps_the_old_bundle_on_refusal_and_decides_under_a_new_one at
    # 10,000 examples: a price of 1e308 loaded, then 50 tokens cost inf and decide() raised
    # OverflowError (then answered "internal": the shim's fail mode, open by default; an
    # exception is now answered engine_error, a rejection).
    import json

    import pytest

    from pyengine.errors import PolicyError
    from pyengine.llm.request import parse_llm_request
    from pyengine.llm.sse import MAX_TOKENS
    from pyengine.policy.loader import load_bundle_bytes

    bundle = one_rule_bundle(RULE)
    bundle["pricing"] = {"*": {"input_usd_per_mtok": 1e308, "output_usd_per_mtok": 1}}
    with pytest.raises(PolicyError, match=r'\$\.pricing\["\*"\]\.input_usd_per_mtok'):
        load_bundle_bytes(json.dumps(bundle).encode(), "p.json", 0.0)
    assert parse_llm_request(None, "/v1/chat", "9" * 4000).prompt_tokens == MAX_TOKENS


def test_a_huge_budget_is_refused_with_a_path_not_an_overflow():
    # Found by the same property: budget 1e308 passed validation, then compiling it to
    # micro-units raised OverflowError out of Engine.load_bytes.
    import json

    import pytest

    from pyengine.errors import PolicyError
    from pyengine.policy.loader import load_bundle_bytes

    rule = {"name": "b", "limit_keys": ["ip:address"], "algorithm": "cost_based",
            "algorithm_config": {"budget": 1e308, "period": "1d"}}
    with pytest.raises(PolicyError, match=r"\$\.policies\[0\]\.spec\.rules\[0\]\.algorithm_config\.budget"):
        load_bundle_bytes(json.dumps(one_rule_bundle(rule)).encode(), "p.json", 0.0)
