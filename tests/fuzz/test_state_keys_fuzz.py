"""State keys (pyengine.state.keys) over arbitrary text: distinct parts give distinct keys, and parse inverts build."""

from hypothesis import given
from hypothesis import strategies as st

from pyengine.state import keys

from .budget import fuzz

# Text that favours the bytes a naive encoding would trip on: separators, markers, digits, ":".
NASTY = st.sampled_from(["\x00", "\x1f", "~", ":", "-", "D", "R", "L", "B", "K", "0", "1", "9", "tpd", "\x00tpd",
                         "\x00loop", "\x00cb", "|", "\ud800", "é"])
values = st.lists(NASTY, max_size=6).map("".join) | st.text(max_size=12)
tuples = st.lists(values, min_size=1, max_size=4).map(tuple)
ids = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)


@st.composite
def built(draw):
    """(logical identity, key) for any key a builder can make, namespace and modifiers included."""
    kind = draw(st.sampled_from(["rule", "shared", "loop", "breaker", "kill", "selftest"]))
    shadow = draw(st.booleans())
    pid = draw(ids)
    if kind in ("rule", "shared"):
        rule = draw(ids)
        prefix = keys.rule_prefix(pid, rule, shadow)
        if kind == "shared":
            ident, key = ("rule", shadow, pid, rule, None), keys.absent(prefix)
        else:
            vals = draw(tuples)
            key = keys.one_value(prefix, vals[0]) if len(vals) == 1 else keys.values_key(prefix, vals)
            ident = ("rule", shadow, pid, rule, vals)
    elif kind == "selftest":  # a run's scratch twin of any rule key (pyengine.selftest)
        run = draw(ids)
        inner_ident, inner_key = draw(built().filter(lambda b: b[0][0] == "rule"))
        ident, key = ("selftest", run, inner_ident), keys.selftest(run, inner_key)
    elif kind == "kill":
        sid = draw(values)
        shadow = False
        ident, key = ("kill", sid), keys.kill_hits(sid)
    else:
        value = draw(values)
        prefix = keys.loop_prefix(pid, shadow) if kind == "loop" else keys.breaker_prefix(pid, shadow)
        ident, key = (kind, shadow, pid, value), keys.one_value(prefix, value)
    if kind != "kill" and draw(st.booleans()):
        ident, key = ("day",) + ident, keys.day(key)  # the TPD counter beside any key
    return ident, key


def identity_of(p: keys.ParsedKey) -> tuple:
    """The logical identity a parsed key stands for, in the shape `built` draws it."""
    shadow, f = keys.SHADOW in p.modifiers, p.fields
    if p.namespace == keys.KILL_HITS:
        ident = ("kill", f[0])
    elif p.namespace == keys.SELFTEST:
        ident = ("selftest", f[0], identity_of(keys.parse(f[1])))
    elif p.namespace == keys.RULE:
        ident = ("rule", shadow, f[0], f[1], None if f[2:] == (None,) else f[2:])
    else:
        ident = ("loop" if p.namespace == keys.LOOP else "breaker", shadow, f[0], f[1])
    return ("day",) + ident if p.modifiers.startswith(keys.DAY) else ident


@fuzz(300)
@given(built(), built())
def test_distinct_identities_never_share_a_key_and_parse_gives_the_identity_back(a, b):
    (ident_a, key_a), (ident_b, key_b) = a, b
    assert (ident_a == ident_b) == (key_a == key_b)
    assert identity_of(keys.parse(key_a)) == ident_a
    assert keys.is_state_key(key_a)


@fuzz(300)
@given(ids, ids, tuples, st.booleans())
def test_parse_inverts_build_for_rule_keys(pid, rule, vals, shadow):
    key = keys.values_key(keys.rule_prefix(pid, rule, shadow), vals)
    assert keys.rule_values(key) == vals
    parsed = keys.parse(key)
    assert (parsed.shadow, parsed.namespace, parsed.fields) == (shadow, keys.RULE, (pid, rule) + vals)
    assert keys.policy_of(key) == pid
    assert keys.parse(keys.day(key)).modifiers == ("D~" if shadow else "D")


@fuzz(300)
@given(st.text(max_size=40))
def test_parse_of_any_text_is_a_result_or_key_format_error(text):
    try:
        parsed = keys.parse(text)
    except keys.KeyFormatError:
        assert not keys.is_state_key(text)
        return
    assert keys.is_state_key(text)
    assert parsed.namespace in (keys.RULE, keys.LOOP, keys.BREAKER, keys.KILL_HITS, keys.SELFTEST)
