"""Fuzzing repeated, huge and odd header lines through Engine.decide: no shared keys, no keyed repeat passes."""

from hypothesis import event, given
from hypothesis import strategies as st

from pyengine.clock import FakeClock
from pyengine.protocol.messages import SURFACE_DESCRIBED, SURFACE_INLINE, Decide, Verdict
from pyengine.decision.request import view_from_decide

from ..engine.helpers import make_engine
from .budget import fuzz
from .test_keys_fuzz import assert_header_safe

BANNED = b"banned-key"
POLICY = {
    "bundle_version": 1,
    "kill_switches": [{"scope_key": "header:x-api-key", "scope_value": BANNED.decode()}],
    "policies": [{"id": "p", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "hdr", "limit_keys": ["header:x-api-key", "header:x-tenant"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 1e6, "burst": 1e6}},
        {"name": "org", "limit_keys": ["jwt:org_id"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 1e6, "burst": 1e6}},
        {"name": "ip", "limit_keys": ["ip:address", "ua:bot"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 1e6, "burst": 1e6}, "on_missing_key": "shared"},
    ]}}],
}
# Both request-header families, so the described headers of each are drawn as well.
ENGINES = tuple(make_engine(POLICY, clock=FakeClock(), request_headers=f) for f in ("original", "forwarded"))
KEYED = ("x-api-key", "x-tenant")  # the `hdr` rule's raw header keys

values = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([BANNED, b"decoy", b"a, b", b"a,b", b";", b"\x1f", b"\x00", b"a\x00tpd", b"\xff", b"\xfe",
                     "\ufffd".encode(), b"\xef\xbf\xbd\xff", b"1.2.3.4", b"10.0.0.1, 203.0.113.7", b"::1", b" ", b"",
                     b"Bearer eyJhbGciOiJub25lIn0.eyJvcmdfaWQiOiJ4In0.", b"Googlebot/2.1", b"/api?x=1", b"POST"]),
    st.sampled_from([b"k" * 65536, b"\xff" * 70000, b"1.2.3.4," * 5000]),  # huge: past nginx's own 8 KiB lines
)
small_values = st.binary(max_size=8) | st.sampled_from([BANNED, b"decoy", b"1.2.3.4"])


@st.composite
def lines_of(draw, repeats: bool):
    """The lines of one header: none or one, or (when `repeats`) also two, three or more lines than
    the shim's get_headers limit (those of small values: nginx's header buffers bound the total)."""
    count = draw(st.sampled_from((0, 1, 2, 3, 120) if repeats else (0, 1)))
    return draw(st.lists(values if count < 100 else small_values, min_size=count, max_size=count))


def as_shim_sends(lines: list[bytes]):
    """nil, one bin, or an array of bin in the client's order (lua-shim/fairvisor/client.lua)."""
    return None if not lines else lines[0] if len(lines) == 1 else list(lines)


@st.composite
def requests(draw, engine):
    joined = {engine.bundle.header_names[i] for i in engine.bundle.header_joins}
    repeats = draw(st.booleans())  # half the requests repeat no keyed header, so their keys are compared
    lines = {name: draw(lines_of(repeats or name in joined)) for name in engine.hello_reply.headers}
    if not repeats:
        for name in KEYED:  # the `hdr` rule keys this request
            lines[name] = lines[name] or [draw(values)]
    return lines, draw(st.sampled_from((SURFACE_DESCRIBED, SURFACE_INLINE)))


@st.composite
def neighbour(draw, value: bytes) -> bytes:
    """`value` with one byte replaced by another (often a non-UTF-8 one), or one byte added."""
    b = draw(st.integers(0x80, 0xFF) | st.integers(0, 0xFF))
    if not value or draw(st.booleans()):
        return value + bytes([b])
    i = draw(st.integers(0, len(value) - 1))
    return value[:i] + bytes([b]) + value[i + 1:]


def frame(engine, lines: dict, surface: int) -> Decide:
    hello = engine.hello_reply
    return Decide(generation=hello.generation, surface=surface, method=b"GET", uri=b"/v1/decision", host=b"h",
                  remote_addr=b"127.0.0.1", headers=[as_shim_sends(lines[n]) for n in hello.headers])


def hdr_key(engine, msg: Decide):
    b = engine.bundle
    view = view_from_decide(msg, b.header_index, False, b.header_joins, b.family)
    return view.ambiguous, b.policies[0].rules[0].state_key(view)


@fuzz(200)
@given(st.sampled_from(ENGINES).flatmap(lambda e: st.tuples(st.just(e), requests(e), requests(e))),
       st.sampled_from(("independent", "same", "neighbour")), st.data())
def test_header_lines_never_share_a_key_and_no_keyed_repeat_passes(case, relation, data):
    engine, (lines_a, surface_a), (lines_b, surface_b) = case
    if relation == "same":  # the same keyed lines in another request: the same counter
        lines_b = {**lines_b, **{n: lines_a[n] for n in KEYED}}
    elif relation == "neighbour" and all(len(lines_a[n]) == 1 for n in KEYED):  # one byte apart: another counter
        name = data.draw(st.sampled_from(KEYED))
        lines_b = {**lines_b, **{n: lines_a[n] for n in KEYED}, name: [data.draw(neighbour(lines_a[name][0]))]}
    joined = {engine.bundle.header_names[i] for i in engine.bundle.header_joins}
    seen = []
    for lines, surface in ((lines_a, surface_a), (lines_b, surface_b)):
        msg = frame(engine, lines, surface)
        verdict = engine.decide(msg)
        assert isinstance(verdict, Verdict)
        assert_header_safe(verdict)
        reason = next((verdict.headers[i + 1] for i in range(0, len(verdict.headers), 2)
                       if verdict.headers[i] == "X-Fairvisor-Reason"), None)
        repeated = any(len(lines[n]) > 1 for n in lines if n not in joined)
        if repeated:  # a keyed header in several lines: refused, whatever its values
            assert verdict.status == 400 and reason == "ambiguous_header", (lines, verdict)
            event("refused: a keyed header repeated")
            continue
        assert reason != "ambiguous_header"
        if lines["x-api-key"] == [BANNED]:
            assert verdict.status == 429 and reason == "kill_switch_active"
            event("kill switch held")
        ambiguous, key = hdr_key(engine, msg)
        assert ambiguous is None
        if key is not None and all(lines[n] for n in KEYED):
            seen.append((tuple(lines[n][0] for n in KEYED), key))
    if len(seen) == 2:
        (tuple_a, key_a), (tuple_b, key_b) = seen
        assert (key_a == key_b) == (tuple_a == tuple_b), (tuple_a, tuple_b)
        event("keys compared: same lines" if tuple_a == tuple_b else "keys compared: different lines")
