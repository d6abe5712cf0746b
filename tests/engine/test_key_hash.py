"""Finding 12: shown keys are a keyed hash with a per-install secret, and hashed mode keeps raw keys out of the engine log."""

import json
import logging
import os
import stat

from pyengine.decision.key_hash import SECRET_FILE, KeyHasher, load_secret

from ..guards.test_pipeline_guards import bundle, cost_rules
from .helpers import decide, described, make_engine, one_rule_bundle

TENANT = "tenant-4711"


def test_two_installs_hash_one_key_differently_and_one_install_stays_stable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    first = KeyHasher(str(a)).show(TENANT)
    assert KeyHasher(str(a)).show(TENANT) == first  # same install, after a restart
    assert KeyHasher(str(b)).show(TENANT) != first
    assert len(first) == 16 and TENANT not in first
    assert stat.S_IMODE(os.stat(a / SECRET_FILE).st_mode) == 0o600
    assert len(load_secret(str(a))) == 32
    assert KeyHasher(str(a), hashed=False).show(TENANT) == TENANT  # FAIRVISOR_LOG_KEYS=raw


def test_a_truncated_secret_is_refused_and_hashing_still_keys_on_a_random_one(tmp_path, caplog):
    (tmp_path / SECRET_FILE).write_bytes(b"short")
    h = KeyHasher(str(tmp_path))
    with caplog.at_level(logging.ERROR, logger="fairvisor.keys"):
        shown = h.show(TENANT)
    assert "shorter than 32 bytes" in caplog.text
    assert shown != KeyHasher(str(tmp_path / "other")).show(TENANT)


def test_health_top_keys_use_the_install_secret(tmp_path):
    rule = {"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
            "algorithm_config": {"rps": 1, "burst": 1}}
    engine = make_engine(one_rule_bundle(rule), state_dir=str(tmp_path))
    for _ in range(2):
        described(engine, xff="10.0.0.9")
    top = json.loads(engine.admin.readiness().body)["top_rejected_keys"]
    assert top == [{"policy": "p1", "key": KeyHasher(str(tmp_path)).show("10.0.0.9"), "rejections": 1}]


def run_breaker(tmp_path, caplog, log_keys):
    engine = make_engine(bundle(rules=cost_rules(), breaker={"spend_rate_threshold_per_minute": 1,
                                                             "auto_reset_after_minutes": 1}),
                         state_dir=str(tmp_path), log_keys=log_keys)
    with caplog.at_level(logging.DEBUG):
        assert decide(engine, headers={"X-Api-Key": TENANT, "X-Cost": "5"}).status == 429  # opens the breaker
    return caplog.text


def test_hashed_mode_keeps_the_raw_key_out_of_the_engine_log(tmp_path, caplog):
    text = run_breaker(tmp_path, caplog, "hashed")
    assert "circuit breaker opened" in text
    assert TENANT not in text
    assert KeyHasher(str(tmp_path)).show(TENANT) in text


def test_raw_mode_logs_the_raw_key(tmp_path, caplog):
    assert TENANT in run_breaker(tmp_path, caplog, "raw")
