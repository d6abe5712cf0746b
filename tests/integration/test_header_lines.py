"""Issue 13 finding 7 through real nginx + shim + engine: repeated header lines are joined (list headers)
or refused as ambiguous (keyed headers), also past the shim's get_headers limit."""

from __future__ import annotations

import http.client
import re

import pytest

from .conftest import Response, unsigned_jwt

pytestmark = pytest.mark.integration

FILLER_LINES = 120  # more than the shim's MAX_HEADERS (100) in lua-shim/fairvisor/client.lua


def send(edge, lines: list[tuple[str, str]], method: str = "GET", path: str = "/api/items") -> Response:
    """One request with these header lines, repeats and all (a dict could not carry them)."""
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in lines:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read(), 0.0)
    finally:
        conn.close()


def ask(edge, lines: list[tuple[str, str]]) -> Response:
    """POST /v1/decision with these header lines."""
    return send(edge, lines, "POST", "/v1/decision")


def described(*lines: tuple[str, str]) -> list[tuple[str, str]]:
    """The lines of a decision request for GET /api/items (nginx auth_request style), plus `lines`."""
    return [("X-Original-Method", "GET"), ("X-Original-URI", "/api/items"), *lines]


def filler(n: int = FILLER_LINES) -> list[tuple[str, str]]:
    return [(f"X-Filler-{i}", "x") for i in range(n)]


KILLED = {"scope_key": "header:x-api-key", "scope_value": "banned-key", "reason": "abuse INC-7"}


def bundle(*rules: dict, kill_switches=()) -> dict:
    return {"bundle_version": 1, "kill_switches": list(kill_switches),
            "policies": [{"id": "p", "spec": {"selector": {"pathPrefix": "/"}, "rules": list(rules)}}]}


def bucket(name: str, key: str, burst: int = 2) -> dict:
    return {"name": name, "limit_keys": [key], "algorithm": "token_bucket",
            "algorithm_config": {"tokens_per_second": 0.001, "burst": burst}}


def rejects(edge, reason: str) -> float:
    text = edge.get("/metrics", fresh=True).body.decode()
    m = re.search(r'^fairvisor_decisions_total\{action="reject",reason="%s",[^}]*\} (\S+)$' % reason, text,
                  re.M)
    return float(m.group(1)) if m else 0.0


def test_two_forwarded_for_lines_cannot_choose_the_address_key(start_edge, upstream):
    # A proxy in front (HAProxy) adds its own X-Forwarded-For line after the client's. The lines
    # are one list (RFC 9110 §5.3): the address is its rightmost untrusted hop, whatever the
    # client wrote first. Before: only the first line was read, so each forged value got a bucket.
    edge = start_edge(bundle(bucket("per-ip", "ip:address")),
                      flags=["--mode", "reverse_proxy", "--backend-url", upstream.url])
    statuses = [send(edge, [("X-Forwarded-For", forged), ("X-Forwarded-For", "203.0.113.7")]).status
                for forged in ("10.9.9.1", "10.9.9.2", "10.9.9.3", "198.51.100.1, 10.9.9.4")]
    assert statuses == [200, 200, 429, 429]
    # The same address in one line is the same client; another proxy-written address is fresh.
    assert send(edge, [("X-Forwarded-For", "10.9.9.5, 203.0.113.7")]).status == 429
    assert send(edge, [("X-Forwarded-For", "10.9.9.1"), ("X-Forwarded-For", "203.0.113.8")]).status == 200
    assert len(upstream.requests) == 3


def test_a_decoy_api_key_line_does_not_skip_a_kill_switch(start_edge):
    edge = start_edge(bundle(bucket("per-key", "header:x-api-key", burst=100), kill_switches=[KILLED]))
    assert ask(edge, described(("X-Api-Key", "banned-key"))).status == 429
    assert ask(edge, described(("X-Api-Key", "decoy"))).status == 200
    for lines in ([("X-Api-Key", "decoy"), ("X-Api-Key", "banned-key")],
                  [("X-Api-Key", "banned-key"), ("X-Api-Key", "decoy")],
                  [("X-Api-Key", "decoy"), ("x-api-key", "decoy")]):  # even the same value twice
        refused = ask(edge, described(*lines))
        assert refused.status == 400, (lines, refused.body)
        assert refused.headers["X-Fairvisor-Reason"] == "ambiguous_header"
        assert refused.headers["Content-Type"] == "application/problem+json"
        problem = refused.json()
        assert problem["reason"] == "ambiguous_header" and problem["status"] == 400
        assert "INC-7" not in refused.body.decode()
    assert rejects(edge, "ambiguous_header") == 3


def test_a_repeat_past_the_get_headers_limit_is_still_seen(start_edge):
    # 120 lines between the decoy and the banned key: get_headers(100) saw only the decoy.
    edge = start_edge(bundle(bucket("per-key", "header:x-api-key", burst=100), kill_switches=[KILLED]))
    hidden = ask(edge, described(("X-Api-Key", "decoy"), *filler(), ("X-Api-Key", "banned-key")))
    assert hidden.status == 400 and hidden.headers["X-Fairvisor-Reason"] == "ambiguous_header"
    # One line past the limit is read like any other: the kill switch holds.
    alone = ask(edge, described(*filler(), ("X-Api-Key", "banned-key")))
    assert alone.status == 429 and alone.headers["X-Fairvisor-Reason"] == "kill_switch_active"
    # X-Forwarded-For lines on both sides of the limit are one list: the proxy's line counts.
    ip_edge = start_edge(bundle(bucket("per-ip", "ip:address")))
    statuses = [ask(ip_edge, described(("X-Forwarded-For", forged), *filler(),
                                        ("X-Forwarded-For", "203.0.113.9"))).status
                for forged in ("10.1.1.1", "10.1.1.2", "10.1.1.3")]
    assert statuses == [200, 200, 429]


def test_two_authorization_lines_are_refused_not_read_as_the_first(start_edge):
    edge = start_edge(bundle(bucket("per-org", "jwt:org_id", burst=1)))
    mine, other = unsigned_jwt({"org_id": "acme"}), unsigned_jwt({"org_id": "fresh"})
    assert ask(edge, described(("Authorization", f"Bearer {mine}"))).status == 200
    assert ask(edge, described(("Authorization", f"Bearer {mine}"))).status == 429
    # nginx itself refuses a second Authorization line (a unique header to it); the engine would too
    # (tests/engine/test_header_lines.py), for shims in front of other servers.
    refused = ask(edge, described(("Authorization", f"Bearer {other}"), ("Authorization", f"Bearer {mine}")))
    assert refused.status == 400
    # The request target's own headers are keyed the same way: two X-Original-URI lines are refused.
    two_uris = ask(edge, [("X-Original-URI", "/free"), ("X-Original-URI", "/api/items"),
                           ("Authorization", f"Bearer {mine}")])
    assert two_uris.status == 400 and two_uris.headers["X-Fairvisor-Reason"] == "ambiguous_header"


def test_the_inline_refusal_never_reaches_the_upstream(start_edge, upstream):
    edge = start_edge(bundle(bucket("per-key", "header:x-api-key", burst=100), kill_switches=[KILLED]),
                      flags=["--mode", "reverse_proxy", "--backend-url", upstream.url])
    assert send(edge, [("X-Api-Key", "decoy")]).status == 200
    refused = send(edge, [("X-Api-Key", "decoy"), ("X-Api-Key", "banned-key")])
    assert refused.status == 400 and refused.headers["X-Fairvisor-Reason"] == "ambiguous_header"
    assert len(upstream.requests) == 1
