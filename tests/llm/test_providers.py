"""Provider adapters: usage parsed from real-format bodies and streams, whole, cut, split or broken."""

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pyengine.devtools import llm_formats as fmt
from pyengine.llm.estimator import CharsPerToken
from pyengine.llm.providers import Anthropic, Gemini, OpenAI, OpenAIResponses
from pyengine.protocol.messages import CUTOFF_CAPTURE, CUTOFF_TOKENS


def sse(events) -> bytes:
    out = []
    for name, data in events:
        out.append((f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n")
    return "".join(out).encode()


OPENAI_STREAM = sse((None, e) for e in fmt.openai_stream("gpt-4o-mini", 12, 30, include_usage=True)) + b"data: [DONE]\n\n"
ANTHROPIC_STREAM = sse(fmt.anthropic_stream("claude", 12, 30))
GEMINI_STREAM = sse((None, e) for e in fmt.gemini_stream("gemini-2.0-flash", 12, 30))


def test_usage_from_whole_bodies_and_streams():
    for adapter, body in ((OpenAI, fmt.openai_response("m", 12, 30)), (Anthropic, fmt.anthropic_response("m", 12, 30)),
                          (Gemini, fmt.gemini_response("m", 12, 30))):
        u = adapter.usage(json.dumps(body).encode())
        assert (u.prompt_tokens, u.completion_tokens) == (12, 30), adapter.name
    for adapter, stream in ((OpenAI, OPENAI_STREAM), (Anthropic, ANTHROPIC_STREAM), (Gemini, GEMINI_STREAM)):
        u = adapter.usage(stream)
        assert (u.prompt_tokens, u.completion_tokens) == (12, 30), adapter.name


def test_cut_streams_have_no_final_count_except_gemini_running_totals():
    half = lambda s: s[: len(s) // 2]  # noqa: E731
    assert OpenAI.usage(half(OPENAI_STREAM)).completion_tokens is None
    u = Anthropic.usage(half(ANTHROPIC_STREAM))
    assert u.prompt_tokens == 12 and u.completion_tokens is None  # message_start's 1 is a placeholder
    assert 0 < Gemini.usage(half(GEMINI_STREAM)).completion_tokens < 30


def test_head_and_tail_of_a_long_stream_still_give_usage():
    long = sse(fmt.anthropic_stream("claude", 12, 5000))
    head_tail = long[:32768] + long[-32768:]
    u = Anthropic.usage(head_tail)
    assert (u.prompt_tokens, u.completion_tokens) == (12, 5000)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(OPENAI_STREAM)), st.binary(max_size=40))
def test_garbage_spliced_anywhere_never_raises(cut, junk):
    for stream, adapter in ((OPENAI_STREAM, OpenAI), (ANTHROPIC_STREAM, Anthropic), (GEMINI_STREAM, Gemini)):
        broken = stream[:cut] + junk + stream[cut:]
        u = adapter.usage(broken)
        assert u.prompt_tokens is None or u.prompt_tokens >= 0


def test_count_regex_finds_exactly_the_output_text():
    for adapter, stream in ((OpenAI, OPENAI_STREAM), (Anthropic, ANTHROPIC_STREAM), (Gemini, GEMINI_STREAM)):
        chars = sum(len(m.group(1)) for m in re.finditer(adapter.count_regex, stream.decode()))
        assert chars == sum(len(fmt.token_text(i)) for i in range(30)), adapter.name


def test_cutoffs_are_valid_sse_in_the_provider_format():
    events = [e for e in OpenAI.cutoff("gpt-4o-mini").split("\n\n") if e]
    assert json.loads(events[0][6:])["choices"][0]["finish_reason"] == "length" and events[1] == "data: [DONE]"
    events = [e for e in Anthropic.cutoff("claude").split("\n\n") if e]
    assert [e.split("\n")[0] for e in events] == ["event: content_block_stop", "event: message_delta",
                                                  "event: message_stop"]
    delta = json.loads(events[1].split("\n")[1][6:].replace(CUTOFF_TOKENS, "37"))  # as the shim fills it
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"] == {"output_tokens": 37}
    assert json.loads(Gemini.cutoff("g")[6:])["candidates"][0]["finishReason"] == "MAX_TOKENS"
    (incomplete,) = [e for e in OpenAIResponses.cutoff("gpt-4o").split("\n\n") if e]
    name, data = incomplete.split("\n")
    doc = json.loads(data[6:].replace(CUTOFF_CAPTURE, "resp_1"))
    assert name == "event: response.incomplete" and doc["type"] == "response.incomplete"
    assert doc["response"]["id"] == "resp_1" and doc["response"]["status"] == "incomplete"
    assert doc["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_responses_api_counts_deltas_only_and_reads_the_final_usage():
    events = list(fmt.responses_stream("gpt-4o", 21, 9))
    raw = "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events)
    counted = "".join(m.group(1) for m in re.finditer(OpenAIResponses.count_regex, raw))
    # Only the deltas: the .done events and the final response repeat the text, uncounted.
    assert counted == "".join(fmt.token_text(i) for i in range(9))
    assert re.search(OpenAIResponses.capture_regex, raw.split("\n\n")[0]).group(1) == "resp_mock"
    u = OpenAIResponses.usage(raw.encode())
    assert (u.prompt_tokens, u.completion_tokens) == (21, 9)
    u = OpenAIResponses.usage(json.dumps(fmt.responses_response("gpt-4o", 5, 3)).encode())
    assert (u.prompt_tokens, u.completion_tokens) == (5, 3)
    cut = raw.split("\n\n")[:5]  # a stream cut early: no usage yet
    assert OpenAIResponses.usage("\n\n".join(cut).encode()).completion_tokens is None


def test_openai_include_usage_is_added_once():
    body = json.dumps({"model": "m", "stream": True, "stream_options": {"foo": 1}}).encode()
    assert json.loads(OpenAI.with_usage(body))["stream_options"] == {"foo": 1, "include_usage": True}
    assert OpenAI.with_usage(OpenAI.with_usage(body)) is None
    assert OpenAI.with_usage(b"not json") is None
    assert re.search(OpenAI.injected_usage_regex, OPENAI_STREAM.decode().split("\n\n")[-3])


def test_chars_per_token_learns_bounded():
    cpt = CharsPerToken()
    assert cpt.get("m") == 4.0
    assert cpt.observe("m", 700, 100)  # 7 chars/token
    assert cpt.get("m") == 7.0
    assert cpt.observe("m", 200, 100)  # 2: the mean moves by a fifth of the gap
    assert abs(cpt.get("m") - 6.0) < 1e-9
    assert not cpt.observe("m", 5000, 100)  # 50 chars/token is not a tokenizer: ignored
    assert not cpt.observe("m", 10, 2)  # too small a sample
    assert cpt.get("other") == 4.0


def test_a_stream_starting_with_junk_is_still_read_event_by_event():
    """A `{` before the first event must not make the stream one JSON text, whose keyed usage
    search would take an object the cut left without its event."""
    event = b'data: {"candidates": [], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 9}}\n\n'
    raw = b"{junk\n\n" + event
    assert Gemini.usage(raw).completion_tokens == 9
    cut = raw[:raw.rindex(b"}")]  # the inner usage object is whole, its event is not
    assert Gemini.usage(cut).completion_tokens is None
