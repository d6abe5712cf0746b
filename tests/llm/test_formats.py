"""The format of each request under FAIRVISOR_LLM_FORMAT=auto, and nginx's routing agreeing with it."""

import re

import pytest
from hypothesis import given, settings, strategies as st

from pyengine.llm.formats import nginx_route_patterns, prefix_provider, request_format, shape_provider
from pyengine.decision.request import normalize_path, strip_provider_prefix


@pytest.mark.parametrize("uri,expected", [
    ("/openai/v1/chat/completions", "openai"),
    ("/openai/v1/embeddings", "openai"),  # a prefix names the provider whatever follows
    ("/anthropic/v1/messages", "anthropic"),
    ("/gemini/v1beta/models/gemini-2.0-flash:generateContent", "gemini"),
    ("/v1/chat/completions", "openai"),
    ("/v1/completions", "openai"),
    ("/v1/responses", "openai"),
    ("/v1/messages", "anthropic"),
    ("/v1/models/gemini-2.0-flash:generateContent", "gemini"),
    ("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", "gemini"),
    ("/v1/%6dessages", "anthropic"),  # metered on the normalized path
    ("/v1/./messages", "anthropic"),
    ("/v1/models", None),  # plain HTTP
    ("/v1/responses/resp_1", None),
    ("/v1/messages/count_tokens", None),
    ("/openaiv1/chat/completions", None),  # a segment, not a string prefix
    ("/", None),
])
def test_auto_picks_the_format_from_prefix_then_shape(uri, expected):
    path = normalize_path(strip_provider_prefix(uri.partition("?")[0]))
    assert request_format("auto", uri.encode(), path) == expected


def test_a_fixed_format_applies_to_every_request_and_none_to_none():
    assert request_format("anthropic", b"/v1/chat/completions", "/v1/chat/completions") == "anthropic"
    assert request_format("openai", b"/whatever", "/whatever") == "openai"
    assert request_format(None, b"/v1/messages", "/v1/messages") is None


def test_prefix_is_a_whole_segment():
    assert prefix_provider(b"/gemini") == "gemini"
    assert prefix_provider(b"/gemini?x=1") == "gemini"
    assert prefix_provider(b"/geminix/v1") is None
    assert shape_provider("/v2/messages") is None


def _nginx_route(raw_uri: str) -> str:
    for pattern, provider in nginx_route_patterns():
        if re.search(pattern, raw_uri):
            return provider
    return ""


_SEGMENTS = st.sampled_from(["v1", "v1beta", "models", "messages", "chat", "completions", "responses", ".", "..",
                             "", "%6dessages", "m%2Fx:generateContent", "g:generateContent",
                             "g:streamGenerateContent", "openai", "gemini", "anthropic", "x"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_SEGMENTS, min_size=1, max_size=5), st.sampled_from(["", "?alt=sse", "?", "#x"]))
def test_a_request_nginx_routes_to_a_provider_is_metered_in_that_format(segments, query):
    """A provider's backend (and key) only ever gets requests the engine meters as that
    provider's: nginx's route implies the engine's format (the engine may meter more)."""
    raw = "/" + "/".join(segments) + query
    route = _nginx_route(raw)
    path = normalize_path(strip_provider_prefix(raw.partition("?")[0]))
    engine = request_format("auto", raw.encode(), path)
    if route:
        assert engine == route, (raw, route, engine)
