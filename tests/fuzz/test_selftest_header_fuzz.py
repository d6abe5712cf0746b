"""X-Fairvisor-Selftest over arbitrary text, with a run open: never an engine error, never a
self-test answer without the run's secret, always the ordinary decision otherwise."""

import json

from hypothesis import given
from hypothesis import strategies as st

from pyengine import operator_api
from tests.engine.helpers import decide, hdr, make_engine

from .budget import fuzz

RULE = {"name": "per-key", "limit_keys": ["header:x-api-key"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 1, "burst": 1000}}
ENGINE = make_engine({"bundle_version": 1, "policies": [{"id": "api", "spec": {"selector": {"pathPrefix": "/"},
                                                                               "rules": [RULE]}}]})
PLAN = json.loads(operator_api.selftest_start(ENGINE, {}, None).body)
PARTS = st.sampled_from([PLAN["run"], PLAN["secret"], "0", "1", "probe", "drain", ".", "..", "²", "٣", "-1",
                         "0" * 7, "\x00", " ", "é"])
HEADERS = st.lists(PARTS, max_size=8).map("".join) | st.text(max_size=80)


@fuzz(300)
@given(HEADERS, st.text(max_size=12))
def test_any_selftest_header_is_ordinary_unless_it_carries_the_secret(value, tenant):
    v = decide(ENGINE, {"X-Api-Key": "t-" + tenant, "X-Fairvisor-Selftest": value}, uri="/x")
    mark = hdr(v, "X-Fairvisor-Selftest")
    if mark is None:
        assert v.status in (0, 429), (value, v)  # an ordinary decision, never engine_error
    else:
        assert PLAN["secret"] in value and v.status >= 300  # only the secret opens it, and never lets through
