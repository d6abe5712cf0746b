"""fairvisor/edge's metric names, exported beside ours, with bounded labels."""

import re

from pyengine import __version__
from pyengine.clock import FakeClock
from pyengine.protocol.messages import Metrics

from tests.engine.helpers import decide, described, make_engine, one_rule_bundle
from tests.engine.test_llm_usage import BUNDLE as LLM_BUNDLE
from tests.engine.test_llm_usage import ORG, chat, usage

RULE = {"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 0.001, "burst": 3}}


def scrape(engine) -> str:
    return engine.handle(Metrics()).body


def sample(text: str, series: str) -> float | None:
    m = re.search("^" + re.escape(series) + r" (\S+)$", text, re.M)
    return None if m is None else float(m.group(1))


def test_decisions_carry_policy_id_and_ratelimit_remaining_follows_the_rule():
    engine = make_engine(one_rule_bundle(RULE))
    for key in ("tenant-a", "tenant-a", "tenant-b"):
        described(engine, headers={"X-Api-Key": key})
    text = scrape(engine)
    assert sample(text, 'fairvisor_decisions_total{action="allow",reason="",policy="p1",policy_id="p1"}') == 3
    assert sample(text, 'fairvisor_ratelimit_remaining{policy="p1",rule="per-key"}') == 2  # tenant-b's first
    assert "tenant-a" not in text and "tenant-b" not in text  # never a tenant key as a label
    for _ in range(3):
        described(engine, headers={"X-Api-Key": "tenant-a"})
    text = scrape(engine)
    assert sample(text, 'fairvisor_decisions_total{action="reject",reason="rate_limit_exceeded",policy="p1",'
                        'policy_id="p1"}') == 2
    assert sample(text, 'fairvisor_ratelimit_remaining{policy="p1",rule="per-key"}') == 0


def test_info_and_shadow_flags():
    clock = FakeClock(1_767_225_600.0)
    bundle = one_rule_bundle(RULE)
    bundle["global_shadow"] = {"enabled": True, "reason": "rollout", "expires_at": "2026-01-01T01:00:00Z"}
    bundle["kill_switch_override"] = {"enabled": True, "reason": "incident", "expires_at": "2026-01-01T00:30:00Z"}
    engine = make_engine(bundle, clock=clock)
    text = scrape(engine)
    assert sample(text, f'fairvisor_build_info{{version="{__version__}"}}') == 1
    assert sample(text, f'fairvisor_config_info{{version="1",hash="{engine.bundle.hash}"}}') == 1
    assert sample(text, "fairvisor_global_shadow_active") == 1
    assert sample(text, "fairvisor_shadow_mode_active") == 1
    assert sample(text, "fairvisor_kill_switch_override_active") == 1
    clock.advance(1800)
    text = scrape(engine)
    assert sample(text, "fairvisor_kill_switch_override_active") == 0
    assert sample(text, "fairvisor_global_shadow_active") == 1
    clock.advance(1800)
    text = scrape(engine)
    assert sample(text, "fairvisor_global_shadow_active") == 0 and sample(text, "fairvisor_shadow_mode_active") == 0


def test_token_metrics_are_derived_from_ours():
    engine = make_engine(one_rule_bundle(RULE))
    m = engine.metrics
    m.tokens_reserved.inc((), 500)
    m.tokens_settled.inc(("prompt",), 120)
    m.tokens_settled.inc(("completion",), 80)
    for ratio in (1.25, 0.75, 1.0, 1.0):  # estimated / actual
        m.estimate_error.observe(ratio)
    text = scrape(engine)
    assert sample(text, 'fairvisor_tokens_consumed_total{type="reserved"}') == 500
    assert sample(text, 'fairvisor_tokens_consumed_total{type="actual"}') == 200
    assert sample(text, "fairvisor_token_estimation_accuracy_ratio") == 1.0
    assert "# TYPE fairvisor_tokens_consumed_total counter" in text


def test_tokens_remaining_and_unused_reservations_from_llm_decisions():
    engine = make_engine(LLM_BUNDLE, clock=FakeClock())
    v = decide(engine, headers=ORG, method="POST", uri="/v1/chat/completions", body=chat(max_tokens=500))
    assert v.reservation_id  # 300 tokens reserved; RateLimit says the TPM rule has 700 left
    usage(engine, reservation_id=v.reservation_id, prompt_tokens=90, completion_tokens=10)
    text = scrape(engine)
    assert sample(text, 'fairvisor_tokens_remaining{policy="llm",rule="tpm",window="tpm"}') == 700
    assert sample(text, 'fairvisor_ratelimit_remaining{policy="llm",rule="tpm"}') == 700
    assert sample(text, "fairvisor_token_reservation_unused_total") == 200  # 300 reserved, 100 used
    assert sample(text, 'fairvisor_tokens_consumed_total{type="reserved"}') == 300
    assert sample(text, 'fairvisor_tokens_consumed_total{type="actual"}') == 100
