"""Property tests: whatever is done to a valid bundle, the loader either returns a Bundle or
raises PolicyError whose every message is `<source>: $...`; no other exception escapes."""

import copy
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyengine.errors import PolicyError
from pyengine.policy.loader import load_bundle_bytes
from pyengine.policy.schema import Bundle

NOW_S = 1_767_225_600.0
SOURCE = "fuzz.json"
_FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "policies")
BASES = []
for _name in ("five_rules.json", "full_features.json"):
    with open(os.path.join(_FIXTURES, _name), "rb") as _f:
        BASES.append(json.loads(_f.read()))

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["/", "/v1/", "ip:address", "header:X-K", "jwt:", "enforce", "reject",
                     "token_bucket_llm", "1d", "2026-01-01T00:00:00Z", "2020-01-01T00:00:00",
                     "0001-01-01T00:00:00+10:00", "9999-12-31T23:59:59-10:00"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                   max_size=3),
    max_leaves=8,
)
# Numbers at and beyond every boundary the schema has.
edge_numbers = st.sampled_from([0, -1, -0.0, 0.5, 1, 2, 99.999, 100, 100.5, 30000, 30001,
                                2**63, 10**30, 1e308, -1e308])


def slots(doc):
    """Every (container, key) position in `doc`, the root container's own keys included."""
    found = []
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = list(enumerate(doc))
    else:
        return []
    for key, value in items:
        found.append((doc, key))
        found.extend(slots(value))
    return found


def containers(doc):
    found = [doc] if isinstance(doc, dict) else []
    values = doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else ()
    for value in values:
        found.extend(containers(value))
    return found


@st.composite
def mutated_bundles(draw):
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "replace", "number", "retype", "unknown"]))
        if op == "unknown":
            target = draw(st.sampled_from(containers(doc)))
            target[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
            continue
        positions = slots(doc)
        if not positions:
            break
        parent, key = draw(st.sampled_from(positions))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(json_values)
        elif op == "number":
            parent[key] = draw(edge_numbers)
        else:  # same content, wrong JSON type
            value = parent[key]
            parent[key] = [value] if not isinstance(value, list) else json.dumps(value)
    return json.dumps(doc).encode()


def check_outcome(data: bytes) -> None:
    try:
        bundle = load_bundle_bytes(data, SOURCE, NOW_S)
    except PolicyError as e:
        assert e.errors, "a PolicyError must carry at least one message"
        for message in e.errors:
            assert message.startswith(f"{SOURCE}: $"), message
        return
    assert isinstance(bundle, Bundle)


@settings(max_examples=400, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bundles())
def test_mutated_bundle_loads_or_fails_with_located_errors(data):
    check_outcome(data)


@settings(max_examples=200, database=None, deadline=None)
@given(st.sampled_from(BASES), st.data())
def test_corrupted_bytes_load_or_fail_with_located_errors(base, data):
    raw = bytearray(json.dumps(base).encode())
    cut = data.draw(st.integers(0, len(raw)))
    junk = data.draw(st.binary(max_size=4))
    check_outcome(bytes(raw[:cut] + junk + raw[cut + len(junk):]))
