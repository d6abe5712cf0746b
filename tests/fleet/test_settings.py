"""Fleet settings (contract §9): FAIRVISOR_STATE_URL, _ENGINES, _SYNC_INTERVAL_MS, _ENGINE_INDEX and their flags."""

import pytest
from click.testing import CliRunner

from pyengine.cli.main import main
from pyengine.cli.run_cmd import flags_env, resolve
from pyengine.config import ConfigError, from_env

URL = "redis://:hunter2@127.0.0.1:6379/0"


def settings(**env):
    return from_env({"FAIRVISOR_STATE_DIR": "/tmp/fv-state", **env})


def test_defaults_are_one_engine_with_embedded_state():
    s = settings()
    assert (s.state_url, s.engines, s.sync_interval_ms, s.engine_index) == (None, 1, 50, 0)


def test_a_fleet_of_engines_on_a_state_url():
    s = settings(FAIRVISOR_STATE_URL=URL, FAIRVISOR_ENGINES="4", FAIRVISOR_SYNC_INTERVAL_MS="20",
                 FAIRVISOR_ENGINE_INDEX="3")
    assert (s.state_url, s.engines, s.sync_interval_ms, s.engine_index) == (URL, 4, 20, 3)


def test_one_engine_may_share_state_too():
    assert settings(FAIRVISOR_STATE_URL="unix:///run/redis/redis.sock").engines == 1


def test_more_engines_without_a_state_url_name_both_variables():
    with pytest.raises(ConfigError) as info:
        settings(FAIRVISOR_ENGINES="2")
    assert "FAIRVISOR_ENGINES" in str(info.value) and "FAIRVISOR_STATE_URL" in str(info.value)


@pytest.mark.parametrize("env,message", [
    ({"FAIRVISOR_ENGINES": "0"}, "FAIRVISOR_ENGINES: must be >= 1"),
    ({"FAIRVISOR_ENGINES": "two"}, "FAIRVISOR_ENGINES: must be an integer"),
    ({"FAIRVISOR_SYNC_INTERVAL_MS": "0"}, "FAIRVISOR_SYNC_INTERVAL_MS: must be >= 1"),
    ({"FAIRVISOR_SYNC_INTERVAL_MS": "60001"}, "FAIRVISOR_SYNC_INTERVAL_MS: must be at most 60000"),
    ({"FAIRVISOR_SYNC_INTERVAL_MS": "fast"}, "FAIRVISOR_SYNC_INTERVAL_MS: must be an integer"),
    ({"FAIRVISOR_ENGINE_INDEX": "1"}, "FAIRVISOR_ENGINE_INDEX: must be 0..0"),
    ({"FAIRVISOR_ENGINE_INDEX": "-1", "FAIRVISOR_ENGINES": "2", "FAIRVISOR_STATE_URL": URL},
     "FAIRVISOR_ENGINE_INDEX: must be 0..1"),
    ({"FAIRVISOR_STATE_URL": "http://:hunter2@cache:6379"}, "FAIRVISOR_STATE_URL: http://:***@cache:6379: the scheme"),
    ({"FAIRVISOR_STATE_URL": "redis://:hunter2@cache:6379/x"}, "FAIRVISOR_STATE_URL: redis://:***@cache:6379/x:"),
])
def test_bad_values_name_the_variable_and_hide_the_password(env, message):
    with pytest.raises(ConfigError) as info:
        settings(**env)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_sync_interval_bounds_are_accepted():
    assert settings(FAIRVISOR_SYNC_INTERVAL_MS="1").sync_interval_ms == 1
    assert settings(FAIRVISOR_SYNC_INTERVAL_MS="60000").sync_interval_ms == 60000


def test_flags_write_their_variables():
    env = flags_env({"state_url": URL, "engines": "3", "sync_interval_ms": "10", "engine_index": "2"}, base={})
    assert env == {"FAIRVISOR_STATE_URL": URL, "FAIRVISOR_ENGINES": "3", "FAIRVISOR_SYNC_INTERVAL_MS": "10",
                   "FAIRVISOR_ENGINE_INDEX": "2"}


def test_run_refuses_engines_without_a_state_url_before_starting(tmp_path):
    result = CliRunner().invoke(main, ["run", "--engines", "2", "--state-dir", str(tmp_path)], env={})
    assert result.exit_code == 2
    assert "FAIRVISOR_ENGINES" in result.output and "FAIRVISOR_STATE_URL" in result.output


def test_a_bad_state_url_flag_is_a_usage_error_without_the_password(tmp_path):
    result = CliRunner().invoke(main, ["nginx-conf", "--state-url", "redis://:hunter2@cache:99999/0",
                                       "--state-dir", str(tmp_path)], env={})
    assert result.exit_code == 2 and "Port out of range" in result.output
    assert "hunter2" not in result.output and ":***@" in result.output


def test_run_help_lists_the_fleet_flags_but_not_the_engine_index():
    text = CliRunner().invoke(main, ["run", "--help"]).output
    for flag, var in (("--state-url", "FAIRVISOR_STATE_URL"), ("--engines", "FAIRVISOR_ENGINES"),
                      ("--sync-interval-ms", "FAIRVISOR_SYNC_INTERVAL_MS")):
        assert flag in text and var in text
    assert "--engine-index" not in text


def test_resolve_keeps_the_url_for_the_engines():
    s, env = resolve({"state_url": URL, "engines": "2", "state_dir": "/tmp/fv-state"})
    assert (s.state_url, s.engines, env["FAIRVISOR_STATE_URL"]) == (URL, 2, URL)
