"""Engines for the fuzz properties: every limit-key kind, LLM rules, loop guard, on both surfaces."""

from pyengine.clock import FakeClock
from pyengine.protocol.messages import SURFACE_DESCRIBED, SURFACE_INLINE

from ..engine.helpers import make_engine

KEYED = {
    "bundle_version": 1,
    "policies": [
        {"id": "keys", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
            {"name": "org", "limit_keys": ["jwt:org_id", "jwt:sub"], "algorithm": "token_bucket",
             "algorithm_config": {"rps": 1000, "burst": 1000}},
            {"name": "hdr", "limit_keys": ["header:x-api-key", "query:tenant"], "algorithm": "token_bucket",
             "algorithm_config": {"rps": 1000, "burst": 1000}},
            {"name": "ip", "limit_keys": ["ip:address", "ip:country", "ua:bot"], "algorithm": "token_bucket",
             "algorithm_config": {"rps": 1000, "burst": 1000}},
        ]}},
        {"id": "llm", "spec": {"selector": {"pathPrefix": "/v1/"}, "rules": [
            {"name": "tpm", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
             "algorithm_config": {"tokens_per_minute": 10**9, "max_completion_tokens": 4000}}],
            "loop_detection": {"enabled": True, "window_seconds": 60, "threshold_identical_requests": 3,
                               "action": "reject"}}},
    ],
}
SURFACES = (SURFACE_DESCRIBED, SURFACE_INLINE, 2, -1)  # the last two: values no shim sends


def keyed_engine(**settings):
    return make_engine(KEYED, clock=FakeClock(), **settings)


def proxy_engine(llm_format: str):
    return make_engine(KEYED, clock=FakeClock(), mode="reverse_proxy", backend_url="http://127.0.0.1:9",
                       llm_format=llm_format)
