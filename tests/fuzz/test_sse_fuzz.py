"""Fuzzing settlement: SSE streams cut at every byte, with invalid JSON and missing or duplicated usage."""

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyengine.devtools import llm_formats as fmt
from pyengine.llm.providers import ADAPTERS, Anthropic, Gemini, OpenAI
from pyengine.llm.sse import count
from pyengine.protocol.messages import Settle

from ..engine.helpers import decide
from .budget import fuzz
from .engines import proxy_engine

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
         "gemini": "/v1/models/m:streamGenerateContent"}
ENGINES = {name: proxy_engine(name) for name in ADAPTERS}
_nonce = itertools.count()


def _event(name: str | None, data) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def text_event(adapter, text: str) -> bytes:
    if adapter is OpenAI:
        return _event(None, {"choices": [{"index": 0, "delta": {"content": text}}]})
    if adapter is Anthropic:
        return _event("content_block_delta", {"type": "content_block_delta",
                                              "delta": {"type": "text_delta", "text": text}})
    return _event(None, {"candidates": [{"content": {"parts": [{"text": text}]}}]})


def usage_event(adapter, prompt, completion) -> bytes:
    if adapter is OpenAI:
        return _event(None, {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
    if adapter is Anthropic:
        return _event("message_delta", {"type": "message_delta",
                                        "usage": {"input_tokens": prompt, "output_tokens": completion}})
    return _event(None, {"candidates": [], "usageMetadata": {"promptTokenCount": prompt,
                                                             "candidatesTokenCount": completion}})


token_counts = st.integers(0, 5000) | st.sampled_from([-1, "5", True, None, 1.5, 2**70])
items = st.lists(st.one_of(
    st.tuples(st.just("text"), st.text(max_size=20)),
    st.tuples(st.just("usage"), token_counts, token_counts),  # missing, once or duplicated
    st.tuples(st.just("junk"), st.binary(max_size=40)),  # not SSE, not JSON
    st.tuples(st.just("broken"), st.integers(1, 60)),  # a usage event with its JSON cut short
), max_size=12)


def render(adapter, stream_items):
    """(raw stream, [(end offset of the JSON, prompt, completion)] for every intact usage event)."""
    raw = bytearray()
    usages = []
    for item in stream_items:
        if item[0] == "text":
            raw += text_event(adapter, item[1])
        elif item[0] == "usage":
            raw += usage_event(adapter, item[1], item[2])
            usages.append((len(raw) - 2, item[1], item[2]))  # the JSON ends before "\n\n"
        elif item[0] == "junk":
            raw += item[1].replace(b"data:", b"") + b"\n\n"
        else:
            ev = usage_event(adapter, 1, 1)
            raw += ev[:min(item[1], len(ev) - 4)] + b"\n\n"
    return bytes(raw), usages


def expected_usage(adapter, usages, end: int):
    """What the provider's usage says for a stream cut at `end`: the last complete usage wins."""
    prompt = completion = None
    for json_end, p, c in usages:
        if json_end > end:
            break
        if adapter is Anthropic:
            prompt = count(p) if count(p) is not None else prompt
        else:
            prompt = count(p)
        completion = count(c)
    return prompt, completion


@pytest.mark.parametrize("adapter", [OpenAI, Anthropic, Gemini], ids=lambda a: a.name)
def test_every_byte_boundary_of_a_real_stream(adapter):
    """Each cut of a real stream, kept as head or as tail: the count is exact or absent, never wrong."""
    if adapter is OpenAI:
        events = [(None, e) for e in fmt.openai_stream("m", 12, 30, include_usage=True)]
    elif adapter is Anthropic:
        events = list(fmt.anthropic_stream("m", 12, 30))
    else:
        events = [(None, e) for e in fmt.gemini_stream("m", 12, 30)]
    stream = b"".join(_event(n, d) for n, d in events) + (b"data: [DONE]\n\n" if adapter is OpenAI else b"")
    for i in range(len(stream) + 1):
        for part in (stream[:i], stream[i:]):
            u = adapter.usage(part)
            assert u.completion_tokens in (None, *range(31))
            assert u.prompt_tokens in (None, 12)
    assert adapter.usage(stream).completion_tokens == 30


@fuzz(300)
@given(st.sampled_from(sorted(ADAPTERS)), items, st.data())
def test_settlement_is_the_provider_count_or_the_counted_tokens(name, stream_items, data):
    engine, adapter = ENGINES[name], ADAPTERS[name]
    raw, usages = render(adapter, stream_items)
    end = data.draw(st.integers(0, len(raw)))
    cut = data.draw(st.booleans())
    counted = data.draw(st.integers(0, 5000))
    engine.clock.advance(60)  # every bucket full again: the request is allowed
    body = json.dumps({"model": "m", "stream": True, "max_tokens": 100,
                       "messages": [{"role": "user", "content": f"n{next(_nonce)}"}]}).encode()
    v = decide(engine, headers={"X-Tenant": "t"}, method="POST", uri=PATHS[name], body=body)
    assert v.status == 0 and v.reservation_id
    reply = engine.handle(Settle(reservation_id=v.reservation_id, status=200, counted_tokens=counted, cut=cut,
                                 tail=raw[:end], counted_chars=counted * 4))
    assert reply.status == 200
    settled = json.loads(reply.body)
    _, completion = expected_usage(adapter, usages, end)
    exact = completion is not None and (not cut or adapter.running_totals)
    assert settled["completion_tokens"] == (completion if exact else counted)
    assert settled["prompt_tokens"] >= 0


@fuzz(300)
@given(st.sampled_from(sorted(ADAPTERS)), items, st.integers(0, 10**6))
def test_usage_of_any_suffix_never_raises_and_is_from_the_stream(name, stream_items, start):
    adapter = ADAPTERS[name]
    raw, usages = render(adapter, stream_items)
    u = adapter.usage(raw[start % (len(raw) + 1):])
    assert u.completion_tokens is None or u.completion_tokens in {count(c) for _, _, c in usages}


@fuzz(300)
@given(st.sampled_from(sorted(ADAPTERS)), st.binary(max_size=400))
def test_usage_of_random_bytes_is_empty_or_counts(name, raw):
    u = ADAPTERS[name].usage(raw)
    for value in (u.prompt_tokens, u.completion_tokens):
        assert value is None or (isinstance(value, int) and value >= 0)


def test_deeply_nested_and_huge_tails_settle_without_error():
    for raw in (b"[" * 100_000, b"data: " + b"{\"a\":" * 50_000, b"data: {}\n" * 200_000,
                b"{" + b"\"usage\":{}," * 100_000 + b"}"):
        for adapter in ADAPTERS.values():
            u = adapter.usage(raw)
            assert u.completion_tokens is None
