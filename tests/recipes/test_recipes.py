"""examples/recipes/*.json: each passes `fairvisor validate` and decides as its README says (in-memory engine)."""

import json
import pathlib

import pytest
from click.testing import CliRunner

from pyengine.cli.main import main
from pyengine.clock import FakeClock
from pyengine.protocol.messages import Usage
from tests.engine.helpers import decide, described, hdr, make_engine, unsigned_jwt

RECIPES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "recipes"
MONDAY_2026_03_02 = 1_772_409_600.0  # 2026-03-02T00:00:00Z


def recipe(name: str) -> dict:
    return json.loads((RECIPES / name).read_text())


def bearer(**claims) -> dict:
    return {"Authorization": "Bearer " + unsigned_jwt(claims)}


def chat(content: str, max_tokens: int, model: str = "gpt-4o") -> bytes:
    return json.dumps({"model": model, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": content}]}).encode()


@pytest.mark.parametrize("name, summary", [
    ("team-budgets.json", "Valid: 1 policy, 1 rule\n"),
    ("runaway-agent-guard.json", "Valid: 1 policy, 1 rule\n"),
    ("per-plan-limits.json", "Valid: 1 policy, 3 rules\n"),
    ("shadow-rollout.json", "Valid: 2 policies, 2 rules\n"),
])
def test_recipe_validates(name, summary):
    result = CliRunner().invoke(main, ["validate", str(RECIPES / name)])
    assert result.exit_code == 0, result.output
    assert result.output == summary


def test_every_recipe_is_tested():
    tested = {"team-budgets.json", "runaway-agent-guard.json", "per-plan-limits.json", "shadow-rollout.json"}
    assert {p.name for p in RECIPES.glob("*.json")} == tested


def test_team_budget_warns_throttles_then_rejects_until_next_month():
    clock = FakeClock(MONDAY_2026_03_02)
    engine = make_engine(recipe("team-budgets.json"), clock=clock, retry_jitter=False)  # base Retry-After
    team = bearer(team="search", sub="ana")

    def spend(completion_tokens: int):
        # Report what the provider actually billed: $10 per million output tokens on gpt-4o.
        v = decide(engine, headers=team, method="POST", uri="/v1/chat/completions", body=chat("hi", 10))
        assert v.status == 0 and v.reservation_id
        engine.handle(Usage(body=json.dumps({"reservation_id": v.reservation_id, "prompt_tokens": 1,
                                             "completion_tokens": completion_tokens, "model": "gpt-4o"}).encode()))
        return v

    spend(4_100_000)  # $41 of $50: past the 80 % warning
    warned = decide(engine, headers=team, method="POST", uri="/v1/chat/completions", body=chat("hi", 10))
    assert warned.status == 0 and hdr(warned, "X-Fairvisor-Warning") == "budget_warn"
    spend(700_000)  # $48: past 95 %, throttled
    throttled = decide(engine, headers=team, method="POST", uri="/v1/chat/completions", body=chat("hi", 10))
    assert throttled.status == 0 and hdr(throttled, "X-Fairvisor-Warning") == "budget_throttle"
    assert throttled.delay_ms == 500

    # A request whose estimate would cross $50 is refused and not charged, until April 1st.
    big = decide(engine, headers=team, method="POST", uri="/v1/chat/completions", body=chat("hi", 300_000))
    assert big.status == 429 and hdr(big, "X-Fairvisor-Reason") == "budget_exhausted"
    assert int(hdr(big, "Retry-After")) == 30 * 86400  # 2026-03-02 -> 2026-04-01

    # Another team has its own budget; a caller without a team claim is not metered.
    other = decide(engine, headers=bearer(team="ads"), method="POST", uri="/v1/chat/completions",
                   body=chat("hi", 300_000))
    assert other.status == 0
    assert decide(engine, method="POST", uri="/v1/chat/completions", body=chat("hi", 300_000)).status == 0


def test_runaway_agent_loop_then_breaker_then_half_open():
    clock = FakeClock(MONDAY_2026_03_02 + 10)
    engine = make_engine(recipe("runaway-agent-guard.json"), clock=clock, retry_jitter=False)  # base Retry-After
    agent = {"X-Agent-Id": "agent-7"}

    def ask(content: str, max_tokens: int, who=agent):
        return decide(engine, headers=who, method="POST", uri="/v1/chat/completions",
                      body=chat(content, max_tokens))

    # The same tool call five times in a minute is a loop; the TPM rule names itself on allow.
    same = [ask("list files in /tmp", 50) for _ in range(5)]
    assert [v.status for v in same[:4]] == [0, 0, 0, 0]
    assert hdr(same[0], "RateLimit").startswith('"agent-tpm";')
    assert same[4].status == 429 and hdr(same[4], "X-Fairvisor-Reason") == "loop_detected"
    assert hdr(same[4], "Retry-After") == "60"

    # One oversized request is refused by the TPM rule's per-request cap.
    huge = ask("write a novel", 9000)
    assert huge.status == 429 and hdr(huge, "X-Fairvisor-Reason") == "max_tokens_per_request_exceeded"

    # Distinct requests that spend over 30k tokens a minute trip the breaker for 5 minutes.
    spent = [ask(f"step {i}", 7000) for i in range(5)]
    assert [v.status for v in spent[:4]] == [0, 0, 0, 0]
    assert hdr(spent[4], "X-Fairvisor-Reason") == "circuit_breaker_open"
    still = ask("step 99", 10)
    assert still.status == 429 and hdr(still, "X-Fairvisor-Reason") == "circuit_breaker_open"
    assert 1 <= int(hdr(still, "Retry-After")) <= 300
    assert ask("step 1", 10, who={"X-Agent-Id": "agent-8"}).status == 0  # other agents keep going

    clock.advance(301)
    assert ask("after the pause", 100).status == 0  # half-open: traffic flows again


def test_per_plan_limits_by_jwt_plan_with_anonymous_fallback():
    engine = make_engine(recipe("per-plan-limits.json"))
    free, pro = bearer(plan="free", sub="u1"), bearer(plan="pro", sub="u2")

    free_statuses = [described(engine, uri="/api/search", headers=free).status for _ in range(6)]
    assert free_statuses == [0] * 5 + [429]
    pro_verdicts = [described(engine, uri="/api/search", headers=pro) for _ in range(6)]
    assert all(v.status == 0 for v in pro_verdicts)
    assert hdr(pro_verdicts[0], "RateLimit-Policy") == '"pro";q=100;w=5'

    # Another free user has their own bucket; no JWT (or an unknown plan) falls back to per-IP.
    assert described(engine, uri="/api/search", headers=bearer(plan="free", sub="u3")).status == 0
    anon = [described(engine, uri="/api/search", xff="203.0.113.9").status for _ in range(3)]
    assert anon == [0, 0, 429]
    odd = described(engine, uri="/api/search", xff="203.0.113.10", headers=bearer(plan="trial", sub="u4"))
    assert hdr(odd, "RateLimit-Policy").startswith('"anonymous";')


def test_shadow_rollout_counts_would_reject_and_changes_nothing():
    engine = make_engine(recipe("shadow-rollout.json"))
    verdicts = [described(engine, uri="/api/items", headers={"X-Api-Key": "k1"}) for _ in range(6)]
    assert all(v.status == 0 for v in verdicts)
    # Only the enforced policy speaks to the client.
    assert all(hdr(v, "RateLimit").startswith('"per-key";') for v in verdicts)
    assert engine.metrics.would_reject.values[("proposed", "rate_limit_exceeded")] == 3
