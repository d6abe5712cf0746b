"""fairvisor/edge bundles: every key and field its policy reference documents is accepted with its
meaning, or refused with an error that names the field and says why (docs/migrating.md)."""

import copy
import json
import logging
import pathlib

import pytest
from click.testing import CliRunner

from pyengine.cli.main import main
from pyengine.clock import FakeClock
from pyengine.errors import PolicyError
from pyengine.policy.loader import load_bundle_bytes

from tests.engine.helpers import decide, described, hdr, make_engine, one_rule_bundle, unsigned_jwt

BUNDLES = pathlib.Path(__file__).parent.parent / "fixtures" / "edge_bundles"
NOW_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def bundle(name: str) -> dict:
    return json.loads((BUNDLES / name).read_text())


def errors_of(doc: dict) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        load_bundle_bytes(json.dumps(doc).encode(), "policy.json", NOW_S)
    return exc.value.errors


@pytest.mark.parametrize("name", sorted(p.name for p in BUNDLES.glob("*.json")))
def test_every_edge_shaped_bundle_passes_validate(name):
    result = CliRunner().invoke(main, ["validate", str(BUNDLES / name)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Valid: ")


def rule(keys, match=None, **cfg):
    r = {"name": "r", "limit_keys": keys, "algorithm": "token_bucket",
         "algorithm_config": {"tokens_per_second": 0.001, "burst": 1, **cfg}}
    if match is not None:
        r["match"] = match
    return r


@pytest.mark.parametrize("mutate, path, words", [
    (lambda s: s["loop_detection"].update(similarity="semantic"), "spec.loop_detection.similarity", "exactly"),
    (lambda s: s["circuit_breaker"].update(action="throttle"), "spec.circuit_breaker.action", "refuses"),
    (lambda s: s["circuit_breaker"].update(auto_reset_after_minutes=0),
     "spec.circuit_breaker.auto_reset_after_minutes", "no manual breaker reset"),
    (lambda s: s["circuit_breaker"].pop("auto_reset_after_minutes"),
     "spec.circuit_breaker.auto_reset_after_minutes", "required when enabled"),
    (lambda s: s["loop_detection"].pop("window_seconds"), "spec.loop_detection.window_seconds", "required when enabled"),
    (lambda s: s["circuit_breaker"].pop("spend_rate_threshold_per_minute"),
     "spec.circuit_breaker.spend_rate_threshold_per_minute", "required when enabled"),
    (lambda s: s["rules"][0]["match"].update({"ip:type": "cloud"}), 'spec.rules[0].match["ip:type"]', '"hosting"'),
    (lambda s: s["rules"][1]["match"].update({"ip:tor": "maybe"}), 'spec.rules[1].match["ip:tor"]',
     'must be "true" or "false"'),
    (lambda s: s["rules"][2]["match"].update({"ua:bot_category": "robot"}),
     'spec.rules[2].match["ua:bot_category"]', '"ai_crawler"'),
])
def test_meanings_that_cannot_hold_here_are_refused_naming_the_field(mutate, path, words):
    doc = bundle("every_field.json")
    mutate(doc["policies"][0]["spec"])
    errors = errors_of(doc)
    assert len(errors) == 1
    assert errors[0].startswith(f"policy.json: $.policies[0].{path}: ") and words in errors[0]


def test_llm_config_spellings_of_the_edge_examples():
    doc = bundle("llm_limits.json")
    engine = make_engine(doc)
    assert engine.bundle.policies[0].rules[0].cfg.default_max_completion == 1024
    cfg = doc["policies"][0]["spec"]["rules"][0]["algorithm_config"]
    wrong = copy.deepcopy(doc)
    wrong["policies"][0]["spec"]["rules"][0]["algorithm_config"]["algorithm"] = "cost_based"
    assert errors_of(wrong) == ['policy.json: $.policies[0].spec.rules[0].algorithm_config.algorithm: '
                                'must equal the rule\'s algorithm ("token_bucket_llm") when given']
    both = copy.deepcopy(doc)
    both["policies"][0]["spec"]["rules"][0]["algorithm_config"].update(default_max_completion=512)
    assert "default_max_completion_tokens" in errors_of(both)[0]
    assert cfg["default_max_completion_tokens"] == 1024


def test_disabled_guard_blocks_need_no_numbers_and_add_no_guard():
    engine = make_engine(bundle("every_field.json"), clock=FakeClock(NOW_S))
    assistant = engine.bundle.policies[1]
    assert assistant.id == "assistant" and assistant.guards is None


def test_nameless_fallback_is_called_fallback_limit_and_a_numeric_claim_matches_its_text():
    doc = one_rule_bundle(rule(["jwt:tier"], match={"jwt:tier": "2"}))
    doc["policies"][0]["spec"]["fallback_limit"] = {"limit_keys": ["ip:address"], "algorithm": "token_bucket",
                                                    "algorithm_config": {"tokens_per_second": 5, "burst": 5}}
    engine = make_engine(doc)
    tier2 = {"Authorization": "Bearer " + unsigned_jwt({"tier": 2})}
    assert described(engine, headers=tier2).status == 0
    assert hdr(described(engine, headers=tier2), "X-Fairvisor-Reason") == "rate_limit_exceeded"
    other = described(engine, headers={"Authorization": "Bearer " + unsigned_jwt({"tier": 3})})
    assert other.status == 0 and hdr(other, "RateLimit").startswith('"fallback_limit";')


def test_kill_switch_override_skips_switches_until_it_expires():
    doc = bundle("kill_switch.json")
    doc["kill_switch_override"] = {"enabled": True, "reason": "false positive", "expires_at": "2026-01-01T00:05:00Z"}
    clock = FakeClock(NOW_S)
    engine = make_engine(doc, clock=clock)
    assert described(engine, headers={"X-Account": "acct-9"}).status == 0
    clock.advance(301)
    v = described(engine, headers={"X-Account": "acct-9"})
    assert v.status == 429 and hdr(v, "X-Fairvisor-Reason") == "kill_switch_active"
    disabled = bundle("kill_switch.json")
    disabled["kill_switch_override"] = {"enabled": False}
    assert described(make_engine(disabled), headers={"X-Account": "acct-9"}).status == 429


def test_breaker_alert_logs_the_opening_at_error_level(caplog):
    caplog.set_level(logging.WARNING, logger="fairvisor.guards")
    doc = bundle("breaker_alert.json")
    engine = make_engine(doc, clock=FakeClock(NOW_S))
    tenant = {"Authorization": "Bearer " + unsigned_jwt({"tenant": "t1"})}
    statuses = [decide(engine, headers=tenant, method="POST", uri="/v1/x").status for _ in range(251)]
    assert statuses[:250] == [0] * 250 and statuses[250] == 429
    opened = [r for r in caplog.records if "circuit breaker opened" in r.getMessage()]
    assert len(opened) == 1 and opened[0].levelno == logging.ERROR and "alert=true" in opened[0].getMessage()
    doc["policies"][0]["spec"]["circuit_breaker"]["alert"] = False
    caplog.clear()
    quiet = make_engine(doc, clock=FakeClock(NOW_S))
    for _ in range(251):
        decide(quiet, headers=tenant, method="POST", uri="/v1/x")
    opened = [r for r in caplog.records if "circuit breaker opened" in r.getMessage()]
    assert len(opened) == 1 and opened[0].levelno == logging.WARNING and "alert=false" in opened[0].getMessage()


def test_budget_warn_stage_at_zero_percent_warns_from_the_first_request():
    doc = one_rule_bundle({"name": "b", "limit_keys": ["header:x-k"], "algorithm": "cost_based",
                           "algorithm_config": {"budget": 10, "period": "1h",
                                                "staged_actions": [{"threshold_percent": 0, "action": "warn"},
                                                                   {"threshold_percent": 100, "action": "reject"}]}})
    v = described(make_engine(doc), headers={"X-K": "a"})
    assert v.status == 0 and hdr(v, "X-Fairvisor-Warning") == "budget_warn"
