"""Fuzzing request bodies: not JSON, wrongly typed JSON, deep nesting and 10 MiB, through every body reader."""

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyengine.guards.fingerprint import body_part, fingerprint
from pyengine.llm.providers import OpenAI
from pyengine.llm.request import LLMRequest, parse_llm_request
from pyengine.protocol.messages import Verdict

from ..engine.helpers import decide
from .budget import fuzz
from .engines import proxy_engine

ENGINE = proxy_engine("openai")
MIB = 1024 * 1024

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8)
FIELDS = ["model", "max_tokens", "max_completion_tokens", "stream", "messages", "system", "contents",
          "systemInstruction", "generationConfig", "prompt", "input", "role", "content", "parts", "text"]
llm_shaped = st.recursive(
    json_values,
    lambda inner: st.dictionaries(st.sampled_from(FIELDS), inner, max_size=6) | st.lists(inner, max_size=4),
    max_leaves=12)
bodies = st.one_of(
    st.binary(max_size=300),
    llm_shaped.map(lambda d: json.dumps(d).encode()),
    st.builds(lambda d, cut: json.dumps(d).encode()[:cut], llm_shaped, st.integers(0, 200)),
)


def check_request(req: LLMRequest) -> None:
    assert req.model is None or isinstance(req.model, str)
    assert req.max_output_tokens is None or (isinstance(req.max_output_tokens, int) and req.max_output_tokens > 0)
    assert isinstance(req.stream, bool)
    assert isinstance(req.prompt_tokens, int) and req.prompt_tokens >= 0
    assert isinstance(req.prompt_chars, int) and req.prompt_chars >= 0


@fuzz(150)
@given(bodies, st.sampled_from(["/v1/chat/completions", "/v1beta/models/x:streamGenerateContent", "/models/"]),
       st.one_of(st.none(), st.text(max_size=12)))
def test_parse_llm_request_takes_any_body(body, path, estimate):
    check_request(parse_llm_request(body, path, estimate))


@fuzz(150)
@given(bodies, st.text(max_size=20), st.lists(st.one_of(st.none(), st.text(max_size=10)), max_size=3))
def test_fingerprint_takes_any_body_and_is_stable(body, path, keys):
    first = fingerprint("POST", path, keys, body)
    assert first == fingerprint("POST", path, keys, body) and len(first) == 32
    assert isinstance(body_part(body), bytes)


@fuzz(100)
@given(bodies)
def test_with_usage_returns_none_or_json_asking_for_usage(body):
    out = OpenAI.with_usage(body)
    if out is not None:
        assert msgspec.json.decode(out)["stream_options"]["include_usage"] is True


@fuzz(100)
@given(bodies, st.sampled_from(["/openai/v1/chat/completions", "/v1/responses", "/v1/x"]))
def test_engine_decides_any_body(body, uri):
    ENGINE.clock.advance(60)
    v = decide(ENGINE, headers={"X-Tenant": "t"}, method="POST", uri=uri, body=body)
    assert isinstance(v, Verdict)
    assert v.new_body is None or msgspec.json.decode(v.new_body)["stream_options"]["include_usage"] is True


HUGE = [
    pytest.param(b"[" * MIB, id="1MiB-of-open-brackets"),
    pytest.param(b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="nested-100k"),
    pytest.param(b'{"messages":[' + b'{"role":"user","content":"x"},' * 350_000 + b'{}]}', id="10MiB-chat"),
    pytest.param(json.dumps({"model": "m", "prompt": "y" * (10 * MIB)}).encode(), id="10MiB-string"),
    pytest.param(b"\xff" * (10 * MIB), id="10MiB-not-utf8"),
    pytest.param(b'{"contents":[{"parts":' + b'[{"text":[' * 5000 + b"]}]" * 5000 + b"}]}", id="nested-gemini"),
]


@pytest.mark.parametrize("body", HUGE)
def test_huge_and_deep_bodies_are_read_without_error(body):
    req = parse_llm_request(body, "/v1/chat/completions", None)
    check_request(req)
    assert len(fingerprint("POST", "/v1/chat", ["t"], body)) == 32
    OpenAI.with_usage(body)
    ENGINE.clock.advance(60)
    assert isinstance(decide(ENGINE, headers={"X-Tenant": "t"}, method="POST", uri="/v1/chat/completions",
                             body=body), Verdict)


_part = st.one_of(st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=20)),
                  st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, st.text(max_size=20)))
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "tool", "system", "function"]),
                                  "content": st.one_of(st.text(max_size=40), st.lists(_part, max_size=3), st.none())})
chat_bodies = st.one_of(
    st.builds(lambda ms, extra: json.dumps({"model": "gpt-4o-mini", "messages": ms, **extra}).encode(),
              st.lists(_message, max_size=4), st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=2)),
    st.builds(lambda cs: json.dumps({"contents": [{"role": m["role"], "parts": [{"text": m["content"] or ""}]}
                                                  if isinstance(m["content"], (str, type(None))) else
                                                  {"role": m["role"], "parts": m["content"]} for m in cs]}).encode(),
              st.lists(_message, max_size=3)),
    bodies,
)


@fuzz(300)
@given(chat_bodies)
def test_the_loop_fingerprint_of_a_body_the_llm_rules_decoded_is_the_one_it_computes_itself(body):
    """One decode per request: the fingerprint reuses the LLM rules' decoded body, and must
    come out exactly as its own decode of the same bytes would have."""
    req = parse_llm_request(body, "/v1/chat/completions", None)
    if req.chat is not None:
        assert body_part(body, req.chat) == body_part(body)
