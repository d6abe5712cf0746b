"""The Kong plugin's handler under real nginx, with tests/integration/lua/kong_stub.lua standing in for Kong's PDK."""

import pytest

from .conftest import free_port
from .user_nginx import LUA_MODULES, REPO, UserNginx, engine  # noqa: F401 (engine: a fixture)

pytestmark = pytest.mark.integration


def _location(path: str, conf: str, upstream_url: str) -> str:
    return f"""
        location {path} {{
            access_by_lua_block {{ require("kong_stub").run("access", {conf}) }}
            header_filter_by_lua_block {{ require("kong_stub").run("header_filter", {conf}) }}
            proxy_pass {upstream_url};
        }}"""


@pytest.fixture
def kong_like(engine, upstream, tmp_path):
    _, sock = engine
    port = free_port()
    dead = tmp_path / "no-engine.sock"
    http_body = f"""
    lua_package_path "{REPO}/lua-shim/?.lua;{REPO}/tests/integration/lua/?.lua;/usr/share/lua/5.1/?.lua;;";
    lua_shared_dict fairvisor 1m;
    server {{
        listen 127.0.0.1:{port};
        {_location("/api/", f'{{ socket = "{sock}" }}', upstream.url)}
        {_location("/open/", f'{{ socket = "{dead}", timeout_ms = 50 }}', upstream.url)}
        {_location("/closed/", f'{{ socket = "{dead}", fail_mode = "closed" }}', upstream.url)}
        location = /schema {{
            content_by_lua_block {{
                local ok, err = pcall(require("kong_stub").conf, {{ fail_mode = "sideways" }})
                local ok2, err2 = pcall(require("kong_stub").conf, {{ timeout_ms = 0 }})
                local conf = require("kong_stub").conf({{}})
                ngx.say(tostring(ok), "|", err, "|", tostring(ok2), "|", err2, "|",
                        conf.socket, "|", conf.timeout_ms, "|", conf.fail_mode)
            }}
        }}
    }}"""
    nginx = UserNginx(tmp_path / "kong", http_body, port, main_extra=LUA_MODULES)
    yield nginx
    nginx.stop()


def test_allow_then_reject_through_kong_response_exit(kong_like, upstream):
    key = {"X-Api-Key": "consumer-1"}
    first = kong_like.request("GET", "/api/orders", headers=key)
    assert first.status == 200, kong_like.error_log()
    assert first.headers["RateLimit"].startswith('"key-rps";r=1;')  # set by header_filter
    assert kong_like.request("POST", "/api/orders", headers=key, body=b'{"n":1}').status == 200

    rejected = kong_like.request("GET", "/api/orders", headers=key)
    assert rejected.status == 429
    assert rejected.headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
    # Retry-After: the refill time t (<= 10 s here) plus this client's jitter (docs/policy.md).
    t = int(rejected.headers["RateLimit"].rsplit(";t=", 1)[1])
    assert 1 <= t <= 10 and t <= int(rejected.headers["Retry-After"]) <= t + t // 2
    assert rejected.headers["Content-Type"].startswith("application/")
    assert rejected.json()["reason"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 2


def test_fail_open_marks_client_and_upstream(kong_like, upstream):
    r = kong_like.request("GET", "/open/x", headers={"X-Api-Key": "k"})
    assert r.status == 200
    assert r.headers["X-Fairvisor-Degraded"] == "engine_unavailable"
    assert upstream.requests[-1]["headers"]["X-Fairvisor-Degraded"] == "engine_unavailable"


def test_fail_closed_is_503_and_skips_upstream(kong_like, upstream):
    r = kong_like.request("GET", "/closed/x", headers={"X-Api-Key": "k"})
    assert r.status == 503
    assert r.headers["X-Fairvisor-Reason"] == "engine_unavailable"
    assert r.json()["reason"] == "engine_unavailable"
    assert upstream.requests == []


def test_schema_defaults_and_checks(kong_like):
    r = kong_like.request("GET", "/schema")
    assert r.status == 200, kong_like.error_log()
    text = r.body.decode().strip()
    refused, err, refused2, err2, socket, timeout_ms, fail_mode = text.split("|")
    assert (refused, refused2) == ("false", "false")
    assert "fail_mode: expected one of: open, closed" in err
    assert "timeout_ms: value should be between 1 and 60000" in err2
    assert (socket, timeout_ms, fail_mode) == ("/run/fairvisor/engine.sock", "100", "open")
