"""Decision-service requests exactly as Envoy ext_authz (HTTP) and Traefik forwardAuth send them."""

import pytest

pytestmark = pytest.mark.integration

# Only POST /api/... on api.example.com is limited: each test proves the method, path and host
# were read from where that gateway puts them.
POLICY = {
    "bundle_version": 1,
    "policies": [{"id": "orders", "spec": {
        "selector": {"pathPrefix": "/api/", "methods": ["POST"], "hosts": ["api.example.com"]},
        "rules": [{"name": "key-rps", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
                   "algorithm_config": {"tokens_per_second": 0.1, "burst": 2}}]}}],
}


def envoy_check(edge, method: str, path: str, host: str = "api.example.com", key: str = "k1"):
    """Envoy's ext_authz HTTP service: the original method, path_prefix + the original path and
    query, the original Host, and the allowed headers (examples/envoy/envoy.yaml); no body."""
    return edge.request(method, "/v1/decision" + path, headers={
        "Host": host, "Content-Length": "0", "X-Api-Key": key, "Authorization": "Bearer abc",
        "X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https",
        "X-Request-Id": "5b8a7c9e-0d1f-4e2a-9b3c-6d7e8f9a0b1c", "X-Envoy-Expected-Rq-Timeout-Ms": "250",
        "X-Envoy-Internal": "true",
    }, body=b"" if method in ("POST", "PUT", "PATCH") else None)


def traefik_forward_auth(edge, method: str, uri: str, host: str = "api.example.com", key: str = "k1"):
    """Traefik's forwardAuth: always GET to the configured address; the original request is in
    X-Forwarded-Method/-Proto/-Host/-Uri/-For, plus a copy of the client's headers."""
    return edge.request("GET", "/v1/decision", headers={
        "X-Forwarded-Method": method, "X-Forwarded-Proto": "https", "X-Forwarded-Host": host,
        "X-Forwarded-Uri": uri, "X-Forwarded-For": "198.51.100.7",
        "X-Api-Key": key, "Authorization": "Bearer abc", "User-Agent": "curl/8.5.0", "Accept": "*/*",
    })


@pytest.fixture
def edge(start_edge):
    return start_edge(POLICY)


@pytest.fixture
def forwarded_edge(start_edge):
    """The edge behind Traefik: FAIRVISOR_REQUEST_HEADERS=forwarded (examples/traefik/dynamic.yml)."""
    return start_edge(POLICY, env={"FAIRVISOR_REQUEST_HEADERS": "forwarded"})


def test_envoy_ext_authz_path_prefix_method_and_host(edge):
    statuses = [envoy_check(edge, "POST", "/api/orders?page=2").status for _ in range(3)]
    assert statuses == [200, 200, 429]
    rejected = envoy_check(edge, "POST", "/api/orders")
    assert rejected.headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
    assert int(rejected.headers["Retry-After"]) >= 1
    assert rejected.json()["reason"] == "rate_limit_exceeded"
    assert rejected.headers["Content-Type"] == "application/problem+json"

    # Outside the selector: another method, another host, another path; another key is fresh.
    assert envoy_check(edge, "GET", "/api/orders").status == 200
    assert envoy_check(edge, "POST", "/api/orders", host="admin.example.com").status == 200
    assert envoy_check(edge, "POST", "/health").status == 200
    allowed = envoy_check(edge, "POST", "/api/orders", key="k2")
    assert allowed.status == 200 and allowed.body == b""
    assert allowed.headers["RateLimit"].startswith('"key-rps";r=1;')


def test_traefik_forward_auth_x_forwarded_headers(forwarded_edge):
    edge = forwarded_edge
    statuses = [traefik_forward_auth(edge, "POST", "/api/orders?page=2").status for _ in range(3)]
    assert statuses == [200, 200, 429]
    rejected = traefik_forward_auth(edge, "POST", "/api/orders")
    assert rejected.headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
    assert int(rejected.headers["Retry-After"]) >= 1

    assert traefik_forward_auth(edge, "GET", "/api/orders").status == 200
    assert traefik_forward_auth(edge, "POST", "/api/orders", host="admin.example.com").status == 200
    assert traefik_forward_auth(edge, "POST", "/health").status == 200
    assert traefik_forward_auth(edge, "POST", "/api/orders", key="k2").status == 200


def test_original_mode_reads_only_x_original(edge):
    # nginx auth_request style headers next to stale X-Forwarded-* ones: X-Original-* describe.
    def ask():
        return edge.request("GET", "/v1/decision", headers={
            "X-Original-Method": "POST", "X-Original-URI": "/api/orders", "X-Original-Host": "api.example.com",
            "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/health", "X-Forwarded-Host": "other.example.com",
            "X-Api-Key": "k3"})
    assert [ask().status for _ in range(3)] == [200, 200, 429]


def test_forwarded_mode_ignores_a_client_x_original_uri(start_edge):
    # forwardAuth copies the client's headers: a client adding X-Original-URI: /health (a path no
    # policy limits) used to describe its own request, since X-Original-* were preferred.
    edge = start_edge(POLICY, flags=["--request-headers", "forwarded"])

    def ask():
        return edge.request("GET", "/v1/decision", headers={
            "X-Forwarded-Method": "POST", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com",
            "X-Forwarded-Uri": "/api/orders", "X-Forwarded-For": "198.51.100.7",
            "X-Original-Method": "GET", "X-Original-URI": "/health", "X-Original-Host": "other.example.com",
            "X-Api-Key": "k4"})
    assert [ask().status for _ in range(3)] == [200, 200, 429]
    assert ask().headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"


def test_each_mode_trusts_one_family_only(start_edge):
    # Left at `original`, Traefik's X-Forwarded-Uri describes nothing: the request reads as the
    # bare /v1/decision (`/`), outside this policy's selector. docs/integrations.md says to set it.
    edge = start_edge(POLICY)
    assert [traefik_forward_auth(edge, "POST", "/api/orders").status for _ in range(3)] == [200, 200, 200]
