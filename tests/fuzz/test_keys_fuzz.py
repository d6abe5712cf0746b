"""Fuzzing limit keys: garbage, truncated and oversized JWTs and headers, through extractors and Engine.decide."""

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from pyengine.decision.keys import TrustedProxies, claim_text, jwt_claims, make_extractor
from pyengine.protocol.messages import SURFACE_DESCRIBED, Decide, HelloReply, Verdict
from pyengine.decision.request import view_from_decide

from .budget import fuzz
from .engines import SURFACES, keyed_engine

ENGINE = keyed_engine()
PROXIES = TrustedProxies(["127.0.0.0/8", "::1", "10.0.0.0/8"])
KEY_KINDS = ("jwt:org_id", "jwt:sub", "header:x-api-key", "query:tenant", "ip:address", "ip:country", "ua:bot")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@st.composite
def tokens(draw) -> str:
    """Well-formed, truncated, mangled and oversized JWTs, and plain garbage."""
    kind = draw(st.sampled_from(["jwt", "truncated", "parts", "garbage", "huge"]))
    header = {"alg": draw(st.sampled_from(["none", "HS256", "RS256", "", "x"])), "typ": "JWT"}
    payload = draw(json_values | st.dictionaries(st.sampled_from(["org_id", "sub", "exp"]), json_values))
    signature = b64(draw(st.binary(max_size=32)))
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{signature}"
    if kind == "truncated":
        return token[:draw(st.integers(0, len(token)))]
    if kind == "parts":
        return ".".join(b64(draw(st.binary(max_size=40))) for _ in range(draw(st.integers(0, 5))))
    if kind == "garbage":
        return draw(st.text(max_size=80))
    if kind == "huge":
        return token + "A" * draw(st.sampled_from([4096, 65536]))
    return token


authorization = st.builds(lambda scheme, tok: scheme + tok,
                          st.sampled_from(["Bearer ", "bearer ", "BEARER  ", "Basic ", "", "Bearer"]), tokens())


@fuzz(200)
@given(authorization)
def test_jwt_claims_is_a_dict_or_none_and_claims_text_is_scalar(header):
    claims = jwt_claims(header)
    assert claims is None or isinstance(claims, dict)
    if claims:
        for value in claims.values():
            text = claim_text(value)
            assert text is None or isinstance(text, str)


header_bytes = st.one_of(st.none(), st.binary(max_size=120),
                         authorization.map(lambda s: s.encode("utf-8", "surrogatepass")),
                         st.sampled_from([b"10.0.0.1, 1.2.3.4", b"::1,  ,", b"[::1]:80", b"\xff\xfe", b"a" * 70000,
                                          b"1.2.3.4" + b",1.2.3.4" * 2000]))


@st.composite
def decides(draw, engine):
    hello = engine.hello_reply
    headers = draw(st.lists(header_bytes, min_size=0, max_size=len(hello.headers) + 2))
    return Decide(generation=hello.generation, surface=draw(st.sampled_from(SURFACES)),
                  method=draw(st.binary(max_size=10) | st.sampled_from([b"GET", b"post"])),
                  uri=draw(st.binary(max_size=200) | st.sampled_from(
                      [b"/v1/chat?tenant=a&tenant=b", b"/%zz/../..//x", b"/v1/decision/v1/x?q=%ff", b"v1/chat"])),
                  host=draw(st.binary(max_size=60)
                            | st.sampled_from([b"[::1]:8080", b"[", b"a:b:c", b"Example.COM:1"])),
                  remote_addr=draw(st.binary(max_size=45) | st.sampled_from([b"127.0.0.1", b"::1", b"10.1.2.3"])),
                  headers=headers, body=draw(st.none() | st.binary(max_size=300)),
                  request_id=draw(st.binary(max_size=40)))


def assert_header_safe(verdict) -> None:
    """Nothing a client sent or a policy named can split a response header."""
    assert len(verdict.headers) % 2 == 0
    for item in verdict.headers:
        assert isinstance(item, str) and not set(item) & {"\r", "\n", "\0"}, item


@fuzz(200)
@given(decides(ENGINE))
def test_view_and_every_extractor_take_any_request(msg):
    view = view_from_decide(msg, ENGINE.bundle.header_index, provider_prefixes=True)
    assert view.path.startswith("/") and isinstance(view.method, str) and isinstance(view.host, str)
    for key in KEY_KINDS:
        value = make_extractor(key, PROXIES)(view)
        assert value is None or isinstance(value, str)


@fuzz(200)
@given(decides(ENGINE))
def test_engine_decides_any_request_with_safe_headers(msg):
    verdict = ENGINE.decide(msg)
    assert isinstance(verdict, Verdict)
    assert verdict.status in (0, 429, 503) or verdict.status >= 400
    assert_header_safe(verdict)


@fuzz(300)
@given(st.text(max_size=45), st.one_of(st.none(), st.text(max_size=200)))
def test_client_ip_walk_takes_any_addresses(remote, xff):
    ip = PROXIES.client_ip(remote, xff)
    assert isinstance(ip, str)
    if xff is None or not PROXIES.trusted(remote):
        assert ip == remote


def test_stale_generation_gets_the_hello_reply_whatever_else_is_wrong():
    msg = Decide(generation=ENGINE.generation + 1, surface=SURFACE_DESCRIBED, method=b"\xff", uri=b"", host=b"",
                 remote_addr=b"", headers=[b"\xff"] * 50)
    assert isinstance(ENGINE.decide(msg), HelloReply)
