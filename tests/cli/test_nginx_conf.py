"""Rendering the nginx config and mapping `fairvisor run` flags onto FAIRVISOR_* settings."""

import re
import shutil
import subprocess

import click
import pytest

from pyengine.cli.nginx_conf import RenderError, lua_string, nginx_string, prepare_runtime_dir, render
from pyengine.cli.run_cmd import flags_env
from pyengine.config import from_env


def settings(**env):
    base = {"FAIRVISOR_STATE_DIR": "/tmp/fv-state", "FAIRVISOR_LISTEN": "127.0.0.1:18080"}
    base.update(env)
    return from_env(base)


def test_decision_service_config_is_self_contained():
    conf = render(settings(FAIRVISOR_WORKER_PROCESSES="3", FAIRVISOR_ENGINE_TIMEOUT_MS="250",
                           FAIRVISOR_FAIL_MODE="closed"), "/tmp/fv-run")
    assert conf.index("ndk_http_module.so") < conf.index("ngx_http_lua_module.so")
    assert "daemon off;" in conf
    assert "worker_processes 3;" in conf
    assert "pid /tmp/fv-run/nginx.pid;" in conf
    assert "error_log /tmp/fv-run/error.log" in conf
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{temp}_temp_path /tmp/fv-run/tmp/{temp};" in conf
    assert "access_log off;" in conf
    assert "listen 127.0.0.1:18080;" in conf
    assert 'socket = "/tmp/fv-state/engine.sock"' in conf
    assert "timeout_ms = 250" in conf
    assert 'fail_mode = "closed"' in conf
    for location in ("= /v1/decision", "= /v1/usage", "= /readyz", "= /livez", "= /metrics", "location / "):
        assert location in conf
    assert "{{" not in conf and "proxy_pass" not in conf


def test_reverse_proxy_strips_injects_and_forwards():
    conf = render(settings(FAIRVISOR_MODE="reverse_proxy", FAIRVISOR_BACKEND_URL="https://api.example.com/base/",
                           FAIRVISOR_STRIP_REQUEST_HEADERS="Authorization, X-Client-Key",
                           FAIRVISOR_UPSTREAM_HEADER_X_Api_Key='sk-"$HOME"'), "/tmp/fv-run")
    assert "server api.example.com:443;" in conf
    assert "proxy_pass https://fairvisor_backend/base$fairvisor_upstream_uri;" in conf
    assert 'proxy_set_header Host "api.example.com";' in conf
    assert "proxy_ssl_name api.example.com;" in conf
    assert 'proxy_set_header authorization "";' in conf
    assert 'proxy_set_header x-client-key "";' in conf
    # "$" must not become an nginx variable, and the quote is escaped.
    assert 'proxy_set_header X-Api-Key "sk-\\"${fairvisor_dollar}HOME\\"";' in conf
    assert "access_by_lua_block" in conf and "header_filter_by_lua_block" in conf
    assert "(?:openai|anthropic|gemini)" in conf


@pytest.mark.parametrize(("env", "message"), [
    ({"FAIRVISOR_LISTEN": "not a port"}, "FAIRVISOR_LISTEN"),
    ({"FAIRVISOR_WORKER_PROCESSES": "0"}, "FAIRVISOR_WORKER_PROCESSES"),
    ({"FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_BACKEND_URL": "ftp://x"}, "FAIRVISOR_BACKEND_URL"),
    ({"FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_BACKEND_URL": "http://x",
      "FAIRVISOR_UPSTREAM_HEADER_X_Bad": "a\nb"}, "CR, LF"),
])
def test_unusable_settings_are_refused_by_name(env, message):
    with pytest.raises(RenderError, match=message):
        render(settings(**env), "/tmp/fv-run")


def test_quoting_helpers():
    assert lua_string('a"b\\c\né') == '"a\\34b\\92c\\10\\195\\169"'
    assert nginx_string("x$y") == '"x${fairvisor_dollar}y"'


def test_flags_override_environment_and_upstream_headers_merge():
    env = flags_env({"mode": "reverse_proxy", "backend_url": "http://127.0.0.1:9", "engine_timeout_ms": 50,
                     "upstream_headers": ("X-Api-Key=k=v",), "listen": None},
                    base={"FAIRVISOR_LISTEN": "127.0.0.1:1", "FAIRVISOR_UPSTREAM_HEADER_X_Org": "o"})
    s = from_env(env)
    assert s.mode == "reverse_proxy" and s.engine_timeout_ms == 50 and s.listen == "127.0.0.1:1"
    assert dict(s.upstream_headers) == {"X-Api-Key": "k=v", "X-Org": "o"}
    with pytest.raises(click.BadParameter):
        flags_env({"upstream_headers": ("no-equals",)}, base={})


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["decision_service", "reverse_proxy"])
def test_nginx_accepts_the_rendered_config(tmp_path, mode):
    nginx = shutil.which("nginx")
    assert nginx, "nginx is required (scripts/bootstrap installs it)"
    runtime = prepare_runtime_dir(tmp_path / "run")
    conf = runtime / "nginx.conf"
    conf.write_text(render(settings(FAIRVISOR_MODE=mode, FAIRVISOR_BACKEND_URL="http://127.0.0.1:9",
                                    FAIRVISOR_UPSTREAM_HEADER_X_Api_Key="sk-$1"), runtime))
    proc = subprocess.run([nginx, "-t", "-p", str(runtime), "-c", str(conf), "-e", str(runtime / "error.log")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_every_fairvisor_setting_has_a_run_flag():
    """Contract §5: each FAIRVISOR_* variable that Settings reads has an equal `fairvisor run` flag."""
    import inspect

    import pyengine.config as config
    from pyengine.cli.run_cmd import _FLAG_VARS, run

    read_by_settings = set(re.findall(r'"(FAIRVISOR_[A-Z_]+?)_?"', inspect.getsource(config.from_env)))
    read_by_settings.discard("FAIRVISOR_UPSTREAM_HEADER")  # the prefix: --upstream-header
    assert read_by_settings <= set(_FLAG_VARS.values())
    flags = {opt for p in run.params for opt in p.opts}
    assert "--upstream-header" in flags
    for name in _FLAG_VARS:
        assert "--" + name.replace("_", "-") in flags
