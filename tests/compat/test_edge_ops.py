"""FAIRVISOR_LOG_LEVEL=debug decision traces, and a /readyz body that fairvisor/edge probes accept."""

import json
import logging

from pyengine.protocol.messages import Health

from tests.engine.helpers import described, make_engine, one_rule_bundle

RULE = {"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 0.001, "burst": 1}}


def traces(caplog) -> list[dict]:
    prefix = "decision trace: "
    return [json.loads(r.getMessage()[len(prefix):]) for r in caplog.records
            if r.name == "fairvisor.engine" and r.levelno == logging.DEBUG and r.getMessage().startswith(prefix)]


def test_debug_level_logs_one_trace_per_decision_without_raw_keys(caplog):
    caplog.set_level(logging.DEBUG, logger="fairvisor.engine")
    engine = make_engine(one_rule_bundle(RULE), log_level="debug")
    assert [described(engine, headers={"X-Api-Key": "secret-tenant"}).status for _ in range(2)] == [0, 429]
    got = traces(caplog)
    assert len(got) == 2
    assert got[0]["verdict"]["action"] == "allow" and got[1]["verdict"]["reason"] == "rate_limit_exceeded"
    assert got[1]["policies"][0]["rules"][0]["rule"] == "per-key"
    assert "secret-tenant" not in caplog.text  # FAIRVISOR_LOG_KEYS=hashed (the default) keeps keys out


def test_other_levels_take_the_plain_path_and_log_no_trace(caplog):
    caplog.set_level(logging.DEBUG, logger="fairvisor.engine")
    engine = make_engine(one_rule_bundle(RULE), log_level="info")
    assert engine.decide == engine.decide_untraced  # chosen once: nothing checked per request
    described(engine, headers={"X-Api-Key": "k"})
    assert traces(caplog) == []


def test_readyz_body_says_ok_and_ready():
    engine = make_engine(one_rule_bundle(RULE))
    reply = engine.handle(Health())
    body = json.loads(reply.body)
    assert reply.status == 200 and body["status"] == "ok" and body["ready"] is True
    assert '"ready":true' in reply.body
