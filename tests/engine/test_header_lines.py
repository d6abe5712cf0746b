"""Repeated header lines in the engine: list headers joined in order, every other header refused as ambiguous."""

import json

import msgspec
import pytest

from pyengine.decision.header_lines import header_text, join_plan, resolve
from pyengine.protocol.messages import SURFACE_DESCRIBED, SURFACE_INLINE, Decide, HelloReply

from .helpers import hdr, make_engine, unsigned_jwt


def bundle(*rules, kill_switches=()) -> dict:
    return {"bundle_version": 1, "kill_switches": list(kill_switches),
            "policies": [{"id": "p", "spec": {"selector": {"pathPrefix": "/"}, "rules": list(rules)}}]}


def bucket(name: str, *keys: str, burst: int = 2, match=None, **cfg) -> dict:
    r = {"name": name, "limit_keys": list(keys), "algorithm": "token_bucket",
         "algorithm_config": {"tokens_per_second": 0.001, "burst": burst, **cfg}}
    if match:
        r["match"] = match
    return r


def ask(engine, lines: list[tuple[str, str | bytes]], surface=SURFACE_INLINE, uri="/api", remote_addr="127.0.0.1",
        with_decision=False):
    """A Decide carrying `lines` as the shim does: one value as bin, several as an array, in order;
    with_decision: (reply, Decision) from Engine.decide_with_decision."""
    by_name: dict[str, list[bytes]] = {}
    for name, value in lines:
        by_name.setdefault(name.lower(), []).append(value if isinstance(value, bytes) else value.encode())
    for _ in range(2):
        hello = engine.hello_reply
        values = [None if h not in by_name else by_name[h][0] if len(by_name[h]) == 1 else by_name[h]
                  for h in hello.headers]
        msg = Decide(generation=hello.generation, surface=surface, method=b"GET", uri=uri.encode(), host=b"h",
                     remote_addr=remote_addr.encode(), headers=values)
        msg = msgspec.msgpack.decode(msgspec.msgpack.encode(msg), type=Decide)
        reply = engine.decide_with_decision(msg) if with_decision else engine.decide(msg)
        if not isinstance(reply[0] if with_decision else reply, HelloReply):
            return reply
    raise AssertionError("engine kept answering HelloReply")


def refused(verdict) -> bool:
    return verdict.status == 400 and hdr(verdict, "X-Fairvisor-Reason") == "ambiguous_header"


def test_resolve_joins_list_headers_refuses_the_rest_and_keeps_single_lines():
    joins = {0: b", "}
    assert resolve([b"a", None], joins) == ([b"a", None], None)
    assert resolve([[b"a", b"b"], [b"k"], []], joins) == ([b"a, b", b"k", None], None)
    assert resolve([[b"a"], [b"p", b"q"], [b"x", b"y"]], joins) == ([b"a", None, None], [1, 2])
    assert join_plan(["x-forwarded-for", "cookie", "x-api-key", "forwarded"], {"forwarded"}) == \
        {0: b", ", 1: b"; "}


def test_header_text_is_one_to_one():
    assert header_text(b"team-a") == "team-a"
    assert header_text("é✓".encode()) == "é✓"
    odd = [b"\xff", b"\xfe", "\ufffd".encode(), b"\xef\xbf\xbd\xff", "\ufffdff".encode()]
    texts = [header_text(b) for b in odd]
    assert len(set(texts)) == len(odd)
    assert header_text(b"\xff") != header_text("\ufffd".encode())  # the old "replace" made these equal


def test_x_forwarded_for_lines_are_one_list_walked_from_the_right():
    engine = make_engine(bundle(bucket("ip", "ip:address")))
    forged = [ask(engine, [("x-forwarded-for", f"10.0.0.{i}"), ("x-forwarded-for", "203.0.113.7")]).status
              for i in range(3)]
    assert forged == [0, 0, 429]
    # One line holding the same list is the same client.
    assert ask(engine, [("x-forwarded-for", "10.0.0.9, 203.0.113.7")]).status == 429
    assert ask(engine, [("x-forwarded-for", "10.0.0.9"), ("x-forwarded-for", "203.0.113.8")]).status == 0


@pytest.mark.parametrize("rule, lines", [
    (bucket("k", "header:x-api-key"), [("x-api-key", "a"), ("x-api-key", "b")]),
    (bucket("k", "header:x-api-key"), [("x-api-key", "a"), ("x-api-key", "a")]),
    (bucket("j", "jwt:org_id"), [("authorization", "Bearer " + unsigned_jwt({"org_id": "x"})),
                                 ("authorization", "Bearer " + unsigned_jwt({"org_id": "y"}))]),
    (bucket("c", "ip:country"), [("x-country-code", "US"), ("x-country-code", "FR")]),
    (bucket("u", "ua:bot"), [("user-agent", "curl/8"), ("user-agent", "Googlebot")]),
    (bucket("m", "ip:address", "header:x-plan", match={"header:x-plan": "free"}),
     [("x-plan", "free"), ("x-plan", "pro")]),
    (bucket("cost", "ip:address", burst=100, cost_source="header:x-cost"), [("x-cost", "1"), ("x-cost", "1000")]),
    # A list header that a policy keys on raw is a keyed header: joining would make "a, b" one key.
    (bucket("raw", "header:x-forwarded-for"), [("x-forwarded-for", "a"), ("x-forwarded-for", "b")]),
])
def test_a_repeat_of_a_header_the_policy_reads_as_one_value_is_refused(rule, lines):
    engine = make_engine(bundle(rule))
    verdict = ask(engine, lines)
    assert refused(verdict), verdict
    body = json.loads(verdict.body)
    assert body["reason"] == "ambiguous_header" and body["status"] == 400 and body["type"] == "about:blank"


def test_the_refusal_comes_before_kill_switches_and_charges_nothing():
    ks = {"scope_key": "header:x-api-key", "scope_value": "banned", "reason": "INC-1"}
    engine = make_engine(bundle(bucket("k", "header:x-api-key", burst=1), kill_switches=[ks]))
    assert ask(engine, [("x-api-key", "banned")]).status == 429
    for order in (("decoy", "banned"), ("banned", "decoy")):
        verdict, d = ask(engine, [("x-api-key", v) for v in order], with_decision=True)
        assert refused(verdict) and "INC-1" not in verdict.body
        assert d.detail == "x-api-key"  # operators learn which header
    assert ask(engine, [("x-api-key", "decoy")]).status == 0  # the refusals charged nothing
    assert ask(engine, [("x-api-key", "decoy")]).status == 429


def test_a_single_line_sent_as_an_array_reads_as_the_line():
    engine = make_engine(bundle(bucket("k", "header:x-api-key", burst=1)))
    hello = engine.hello_reply
    i = hello.headers.index("x-api-key")
    for value in ([b"solo"], b"solo"):
        headers = [None] * len(hello.headers)
        headers[i] = value
        msg = Decide(generation=hello.generation, surface=SURFACE_INLINE, method=b"GET", uri=b"/", host=b"h",
                     remote_addr=b"127.0.0.1", headers=headers)
        _, d = engine.decide_with_decision(msg)
    assert d.status == 429  # both were the same key


@pytest.mark.parametrize("fmt, etype", [("openai", "invalid_request_error"), ("anthropic", "invalid_request_error"),
                                        ("gemini", "INVALID_ARGUMENT")])
def test_inline_refusals_use_the_providers_invalid_request_shape(fmt, etype):
    engine = make_engine(bundle(bucket("k", "header:x-api-key")), mode="reverse_proxy",
                         backend_url="http://127.0.0.1:9", llm_format=fmt)
    verdict = ask(engine, [("x-api-key", "a"), ("x-api-key", "b")])
    assert refused(verdict)
    assert etype in verdict.body


def test_described_request_headers_are_refused_when_repeated():
    engine = make_engine(bundle(bucket("k", "ip:address", burst=100)))
    lines = [("x-original-uri", "/free"), ("x-original-uri", "/api"), ("x-original-method", "GET")]
    assert refused(ask(engine, lines, surface=SURFACE_DESCRIBED, uri="/v1/decision"))
    two_estimates = [("x-original-uri", "/api"), ("x-token-estimate", "10"), ("x-token-estimate", "0")]
    assert refused(ask(engine, two_estimates, surface=SURFACE_DESCRIBED, uri="/v1/decision"))


def test_each_request_header_mode_asks_for_one_family_only():
    original = make_engine(bundle(bucket("k", "ip:address"))).hello_reply.headers
    forwarded = make_engine(bundle(bucket("k", "ip:address")), request_headers="forwarded").hello_reply.headers
    assert {"x-original-method", "x-original-uri", "x-original-host"} <= set(original)
    assert not {"x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"} & set(original)
    assert {"x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"} <= set(forwarded)
    assert not {"x-original-method", "x-original-uri", "x-original-host"} & set(forwarded)


def test_forwarded_mode_describes_from_x_forwarded_and_ignores_x_original():
    policy = {"bundle_version": 1, "policies": [{"id": "p", "spec": {
        "selector": {"pathPrefix": "/api/", "methods": ["POST"]}, "rules": [bucket("k", "ip:address", burst=1)]}}]}
    engine = make_engine(policy, request_headers="forwarded")
    lines = [("x-forwarded-method", "POST"), ("x-forwarded-uri", "/api/orders"), ("x-forwarded-for", "1.2.3.4"),
             ("x-original-method", "GET"), ("x-original-uri", "/health")]
    assert [ask(engine, lines, SURFACE_DESCRIBED, "/v1/decision").status for _ in range(2)] == [0, 429]
    # The same lines to an `original` engine: only X-Original-* count, so /health is not limited.
    plain = make_engine(policy)
    assert [ask(plain, lines, SURFACE_DESCRIBED, "/v1/decision").status for _ in range(2)] == [0, 0]


def test_the_request_headers_setting_is_validated():
    from pyengine.config import ConfigError, from_env

    assert from_env({}).request_headers == "original"
    assert from_env({"FAIRVISOR_REQUEST_HEADERS": "forwarded"}).request_headers == "forwarded"
    with pytest.raises(ConfigError, match="FAIRVISOR_REQUEST_HEADERS"):
        from_env({"FAIRVISOR_REQUEST_HEADERS": "both"})


def test_a_header_only_shadow_policies_read_is_not_refused():
    # Shadow never changes a response (contract §1): the repeated header reads as absent there,
    # and the would-be refusal is counted. The kill switch's header is refused whatever the shadow.
    ks = {"scope_key": "header:x-api-key", "scope_value": "banned"}
    shadowed = {"bundle_version": 1, "kill_switches": [ks], "policies": [{"id": "s", "spec": {
        "selector": {"pathPrefix": "/"}, "mode": "shadow", "rules": [bucket("t", "header:x-tenant")]}}]}
    engine = make_engine(shadowed)
    assert ask(engine, [("x-tenant", "a"), ("x-tenant", "b")]).status == 0
    assert engine.metrics.would_reject.values[("", "ambiguous_header")] == 1
    assert refused(ask(engine, [("x-api-key", "a"), ("x-api-key", "b")]))

    # An enforce-mode policy under an active global shadow: the same.
    gs = {**bundle(bucket("t", "header:x-tenant")), "global_shadow": {"enabled": True, "reason": "rollout"}}
    under_shadow = make_engine(gs)
    assert ask(under_shadow, [("x-tenant", "a"), ("x-tenant", "b")]).status == 0
    enforced = make_engine(bundle(bucket("t", "header:x-tenant")))
    assert refused(ask(enforced, [("x-tenant", "a"), ("x-tenant", "b")]))


def test_a_runtime_kill_switch_header_is_refused_when_repeated_even_if_only_shadow_reads_it(tmp_path):
    # The header was already sent for a shadow policy (no recompile when the switch is added),
    # and a runtime switch is never in shadow: a decoy line must not hide the switched value.
    shadowed = {"bundle_version": 1, "policies": [{"id": "s", "spec": {
        "selector": {"pathPrefix": "/"}, "mode": "shadow", "rules": [bucket("t", "header:x-tenant")]}}]}
    engine = make_engine(shadowed, state_dir=str(tmp_path))
    assert ask(engine, [("x-tenant", "a"), ("x-tenant", "evil")]).status == 0
    body = json.dumps({"scope_key": "header:x-tenant", "scope_value": "evil"}).encode()
    assert engine.admin_routes.handle("POST", "/v1/admin/kill-switches", body, "token:test")[0] == 201
    assert ask(engine, [("x-tenant", "evil")]).status == 429
    assert refused(ask(engine, [("x-tenant", "a"), ("x-tenant", "evil")]))
