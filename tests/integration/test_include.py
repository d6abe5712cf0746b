"""The drop-in include: a user's own nginx config, `fairvisor nginx-include`, and `fairvisor engine` alone."""

import signal
import subprocess

import pytest

from .conftest import FAIRVISOR, free_port
from .user_nginx import LUA_MODULES, REPO, UserNginx, engine, example  # noqa: F401 (engine: a fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def site(engine, upstream, tmp_path):
    """A user-style nginx: the rendered include in http {}, examples/nginx/drop-in.conf as the site."""
    _, sock = engine
    include = subprocess.run(FAIRVISOR + ["nginx-include", "--engine-socket", str(sock)],
                             check=True, capture_output=True, text=True).stdout
    (tmp_path / "fairvisor.conf").write_text(include)
    port = free_port()
    server = example("drop-in.conf", {
        "include /opt/fairvisor/nginx/fairvisor-protect.conf;": f"include {REPO}/nginx/fairvisor-protect.conf;",
        "listen 80;": f"listen 127.0.0.1:{port};",
        "proxy_pass http://127.0.0.1:3000;": f"proxy_pass {upstream.url};",
    })
    nginx = UserNginx(tmp_path / "site", f"    include {tmp_path}/fairvisor.conf;\n{server}", port,
                      main_extra=LUA_MODULES)
    yield nginx
    nginx.stop()


def test_include_renders_the_socket_and_the_debian_lua_path(engine):
    _, sock = engine
    text = subprocess.run(FAIRVISOR + ["nginx-include", "--engine-socket", str(sock), "--fail-mode", "closed"],
                          check=True, capture_output=True, text=True).stdout
    assert f'socket = "{sock}",' in text
    assert 'fail_mode = "closed",' in text
    assert f'lua_package_path "{REPO}/lua-shim/?.lua;/usr/share/lua/5.1/?.lua;;";' in text
    openresty = subprocess.run(FAIRVISOR + ["nginx-include", "--flavor", "openresty"],
                               check=True, capture_output=True, text=True).stdout
    assert f'lua_package_path "{REPO}/lua-shim/?.lua;;";' in openresty


def test_protected_location_is_enforced_in_process(site, upstream):
    key = {"X-Api-Key": "team-a"}
    first = site.request("GET", "/api/items", headers=key)
    assert first.status == 200, site.error_log()
    assert first.json() == {"upstream": "ok", "path": "/api/items"}
    assert first.headers["RateLimit"].startswith('"key-rps";r=1;')
    assert site.request("POST", "/api/items", headers=key, body=b"{}").status == 200

    rejected = site.request("GET", "/api/items", headers=key)
    assert rejected.status == 429
    assert rejected.headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
    # Retry-After: the refill time t (<= 10 s here) plus this client's jitter (docs/policy.md).
    t = int(rejected.headers["RateLimit"].rsplit(";t=", 1)[1])
    assert 1 <= t <= 10 and t <= int(rejected.headers["Retry-After"]) <= t + t // 2
    assert rejected.json()["reason"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 2

    # The unprotected location never asks the engine, however often it is called.
    statuses = {site.request("GET", "/static/app.js", headers=key).status for _ in range(5)}
    assert statuses == {200}
    assert "RateLimit" not in site.request("GET", "/static/app.js", headers=key).headers
    assert len(upstream.requests) == 8


def test_engine_down_fails_open_with_degraded_header(site, engine, upstream):
    proc, _ = engine
    assert site.request("GET", "/api/items", headers={"X-Api-Key": "k"}).status == 200
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)

    r = site.request("GET", "/api/items", headers={"X-Api-Key": "k"})
    assert r.status == 200
    assert r.headers["X-Fairvisor-Degraded"] == "engine_unavailable"
    assert len(upstream.requests) == 2


def test_the_admin_include_serves_the_admin_endpoints_in_your_own_nginx(engine, tmp_path):
    """docs/operations.md: `include nginx/fairvisor-admin.conf;` in a server of your own."""
    _, sock = engine
    include = subprocess.run(FAIRVISOR + ["nginx-include", "--engine-socket", str(sock)],
                             check=True, capture_output=True, text=True).stdout
    (tmp_path / "fairvisor.conf").write_text(include)
    port = free_port()
    server = (f"    server {{\n        listen 127.0.0.1:{port};\n"
              f"        include {REPO}/nginx/fairvisor-admin.conf;\n    }}\n")
    nginx = UserNginx(tmp_path / "admin", f"    include {tmp_path}/fairvisor.conf;\n{server}", port,
                      main_extra=LUA_MODULES)
    try:
        metrics = nginx.request("GET", "/metrics")
        assert metrics.status == 200 and "fairvisor_policy_info" in metrics.body.decode(), nginx.error_log()
        assert nginx.request("GET", "/readyz").json()["state"]["backend"] == "memory"
        assert nginx.request("GET", "/livez").status == 200
        assert nginx.request("GET", "/other").status == 404
    finally:
        nginx.stop()
