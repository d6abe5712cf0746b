"""Table-driven error tests: one fixture per error kind, each with its exact messages.

Every file in tests/fixtures/policy_errors/ must appear here and vice versa, so a new error
kind cannot be added without pinning its wording.
"""

import os

import pytest

from pyengine.errors import PolicyError
from pyengine.policy.loader import load_bundle_file

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "policy_errors")
NOW_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z

SPEC = "$.policies[0].spec"
R0 = f"{SPEC}.rules[0]"
CFG = f"{R0}.algorithm_config"
KEYS = "(expected jwt:<claim>, header:<name>, query:<name>, ip:address, ip:country, ip:asn, ip:type, ip:tor, ua:bot, ua:bot_category or llm:model)"
REJECT_100 = "a reject action at threshold_percent 100 is required"

# fixture name -> every message, in order, without the "<file>: " prefix the test adds.
EXPECTED: dict[str, list[str]] = {
    "algorithm_config_not_object": [f'{CFG}: must be an object (got an array)'],
    "bundle_version_zero": ['$.bundle_version: must be an integer > 0 (got 0)'],
    "budget_below_minimum": [f'{CFG}.budget: must be >= 1e-06, one micro-unit (got 1e-09)'],
    "burst_below_rate": [
        f'{SPEC}.rules[1].algorithm_config.burst: must be >= tokens_per_second (5)',
    ],
    "circuit_breaker_zero_threshold": [
        f'{SPEC}.circuit_breaker.spend_rate_threshold_per_minute: must be a number > 0 (got 0)',
    ],
    "cost_invalid_cost_key": [
        f'{CFG}.cost_key: must be "fixed", "header:<name>", "query:<name>" or "llm_usd"'
        ' (got "usd")',
    ],
    "cost_unknown_period": [
        f'{CFG}.period: must be one of "5m", "1h", "1d", "7d" or "1mo" (got "1w")',
    ],
    "cost_zero_budget": [f'{CFG}.budget: must be a number > 0 and <= 1000000000000 (got 0)'],
    "delay_above_cap": [
        f'{CFG}.staged_actions[0].delay_ms: must be an integer from 0 to 30000 (got 60000)',
    ],
    "delay_on_warn": [f'{CFG}.staged_actions[0].delay_ms: only allowed when action is "throttle"'],
    "duplicate_limit_key": [f'{R0}.limit_keys[1]: duplicate limit key "header:x-api-key"'],
    "duplicate_policy_id": ['$.policies[2].id: duplicate policy id "api"'],
    "duplicate_rule_name": [
        f'{SPEC}.rules[1].name: duplicate rule name "per-ip"',
        f'{SPEC}.fallback_limit.name: duplicate rule name "per-ip"',
    ],
    "empty_file": ['$: invalid JSON: the document is empty'],
    "empty_limit_keys": [f'{R0}.limit_keys: must be a non-empty array (got [])'],
    "empty_policy_id": ['$.policies[0].id: must be a non-empty string (got "")'],
    "errors_in_several_rules": [
        f'{CFG}.burst: required field missing',
        f'{SPEC}.rules[1].algorithm_config.tokens_per_minute: must be an integer >= 1 (got "1000")',
        '$.policies[1].spec.mode: must be one of "enforce" or "shadow" (got "dry-run")',
        '$.kill_switches[0].scope_value: required field missing',
    ],
    "expired_bundle": ['$.expires_at: bundle expired at 2025-12-31T23:59:59Z'],
    "expires_before_issued": ['$.expires_at: must be after issued_at (2029-01-01T00:00:00Z)'],
    "fallback_limit_invalid": [
        f'{SPEC}.fallback_limit.algorithm_config.burst: must be >= tokens_per_second (10)',
    ],
    "fallback_limit_unknown_field": [f'{SPEC}.fallback_limit.priority: unknown field'],
    "fallback_limit_with_match": [f'{SPEC}.fallback_limit.match: not allowed on fallback_limit'],
    "fixed_cost_above_burst": [f'{CFG}.fixed_cost: must be <= burst (2)'],
    "global_shadow_missing_enabled": ['$.global_shadow.enabled: required field missing'],
    "invalid_cost_source": [
        f'{CFG}.cost_source: must be "fixed", "header:<name>" or "query:<name>"'
        ' (got "body:tokens")',
    ],
    "invalid_json": ['$: invalid JSON at line 3, column 16'],
    "invalid_limit_key": [
        f'{R0}.limit_keys[1]: invalid limit key "cookie:session" {KEYS}',
        f'{R0}.limit_keys[2]: invalid limit key "jwt:" {KEYS}',
        f'{R0}.limit_keys[3]: invalid limit key "header:bad header" {KEYS}',
    ],
    "invalid_policy_id": [
        '$.policies[0].id: must use only letters, digits, ".", "_" and "-" (at most 128)',
    ],
    "invalid_rule_name": [
        f'{R0}.name: must use only letters, digits, ".", "_" and "-" (at most 128)',
    ],
    "invalid_timestamp": [
        '$.expires_at: must be an RFC 3339 timestamp with a timezone offset (got "next tuesday")',
    ],
    "invalid_utf8": ['$: invalid JSON: not valid UTF-8 (byte 51)'],
    "kill_switch_empty_value": ['$.kill_switches[0].scope_value: must not be empty'],
    "kill_switch_invalid_scope_key": [
        f'$.kill_switches[0].scope_key: invalid limit key "user" {KEYS}',
    ],
    "kill_switch_route_without_slash": ['$.kill_switches[0].route: must start with "/"'],
    "kill_switch_unknown_field": ['$.kill_switches[1].ttl: unknown field'],
    "llm_burst_below_tpm": [f'{CFG}.burst_tokens: must be >= tokens_per_minute (1000)'],
    "llm_fractional_tokens": [f'{CFG}.tokens_per_minute: must be an integer >= 1 (got 1000.5)'],
    "llm_missing_tpm": [f'{CFG}.tokens_per_minute: required field missing'],
    "loop_detection_threshold_below_2": [
        f'{SPEC}.loop_detection.threshold_identical_requests: must be an integer >= 2 (got 1)',
    ],
    "loop_detection_unknown_action": [
        f'{SPEC}.loop_detection.action: must be one of "reject", "throttle" or "warn"'
        ' (got "block")',
    ],
    "match_key_not_in_limit_keys": [
        f"{R0}.match[\"jwt:plan\"]: \"jwt:plan\" is not one of the rule's limit_keys",
    ],
    "match_value_not_string": [f'{R0}.match["header:x-plan"]: must be a string (got 3)'],
    "match_ua_bot_not_boolean": [f'{R0}.match["ua:bot"]: must be "true" or "false"'],
    "missing_bundle_version": ['$.bundle_version: required field missing'],
    "missing_policy_id": ['$.policies[0].id: required field missing'],
    "naive_timestamp": ['$.issued_at: must be an RFC 3339 timestamp with a timezone offset'
                        ' (got "2026-01-01T00:00:00")'],
    "nan_literal": ['$: invalid JSON: NaN is not a JSON value'],
    "negative_rate": [f'{CFG}.rps: must be a number > 0 (got -1)'],
    "nested_too_deeply": ['$: invalid JSON: nested too deeply'],
    "not_an_object": ['$: must be an object (got an array)'],
    "number_out_of_range": ['$: invalid JSON: number out of range'],
    "number_above_policy_max": [
        f'{SPEC}.loop_detection.window_seconds: must be <= 1e+12 (got 1e+300)',
        f'{SPEC}.circuit_breaker.auto_reset_after_minutes: must be <= 1e+12 (got 1e+300)',
        f'{CFG}.burst: must be <= 1e+12 (got 1e+13)',
        f'{SPEC}.rules[1].algorithm_config.tokens_per_minute: must be <= 1e+12 (got 2e+12)',
    ],
    "on_missing_key_unknown": [f'{R0}.on_missing_key: must be one of "skip", "reject" or "shared" (got "allow")'],
    "strict_on_concurrency": [f'{R0}.consistency: "strict" is not available for concurrency '
                              '(only token_bucket, token_bucket_llm, cost_based)'],
    "consistency_unknown": [f'{R0}.consistency: must be one of "local" or "strict" (got "eventual")'],
    "rate_below_minimum": [f'{CFG}.tokens_per_second: must be >= 1e-06 tokens per second (got 1e-300)'],
    "pricing_empty_model_name": ['$.pricing[""]: model name must not be empty'],
    "pricing_negative": [
        '$.pricing["gpt-4o"].output_usd_per_mtok: must be a number >= 0 (got -10)',
    ],
    "selector_empty_methods": [
        f'{SPEC}.selector.methods: must not be empty (omit it to match any method)',
    ],
    "selector_host_with_port": [f'{SPEC}.selector.hosts[0]: must not include a port'],
    "selector_invalid_method": [f'{SPEC}.selector.methods[1]: invalid HTTP method "PO ST"'],
    "selector_path_with_query": [
        f'{SPEC}.selector.pathExact: must not contain a query string or fragment',
    ],
    "selector_path_without_slash": [f'{SPEC}.selector.pathPrefix: must start with "/"'],
    "selector_with_both_paths": [
        f'{SPEC}.selector: exactly one of pathPrefix or pathExact is required',
    ],
    "selector_without_path": [
        f'{SPEC}.selector: exactly one of pathPrefix or pathExact is required',
    ],
    "semantic_errors_collected": [
        f'{SPEC}.selector.pathPrefix: must start with "/"',
        f'{CFG}.burst: must be >= tokens_per_second (5)',
        f'{SPEC}.rules[1].name: duplicate rule name "per-ip"',
        f'{SPEC}.rules[1].limit_keys[0]: invalid limit key "ip:adress" {KEYS}',
        '$.policies[1].id: duplicate policy id "api"',
        f'$.policies[1].spec.rules[0].algorithm_config.staged_actions: {REJECT_100}',
        f'$.kill_switches[0].scope_key: invalid limit key "ip" {KEYS}',
    ],
    "staged_actions_empty": [
        f'{CFG}.staged_actions: {REJECT_100}',
    ],
    "staged_actions_missing_reject": [
        f'{CFG}.staged_actions: {REJECT_100}',
    ],
    "staged_actions_not_ascending": [
        f'{CFG}.staged_actions[1].threshold_percent:'
        ' must be greater than the previous threshold (90)',
    ],
    "threshold_above_100": [
        f'{CFG}.staged_actions[1].threshold_percent: must be a number from 0 to 100 (got 120)',
    ],
    "throttle_without_delay": [
        f'{CFG}.staged_actions[0].delay_ms: required when action is "throttle"',
    ],
    "timestamp_out_of_range": ['$.issued_at: out of range once converted to UTC'],
    "token_bucket_rate_and_rps": [f'{CFG}: exactly one of tokens_per_second or rps is required'],
    "token_bucket_without_rate": [f'{CFG}: exactly one of tokens_per_second or rps is required'],
    "unknown_algorithm": [
        f'{R0}.algorithm: must be one of "token_bucket", "token_bucket_llm", "cost_based" or "concurrency"'
        ' (got "leaky_bucket")',
    ],
    "unknown_field_in_algorithm_config": [f'{CFG}.burts: unknown field'],
    "unknown_mode": [f'{SPEC}.mode: must be one of "enforce" or "shadow" (got "audit")'],
    "unknown_top_level_field": ['$.bundel_version: unknown field'],
    "wrong_type": ['$.bundle_version: must be an integer > 0 (got "3")'],
}


def test_every_fixture_has_an_expectation_and_vice_versa():
    names = {f[:-5] for f in os.listdir(FIXTURES) if f.endswith(".json")}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_error_fixture_reports_exact_messages(name):
    filename = f"{name}.json"
    with pytest.raises(PolicyError) as exc:
        load_bundle_file(os.path.join(FIXTURES, filename), NOW_S)
    assert exc.value.errors == [f"{filename}: {message}" for message in EXPECTED[name]]
    assert str(exc.value) == "\n".join(exc.value.errors)
