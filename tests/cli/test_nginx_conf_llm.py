"""The reverse-proxy config for LLM traffic: streaming filters, upstream TLS verification, encoding."""

import shutil
import subprocess

import pytest

from pyengine.cli.nginx_conf import prepare_runtime_dir, render
from pyengine.cli.run_cmd import flags_env
from pyengine.config import ConfigError, from_env


def proxy_settings(url: str, **env):
    base = {"FAIRVISOR_STATE_DIR": "/tmp/fv-state", "FAIRVISOR_LISTEN": "127.0.0.1:18080",
            "FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_BACKEND_URL": url}
    base.update(env)
    return from_env(base)


def proxied_location(conf: str) -> str:
    start = conf.index("location / {")
    return conf[start:conf.index("\n        }", start)]


def test_proxied_location_streams_unbuffered_through_every_shim_phase():
    loc = proxied_location(render(proxy_settings("http://127.0.0.1:9000", FAIRVISOR_LLM_FORMAT="openai"), "/r"))
    for phase in ("access_by_lua_block { require(\"fairvisor.shim\").enforce() }",
                  "header_filter_by_lua_block { require(\"fairvisor.shim\").header_filter() }",
                  "body_filter_by_lua_block { require(\"fairvisor.shim\").body_filter() }",
                  "log_by_lua_block { require(\"fairvisor.shim\").log() }"):
        assert phase in loc
    assert "proxy_buffering off;" in loc
    assert "proxy_cache off;" in loc
    assert 'proxy_set_header Accept-Encoding "";' in loc
    assert "proxy_ssl" not in loc  # plain http upstream


def test_plain_proxy_keeps_the_client_accept_encoding():
    loc = proxied_location(render(proxy_settings("http://127.0.0.1:9000", FAIRVISOR_LLM_FORMAT="none"), "/r"))
    assert "Accept-Encoding" not in loc.replace("# Accept-Encoding", "")


def test_plain_proxy_runs_no_response_body_phases():
    """Without an LLM format there is no stream to count and nothing to settle: the body_filter
    and log handlers would only cost a Lua call per chunk and per request."""
    loc = proxied_location(render(proxy_settings("http://127.0.0.1:9000", FAIRVISOR_LLM_FORMAT="none"), "/r"))
    assert "access_by_lua_block" in loc and "header_filter_by_lua_block" in loc
    assert "body_filter_by_lua" not in loc
    assert "log_by_lua" not in loc


def test_https_upstream_is_verified_by_default():
    loc = proxied_location(render(proxy_settings("https://api.openai.com/"), "/r"))
    assert "proxy_ssl_server_name on;" in loc
    assert "proxy_ssl_name api.openai.com;" in loc
    assert "proxy_ssl_verify on;" in loc
    assert "proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;" in loc
    assert "proxy_ssl_verify_depth 4;" in loc
    assert "proxy_ssl_verify off;" not in loc


@pytest.mark.parametrize("value", ["off", "OFF"])
def test_tls_verification_is_an_explicit_opt_out(value):
    loc = proxied_location(render(proxy_settings("https://llm.lab:8443", FAIRVISOR_BACKEND_TLS_VERIFY=value), "/r"))
    assert "proxy_ssl_verify off;" in loc
    assert "proxy_ssl_verify on;" not in loc
    assert "proxy_ssl_trusted_certificate" not in loc
    assert "proxy_ssl_server_name on;" in loc


def test_tls_verify_setting_values_and_flag():
    assert proxy_settings("https://x").backend_tls_verify is True
    assert proxy_settings("https://x", FAIRVISOR_BACKEND_TLS_VERIFY="on").backend_tls_verify is True
    with pytest.raises(ConfigError, match="FAIRVISOR_BACKEND_TLS_VERIFY"):
        proxy_settings("https://x", FAIRVISOR_BACKEND_TLS_VERIFY="maybe")
    env = flags_env({"backend_tls_verify": "off"}, base={})
    assert env == {"FAIRVISOR_BACKEND_TLS_VERIFY": "off"}


@pytest.mark.integration
@pytest.mark.parametrize("verify", ["on", "off"])
def test_nginx_accepts_the_https_llm_config(tmp_path, verify):
    nginx = shutil.which("nginx")
    assert nginx, "nginx is required (scripts/bootstrap installs it)"
    runtime = prepare_runtime_dir(tmp_path / "run")
    conf = runtime / "nginx.conf"
    conf.write_text(render(proxy_settings("https://127.0.0.1:9443", FAIRVISOR_LLM_FORMAT="anthropic",
                                          FAIRVISOR_BACKEND_TLS_VERIFY=verify), runtime))
    proc = subprocess.run([nginx, "-t", "-p", str(runtime), "-c", str(conf), "-e", str(runtime / "error.log")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


# ---- FAIRVISOR_LLM_FORMAT=auto: one edge before every provider --------------------------------


MULTI = {"FAIRVISOR_BACKEND_URL_ANTHROPIC": "https://api.anthropic.com",
         "FAIRVISOR_BACKEND_URL_GEMINI": "http://127.0.0.1:9002/base/",
         "FAIRVISOR_ANTHROPIC_UPSTREAM_HEADER_x_api_key": "sk-ant-$1",
         "FAIRVISOR_UPSTREAM_HEADER_X_Api_Key": "sk-global",
         "FAIRVISOR_UPSTREAM_HEADER_X_Org": "acme"}


def map_block(conf: str, var: str) -> dict:
    start = conf.index(f" ${var} {{")
    body = conf[conf.index("{", start) + 1:conf.index("\n    }", start)]
    return dict(line.strip().rstrip(";").split(" ", 1) for line in body.strip().splitlines())


def test_auto_routes_each_provider_to_its_own_backend():
    conf = render(proxy_settings("http://127.0.0.1:9000", **MULTI), "/r")
    assert "upstream fairvisor_backend_anthropic {\n        server api.anthropic.com:443;" in conf
    assert "upstream fairvisor_backend_gemini {\n        server 127.0.0.1:9002;" in conf
    assert "fairvisor_backend_openai" not in conf  # OpenAI requests use FAIRVISOR_BACKEND_URL
    assert map_block(conf, "fairvisor_backend_name") == {"anthropic": "fairvisor_backend_anthropic",
                                                         "gemini": "fairvisor_backend_gemini",
                                                         "default": "fairvisor_backend"}
    assert map_block(conf, "fairvisor_backend_path")["gemini"] == '"/base"'
    assert map_block(conf, "fairvisor_backend_host") == {"anthropic": '"api.anthropic.com"',
                                                         "gemini": '"127.0.0.1:9002"', "default": '"127.0.0.1:9000"'}
    loc = proxied_location(conf)
    assert ("proxy_pass $fairvisor_backend_scheme://$fairvisor_backend_name$fairvisor_backend_path"
            "$fairvisor_upstream_uri;") in loc
    assert "proxy_ssl_name $fairvisor_ssl_name;" in loc and "proxy_ssl_verify on;" in loc
    # The route follows the engine's own table (pyengine/llm/formats.py).
    from pyengine.llm.formats import nginx_route_patterns
    routes = map_block(conf, "fairvisor_route")
    assert [(k.strip('"')[1:], v) for k, v in routes.items() if k != "default"] == nginx_route_patterns()


def test_a_provider_header_goes_to_that_provider_only_and_wins_over_the_global_one():
    conf = render(proxy_settings("http://127.0.0.1:9000", **MULTI), "/r")
    loc = proxied_location(conf)
    lines = [ln.strip() for ln in loc.splitlines() if ln.strip().startswith("proxy_set_header X-")]
    assert lines == ["proxy_set_header X-Api-Key $fairvisor_inject_0;", "proxy_set_header X-Org $fairvisor_inject_1;"]
    assert map_block(conf, "fairvisor_inject_0") == {"anthropic": '"sk-ant-${fairvisor_dollar}1"',
                                                     "default": '"sk-global"'}
    assert map_block(conf, "fairvisor_inject_1") == {"default": '"acme"'}


def test_auto_asks_identity_encoding_on_llm_routes_only():
    conf = render(proxy_settings("http://127.0.0.1:9000"), "/r")
    assert "proxy_set_header Accept-Encoding $fairvisor_accept_encoding;" in proxied_location(conf)
    assert map_block(conf, "fairvisor_accept_encoding") == {'""': "$http_accept_encoding", "default": '""'}
    # Without per-provider settings the one backend stays a plain proxy_pass.
    assert "proxy_pass http://fairvisor_backend$fairvisor_upstream_uri;" in proxied_location(conf)


def test_a_fixed_format_routes_everything_as_that_provider():
    conf = render(proxy_settings("http://127.0.0.1:9000", FAIRVISOR_LLM_FORMAT="gemini",
                                 FAIRVISOR_BACKEND_URL_GEMINI="http://127.0.0.1:9002"), "/r")
    assert map_block(conf, "fairvisor_route") == {"default": '"gemini"'}


def test_bad_provider_backend_names_its_variable():
    from pyengine.cli.nginx_conf import RenderError
    with pytest.raises(RenderError, match="FAIRVISOR_BACKEND_URL_OPENAI"):
        render(proxy_settings("http://127.0.0.1:9000", FAIRVISOR_BACKEND_URL_OPENAI="ftp://x"), "/r")


@pytest.mark.integration
def test_nginx_accepts_the_multi_provider_config(tmp_path):
    nginx = shutil.which("nginx")
    assert nginx, "nginx is required (scripts/bootstrap installs it)"
    runtime = prepare_runtime_dir(tmp_path / "run")
    conf = runtime / "nginx.conf"
    offline = {**MULTI, "FAIRVISOR_BACKEND_URL_ANTHROPIC": "https://127.0.0.1:9443"}  # no DNS here
    conf.write_text(render(proxy_settings("http://127.0.0.1:9000", **offline), runtime))
    proc = subprocess.run([nginx, "-t", "-p", str(runtime), "-c", str(conf), "-e", str(runtime / "error.log")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
