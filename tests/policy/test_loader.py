"""Loader tests: valid bundles decode to the expected Structs; every error fixture yields
exactly the listed messages (table in test_loader_errors.py); helpers behave."""

import hashlib
import io
import json
import math
import os
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from pyengine.errors import PolicyError
from pyengine.policy.checks import check_bundle
from pyengine.policy.loader import (
    count_rules,
    load_bundle_bytes,
    load_bundle_file,
    policy_hash,
)
from pyengine.policy.schema import (
    Bundle,
    CostBasedConfig,
    LoopDetection,
    ModelPrice,
    Policy,
    PolicySpec,
    Rule,
    Selector,
    StagedAction,
    TokenBucketConfig,
    TokenBucketLLMConfig,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "policies")
NOW_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z
UTC = timezone.utc


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


def load(name: str, now_s: float = NOW_S) -> Bundle:
    return load_bundle_file(fixture(name), now_s)


def test_minimal_api_bundle_decodes_to_expected_structs():
    expected = Bundle(
        bundle_version=1,
        policies=[Policy(id="api", spec=PolicySpec(
            selector=Selector(pathPrefix="/"),
            rules=[Rule(name="per-ip", limit_keys=["ip:address"], algorithm="token_bucket",
                        algorithm_config=TokenBucketConfig(tokens_per_second=10, burst=20))],
        ))],
    )
    assert load("minimal_api.json") == expected
    assert count_rules(expected) == 1


def test_five_rules_bundle():
    bundle = load("five_rules.json")
    assert bundle.bundle_version == 7
    assert bundle.issued_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert bundle.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert count_rules(bundle) == 5
    [policy] = bundle.policies
    assert policy.spec.selector == Selector(pathPrefix="/v1/", methods=["POST"])
    per_ip, per_org, partner, tpm, budget = policy.spec.rules
    assert per_ip.limit_keys == ["ip:address"]
    assert per_ip.algorithm_config == TokenBucketConfig(tokens_per_second=20, burst=40)
    assert per_org.limit_keys == ["jwt:org_id"]
    # The rps alias lands in tokens_per_second.
    assert partner.algorithm_config == TokenBucketConfig(tokens_per_second=200, burst=400)
    assert partner.algorithm_config.rps is None
    assert partner.match == {"header:x-api-key": "partner-7f3a"}
    assert tpm.algorithm_config == TokenBucketLLMConfig(
        tokens_per_minute=60000, tokens_per_day=2000000, burst_tokens=60000,
        max_prompt_tokens=16000, max_completion_tokens=4096, default_max_completion=1000)
    assert budget.algorithm_config == CostBasedConfig(
        budget=50, period="1d", cost_key="llm_usd", staged_actions=[
            StagedAction(threshold_percent=80, action="warn"),
            StagedAction(threshold_percent=95, action="throttle", delay_ms=500),
            StagedAction(threshold_percent=100, action="reject")])
    assert bundle.pricing["gpt-4o-mini"] == ModelPrice(input_usd_per_mtok=0.15,
                                                       output_usd_per_mtok=0.6)
    assert set(bundle.pricing) == {"gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "*"}


def test_full_features_bundle_is_canonicalised():
    bundle = load("full_features.json")
    assert count_rules(bundle) == 4  # 2 rules + 1 fallback, then 1 rule
    partner, team = bundle.policies
    spec = partner.spec
    assert spec.mode == "shadow"
    assert spec.selector == Selector(pathExact="/api/search", methods=["GET", "POST"],
                                     hosts=["api.example.com"])
    per_key, bots = spec.rules
    assert per_key.limit_keys == ["header:x-api-key", "ip:country"]
    assert per_key.match == {"header:x-api-key": "gold", "ip:country": "DE"}
    assert per_key.algorithm_config.cost_source == "header:x-request-cost"
    assert per_key.algorithm_config.tokens_per_second == 0.5
    assert bots.algorithm_config.cost_source == "query:weight"
    assert spec.fallback_limit.name == "everyone-else"
    assert spec.fallback_limit.algorithm_config.fixed_cost == 2.5
    assert spec.loop_detection == LoopDetection(enabled=True, window_seconds=30,
                                                threshold_identical_requests=5,
                                                action="throttle")
    assert spec.circuit_breaker.spend_rate_threshold_per_minute == 1000
    assert team.spec.rules[0].algorithm_config.cost_key == "header:x-credits"
    assert team.spec.rules[0].algorithm_config.period == "7d"
    # Offsets other than Z are accepted, and stored converted to UTC.
    assert bundle.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert bundle.expires_at.tzinfo is UTC
    switch = bundle.kill_switches[0]
    assert (switch.scope_key, switch.route) == ("header:x-api-key", "/api/")
    assert switch.expires_at == datetime(2026, 2, 1, tzinfo=UTC)
    assert bundle.global_shadow.enabled is False


@pytest.mark.parametrize("name", ["minimal_api.json", "five_rules.json", "full_features.json"])
def test_loaded_bundle_reencodes_to_an_equal_bundle(name):
    """Validation is idempotent: a loaded bundle, encoded again, loads to the same Structs."""
    bundle = load(name)
    again = load_bundle_bytes(msgspec.json.encode(bundle), name, NOW_S)
    assert again == bundle


def test_expiry_is_checked_against_now():
    data = json.dumps({"bundle_version": 1, "policies": [],
                       "expires_at": "2026-01-01T00:00:10Z"}).encode()
    assert load_bundle_bytes(data, "p.json", NOW_S + 9.5).bundle_version == 1
    with pytest.raises(PolicyError) as exc:
        load_bundle_bytes(data, "p.json", NOW_S + 10)
    assert exc.value.errors == ["p.json: $.expires_at: bundle expired at 2026-01-01T00:00:10Z"]


def test_stdin_source_name(monkeypatch):
    class FakeStdin:
        buffer = io.BytesIO(b'{"bundle_version": 1, "policies": [], "x": 1}')

    monkeypatch.setattr("sys.stdin", FakeStdin)
    with pytest.raises(PolicyError) as exc:
        load_bundle_file("-", NOW_S)
    assert exc.value.errors == ["<stdin>: $.x: unknown field"]


def test_unreadable_file_is_a_policy_error(tmp_path):
    with pytest.raises(PolicyError) as exc:
        load_bundle_file(str(tmp_path / "nope.json"), NOW_S)
    assert exc.value.errors == ["nope.json: $: cannot read file: No such file or directory"]


def test_policy_hash_is_sha256_prefix_of_raw_bytes():
    assert policy_hash(b"") == "e3b0c44298fc1c14"
    with open(fixture("five_rules.json"), "rb") as f:
        data = f.read()
    assert policy_hash(data) == hashlib.sha256(data).hexdigest()[:16]
    assert policy_hash(data + b" ") != policy_hash(data)


def test_rps_alias_and_burst_tokens_default_apply_to_direct_construction():
    assert TokenBucketConfig(rps=3, burst=6).tokens_per_second == 3
    assert TokenBucketLLMConfig(tokens_per_minute=500).burst_tokens == 500
    with pytest.raises(ValueError, match="exactly one of tokens_per_second or rps"):
        TokenBucketConfig(burst=6)


def test_non_finite_numbers_are_refused_by_the_semantic_pass():
    # JSON cannot carry inf, but a Bundle built from Python objects can.
    bundle = msgspec.convert({
        "bundle_version": 1, "policies": [],
        "pricing": {"m": {"input_usd_per_mtok": math.inf, "output_usd_per_mtok": 1}},
    }, Bundle)
    assert check_bundle(bundle, NOW_S) == [
        ('$.pricing["m"].input_usd_per_mtok', "must be a finite number")]


def test_nan_is_refused_by_the_schema():
    with pytest.raises(msgspec.ValidationError, match=r"> 0.0 - at `\$.burst`"):
        msgspec.convert({"rps": 1, "burst": math.nan}, TokenBucketConfig)


def test_semantic_pass_runs_only_after_a_clean_structure_pass():
    # Rule 0 has a semantic error (burst < rate), rule 1 a structural one: only the latter
    # is reported, since semantics are not checked on a partially decoded bundle.
    doc = {"bundle_version": 1, "policies": [{"id": "p", "spec": {
        "selector": {"pathPrefix": "/"}, "rules": [
            {"name": "a", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
             "algorithm_config": {"rps": 5, "burst": 1}},
            {"name": "b", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
             "algorithm_config": {"rps": 5}}]}}]}
    with pytest.raises(PolicyError) as exc:
        load_bundle_bytes(json.dumps(doc).encode(), "p.json", NOW_S)
    assert exc.value.errors == [
        "p.json: $.policies[0].spec.rules[1].algorithm_config.burst: required field missing"]


def test_kill_switch_expiry_in_the_past_is_not_an_error():
    past = (datetime.fromtimestamp(NOW_S, UTC) - timedelta(days=1)).isoformat()
    doc = {"bundle_version": 1, "policies": [],
           "kill_switches": [{"scope_key": "jwt:sub", "scope_value": "x", "expires_at": past}]}
    bundle = load_bundle_bytes(json.dumps(doc).encode(), "p.json", NOW_S)
    assert bundle.kill_switches[0].expires_at < datetime.fromtimestamp(NOW_S, UTC)
