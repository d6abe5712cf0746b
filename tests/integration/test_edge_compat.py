"""fairvisor/edge users' features through real nginx + shim + engine: debug sessions end to end,
and limit keys read from headers an upstream sets (X-ASN, X-ASN-Type, X-Tor-Exit, User-Agent)."""

import pytest

pytestmark = pytest.mark.integration

SECRET = "debug-secret-for-tests"

POLICY = {
    "bundle_version": 1,
    "defaults": {"note": "fairvisor/edge's free-form block"},
    "policies": [{
        "id": "edge-keys",
        "spec": {
            "selector": {"pathPrefix": "/api/"},
            "rules": [
                {"name": "tor-exits", "limit_keys": ["ip:tor"], "match": {"ip:tor": "true"},
                 "algorithm": "token_bucket", "algorithm_config": {"rps": 0.001, "burst": 1}},
                {"name": "hosting-asn", "limit_keys": ["ip:type", "ip:asn"], "match": {"ip:type": "hosting"},
                 "algorithm": "token_bucket", "algorithm_config": {"tokens_per_second": 0.001, "burst": 2}},
                {"name": "ai-crawlers", "limit_keys": ["ua:bot_category"], "match": {"ua:bot_category": "ai_crawler"},
                 "algorithm": "token_bucket", "algorithm_config": {"tokens_per_second": 0.001, "burst": 1}},
            ],
            "fallback_limit": {"limit_keys": ["ip:address"], "algorithm": "token_bucket",
                               "algorithm_config": {"tokens_per_second": 100, "burst": 100}},
        },
    }],
}


def test_debug_session_end_to_end(start_edge):
    edge = start_edge(POLICY, env={"FAIRVISOR_DEBUG_SESSION_SECRET": SECRET})
    assert edge.request("POST", "/v1/debug/session").status == 401
    assert edge.request("POST", "/v1/debug/session", headers={"X-Fairvisor-Debug-Secret": "nope"}).status == 401
    r = edge.request("POST", "/v1/debug/session", headers={"X-Fairvisor-Debug-Secret": SECRET})
    assert r.status == 200
    cookie = r.headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith("fv_dbg=")

    tor = {"X-Tor-Exit": "1", "Cookie": cookie}
    first = edge.decide(uri="/api/a", headers=tor)
    assert first.status == 200
    assert first.headers["X-Fairvisor-Debug-Policy"] == "edge-keys"
    assert first.headers["X-Fairvisor-Debug-Rule"] == "tor-exits"
    assert first.headers["X-Fairvisor-Debug-Decision"] == "allow"
    assert first.headers["X-Fairvisor-Debug-Mode"] == "enforce"
    assert int(first.headers["X-Fairvisor-Debug-Latency-Us"]) >= 0
    second = edge.decide(uri="/api/a", headers=tor)
    assert second.status == 429
    assert second.headers["X-Fairvisor-Debug-Decision"] == "reject"
    assert second.headers["X-Fairvisor-Debug-Reason"] == "rate_limit_exceeded"

    # Without the cookie, a forged one, or after logout: the same verdicts, no debug headers.
    expiry, sig = cookie.split("=", 1)[1].split(".")
    for c in (None, f"fv_dbg={int(expiry) + 10}.{sig}", f"fv_dbg={expiry}.{'a' * 64}"):
        r = edge.decide(uri="/api/a", headers={"X-Tor-Exit": "1", **({"Cookie": c} if c else {})})
        assert r.status == 429 and "X-Fairvisor-Debug-Rule" not in r.headers
    out = edge.request("POST", "/v1/debug/logout", headers={"Cookie": cookie})
    assert out.status == 200 and "Max-Age=0" in out.headers["Set-Cookie"]
    after = edge.decide(uri="/api/a", headers={"X-Tor-Exit": "1", "Cookie": out.headers["Set-Cookie"].split(";")[0]})
    assert "X-Fairvisor-Debug-Rule" not in after.headers


def test_debug_endpoints_are_404_without_a_secret(start_edge):
    edge = start_edge(POLICY)
    assert edge.request("POST", "/v1/debug/session", headers={"X-Fairvisor-Debug-Secret": SECRET}).status == 404
    r = edge.decide(uri="/api/a", headers={"Cookie": "fv_dbg=1.2"})
    assert "X-Fairvisor-Debug-Rule" not in r.headers


def test_ip_and_ua_keys_from_upstream_headers(start_edge):
    edge = start_edge(POLICY)
    # ip:tor: an X-Tor-Exit of "true"/"1"/"yes" shares the Tor bucket; others are not Tor.
    assert edge.decide(uri="/api/x", headers={"X-Tor-Exit": "true"}).status == 200
    second = edge.decide(uri="/api/x", headers={"X-Tor-Exit": "YES"})
    assert second.status == 429 and second.headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
    assert '"tor-exits"' in second.headers["RateLimit"]
    assert edge.decide(uri="/api/x", headers={"X-Tor-Exit": "0"}).status == 200
    # ip:type + ip:asn: hosting networks, per ASN ("AS64500" and "64500" are one ASN).
    hosting = {"X-ASN-Type": "Hosting", "X-ASN": "AS64500"}
    assert [edge.decide(uri="/api/x", headers=hosting).status for _ in range(2)] == [200, 200]
    assert edge.decide(uri="/api/x", headers={"X-ASN-Type": "hosting", "X-ASN": "64500"}).status == 429
    assert edge.decide(uri="/api/x", headers={"X-ASN-Type": "hosting", "X-ASN": "64501"}).status == 200
    assert edge.decide(uri="/api/x", headers={"X-ASN-Type": "isp", "X-ASN": "64500"}).status == 200
    # ua:bot_category: AI crawlers share one bucket; a search engine and a browser do not.
    gpt = {"User-Agent": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2)"}
    assert edge.decide(uri="/api/x", headers=gpt).status == 200
    assert edge.decide(uri="/api/x", headers={"User-Agent": "ClaudeBot/1.0"}).status == 429
    assert edge.decide(uri="/api/x", headers={"User-Agent": "Googlebot/2.1"}).status == 200
    assert edge.decide(uri="/api/x", headers={"User-Agent": "Mozilla/5.0 Firefox/130.0"}).status == 200
    # The same decisions under both metric names (fairvisor/edge's labels included).
    text = edge.admin("/metrics").body.decode()
    assert 'fairvisor_decisions_total{action="reject",reason="rate_limit_exceeded",policy="edge-keys",' \
           'policy_id="edge-keys"}' in text
    assert 'fairvisor_ratelimit_remaining{policy="edge-keys",rule=' in text
    assert "fairvisor_build_info{" in text and "fairvisor_config_info{" in text
