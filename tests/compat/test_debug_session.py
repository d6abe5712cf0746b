"""Debug sessions in the engine: the secret gate, the signed expiring cookie, and the debug headers."""

from pyengine.clock import FakeClock
from pyengine.debug_session import LOGOUT, SESSION, TTL_S, DebugSessions
from pyengine.protocol.messages import DebugSession

from tests.engine.helpers import described, hdr, make_engine, one_rule_bundle

RULE = {"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 0.001, "burst": 2}}


def engine_with(secret="s3cret", clock=None, **settings):
    return make_engine(one_rule_bundle(RULE), clock=clock or FakeClock(1_767_225_600.0),
                       debug_session_secret=secret, **settings)


def start(engine, secret: bytes | None = b"s3cret", method=b"POST"):
    return engine.handle(DebugSession(kind=SESSION, method=method, secret=secret))


def cookie_of(verdict) -> str:
    return hdr(verdict, "Set-Cookie").split(";", 1)[0]


def test_no_secret_configured_means_404_and_no_cookie_header_requested():
    engine = make_engine(one_rule_bundle(RULE))
    assert start(engine).status == 404
    assert "cookie" not in engine.hello_reply.headers
    assert "cookie" in engine_with().hello_reply.headers


def test_wrong_or_missing_secret_is_401_and_sets_no_cookie():
    engine = engine_with()
    for secret in (b"wrong", None, b"s3cret ", b"s3cre"):
        v = start(engine, secret)
        assert v.status == 401 and hdr(v, "Set-Cookie") is None
    assert start(engine, method=b"GET").status == 405


def test_right_secret_sets_an_httponly_expiring_cookie():
    v = start(engine_with())
    assert v.status == 200
    set_cookie = hdr(v, "Set-Cookie")
    assert set_cookie.startswith("fv_dbg=") and f"Max-Age={TTL_S}" in set_cookie and "HttpOnly" in set_cookie


def test_valid_cookie_adds_debug_headers_naming_the_deciding_rule():
    engine = engine_with()
    cookie = cookie_of(start(engine))
    h = {"X-Api-Key": "k1", "Cookie": f"theme=dark; {cookie}"}
    v = described(engine, headers=h)
    assert v.status == 0
    assert [hdr(v, f"X-Fairvisor-Debug-{n}") for n in ("Policy", "Rule", "Decision", "Mode", "Reason")] == \
        ["p1", "per-key", "allow", "enforce", "none"]
    assert int(hdr(v, "X-Fairvisor-Debug-Latency-Us")) >= 0
    described(engine, headers=h)
    rejected = described(engine, headers=h)
    assert rejected.status == 429
    assert hdr(rejected, "X-Fairvisor-Debug-Decision") == "reject"
    assert hdr(rejected, "X-Fairvisor-Debug-Reason") == "rate_limit_exceeded"
    # The traced decision is the real one: a request without the cookie sees the same bucket.
    assert described(engine, headers={"X-Api-Key": "k1"}).status == 429


def test_no_cookie_forged_cookie_or_expired_cookie_gets_no_debug_headers():
    clock = FakeClock(1_767_225_600.0)
    engine = engine_with(clock=clock)
    cookie = cookie_of(start(engine))
    expiry, sig = cookie.split("=", 1)[1].split(".")
    forged = [f"fv_dbg={int(expiry) + 3600}.{sig}", f"fv_dbg={expiry}.{'0' * 64}", "fv_dbg=garbage",
              f"fv_dbg={expiry}.{sig}x", cookie_of(start(engine_with("other-secret", clock=clock), b"other-secret"))]
    for c in [None] + forged:
        v = described(engine, headers={"X-Api-Key": "k2", **({"Cookie": c} if c else {})})
        assert hdr(v, "X-Fairvisor-Debug-Policy") is None, c
    assert hdr(described(engine, headers={"X-Api-Key": "k3", "Cookie": cookie}), "X-Fairvisor-Debug-Rule") == "per-key"
    clock.advance(TTL_S + 1)
    assert hdr(described(engine, headers={"X-Api-Key": "k3", "Cookie": cookie}), "X-Fairvisor-Debug-Rule") is None


def test_logout_expires_the_cookie():
    engine = engine_with()
    for method in (b"POST", b"GET"):
        v = engine.handle(DebugSession(kind=LOGOUT, method=method))
        assert v.status == 200 and "Max-Age=0" in hdr(v, "Set-Cookie") and cookie_of(v) == "fv_dbg="


def test_shadow_would_reject_is_shown_as_such():
    bundle = one_rule_bundle(RULE, mode="shadow")
    engine = make_engine(bundle, clock=FakeClock(1_767_225_600.0), debug_session_secret="s3cret")
    cookie = cookie_of(start(engine))
    h = {"X-Api-Key": "k1", "Cookie": cookie}
    verdicts = [described(engine, headers=h) for _ in range(3)]
    assert [v.status for v in verdicts] == [0, 0, 0]
    assert [hdr(verdicts[2], f"X-Fairvisor-Debug-{n}") for n in ("Policy", "Rule", "Decision", "Mode", "Reason")] \
        == ["p1", "per-key", "would_reject", "shadow", "rate_limit_exceeded"]


def test_hide_reason_drops_the_header_outside_debug_sessions_only():
    engine = engine_with(hide_reason=True)
    cookie = cookie_of(start(engine))
    for _ in range(2):
        described(engine, headers={"X-Api-Key": "k1"})
    hidden = described(engine, headers={"X-Api-Key": "k1"})
    assert hidden.status == 429 and hdr(hidden, "X-Fairvisor-Reason") is None and hdr(hidden, "Retry-After")
    shown = described(engine, headers={"X-Api-Key": "k1", "Cookie": cookie})
    assert hdr(shown, "X-Fairvisor-Reason") == "rate_limit_exceeded"
    default = engine_with()
    for _ in range(3):
        v = described(default, headers={"X-Api-Key": "k1"})
    assert hdr(v, "X-Fairvisor-Reason") == "rate_limit_exceeded"  # the contract's default: sent


def test_cookie_signature_is_keyed_by_the_secret():
    a, b = DebugSessions("one"), DebugSessions("two")
    value = a.cookie_value(1000.0)
    assert a.valid(f"fv_dbg={value}", 1000.0) and not b.valid(f"fv_dbg={value}", 1000.0)
    assert not a.valid(f"fv_dbg={value}", 1000.0 + TTL_S)
