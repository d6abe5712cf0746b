"""A stock nginx without Lua in front of a backend, asking a running edge through auth_request."""

import http.client
import json

import pytest

from .conftest import free_port
from .user_nginx import REPO, UserNginx, example

pytestmark = pytest.mark.integration

POLICY = {
    "bundle_version": 1,
    "policies": [{"id": "per-key", "spec": {"selector": {"pathPrefix": "/api/"}, "rules": [{
        "name": "key-rps", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 0.1, "burst": 2}}]}}],
}


def start_plain(tmp, edge_port: int, backend_url: str) -> UserNginx:
    port = free_port()
    conf = example("auth-request.conf", {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{edge_port};",
        "listen 80;": f"listen 127.0.0.1:{port};",
        "proxy_pass http://127.0.0.1:3000;": f"proxy_pass {backend_url};",
    })
    assert "lua" not in conf
    return UserNginx(tmp, conf, port)  # no load_module: no Lua anywhere


@pytest.fixture
def plain_nginx(start_edge, upstream, tmp_path):
    nginx = start_plain(tmp_path / "plain", start_edge(POLICY).port, upstream.url)
    yield nginx
    nginx.stop()


def test_allow_reaches_backend_then_429_with_edge_headers(plain_nginx, upstream):
    nginx = plain_nginx
    key = {"X-Api-Key": "team-a"}

    first = nginx.request("GET", "/api/items?page=2", headers=key)
    assert first.status == 200, nginx.error_log()
    assert first.json() == {"upstream": "ok", "path": "/api/items?page=2"}
    assert first.headers["RateLimit"].startswith('"key-rps";r=1;')
    assert first.headers["RateLimit-Policy"] == '"key-rps";q=2;w=20'
    assert nginx.request("GET", "/api/items", headers=key).status == 200
    assert len(upstream.requests) == 2

    rejected = nginx.request("POST", "/api/items", headers=key, body=b"{}")
    assert rejected.status == 429
    assert rejected.headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
    # Retry-After: the refill time t (<= 10 s here) plus this client's jitter (docs/policy.md).
    t = int(rejected.headers["RateLimit"].rsplit(";t=", 1)[1])
    assert 1 <= t <= 10 and t <= int(rejected.headers["Retry-After"]) <= t + t // 2
    assert rejected.headers["RateLimit"].startswith('"key-rps";r=0;')
    assert rejected.headers["RateLimit-Remaining"] == "0"
    assert rejected.headers["Content-Type"] == "application/problem+json"
    assert rejected.json()["reason"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 2  # the backend never saw the rejected request

    # Another key has its own bucket; a path outside the selector is never limited.
    assert nginx.request("GET", "/api/items", headers={"X-Api-Key": "team-b"}).status == 200
    assert nginx.request("GET", "/health", headers=key).status == 200


def test_unreachable_edge_fails_closed_with_503(upstream, tmp_path):
    # auth_request cannot fail open: a down edge (502 on the subrequest) becomes a 503.
    nginx = start_plain(tmp_path / "plain", free_port(), upstream.url)
    try:
        r = nginx.request("GET", "/api/items", headers={"X-Api-Key": "k"})
    finally:
        nginx.stop()
    assert r.status == 503
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["status"] == 503
    assert "Retry-After" not in r.headers
    assert upstream.requests == []


def test_docs_show_the_tested_configs_verbatim():
    docs = (REPO / "docs" / "integrations.md").read_text()
    for name in ("auth-request.conf", "drop-in.conf"):
        assert (REPO / "examples" / "nginx" / name).read_text().rstrip("\n") in docs, name


def test_a_repeated_key_header_is_a_400_through_auth_request(plain_nginx, upstream):
    # nginx passes both X-Api-Key lines to the edge, which refuses them (400 ambiguous_header);
    # the example turns auth_request's 500 back into that 400 rather than the fail-closed 503.
    conn = http.client.HTTPConnection("127.0.0.1", plain_nginx.port, timeout=10)
    try:
        conn.putrequest("GET", "/api/items")
        conn.putheader("X-Api-Key", "decoy")
        conn.putheader("X-Api-Key", "team-a")
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 400, body
    assert resp.headers["X-Fairvisor-Reason"] == "ambiguous_header"
    assert json.loads(body)["reason"] == "ambiguous_header"
    assert upstream.requests == []
