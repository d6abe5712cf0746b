"""The OpenAI Responses API through real nginx (an auto edge, the mock upstream, the openai SDK):
metered on its own usage, cut the way the API ends an incomplete response; and the tokens an
Anthropic stream carried reported in the cut's message_delta."""

from __future__ import annotations

import json

import pytest

from .test_llm_proxy import (DEFAULT_COMPLETION, PROMPT, PROMPT_TOKENS, TPD, LLMEdge, event_data, expected_text,
                             llm_policy, mock_llm, sse_events)  # noqa: F401 (mock_llm: a fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def edge(start_edge, mock_llm):
    return start_edge(llm_policy(), flags=["--mode", "reverse_proxy", "--backend-url", mock_llm.url])


def responses(edge, stream: bool, max_output_tokens: int | None, output_tokens: int):
    doc = {"model": "gpt-4o", "input": PROMPT, "stream": stream}
    if max_output_tokens is not None:
        doc["max_output_tokens"] = max_output_tokens
    return edge.request("POST", "/openai/v1/responses", body=json.dumps(doc).encode(), fresh=True,
                        headers={"Content-Type": "application/json", "X-Tenant": "t1",
                                 "X-Mock-Output-Tokens": str(output_tokens)})


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_responses_are_settled_on_their_own_usage(edge, stream):
    r = responses(edge, stream, 200, 7)
    assert r.status == 200, r.body
    e = LLMEdge(edge, "openai")
    e.wait_settled(1)
    assert e.tpd_remaining() == TPD - (PROMPT_TOKENS + 7)


def test_a_cut_responses_stream_ends_as_an_incomplete_response(edge):
    r = responses(edge, True, None, 400)
    events = sse_events(r.body)
    last = event_data(events[-1])
    assert events[-1].startswith("event: response.incomplete\n")
    assert last["type"] == "response.incomplete" and last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["id"] == event_data(events[0])["response"]["id"] == "resp_mock"
    deltas = [event_data(ev)["delta"] for ev in events if "output_text.delta" in ev.split("\n")[0]]
    assert abs(len(deltas) - DEFAULT_COMPLETION) <= 32
    assert not any("response.completed" in ev for ev in events)
    e = LLMEdge(edge, "openai")
    e.wait_settled(1)
    used = TPD - e.tpd_remaining()
    assert PROMPT_TOKENS < used <= PROMPT_TOKENS + DEFAULT_COMPLETION + 32


def test_the_openai_sdk_reads_responses_and_their_cut(edge):
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{edge.port}/openai/v1", api_key="k", max_retries=0,
                           default_headers={"X-Tenant": "sdk"})
    try:
        full = client.responses.create(model="gpt-4o", input=PROMPT, max_output_tokens=100,
                                       extra_headers={"X-Mock-Output-Tokens": "6"})
        assert full.output_text == expected_text(6) and full.usage.output_tokens == 6
        with client.responses.stream(model="gpt-4o", input=PROMPT,
                                     extra_headers={"X-Mock-Output-Tokens": "400"}) as s:
            kinds = [ev.type for ev in s]
        assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete"
        assert kinds.count("response.output_text.delta") >= DEFAULT_COMPLETION - 32
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model="gpt-4o", input=PROMPT, max_output_tokens=10 * TPD)
    finally:
        client.close()


def test_a_cut_anthropic_stream_reports_the_tokens_it_carried(edge):
    # max_tokens 50 is the allowance; the mock's words run over 4 characters a token, so the
    # edge's count reaches 50 before the mock's own 50 tokens are out: the edge cuts.
    body = json.dumps({"model": "claude-3-5-haiku", "stream": True, "max_tokens": 50,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()
    policy_allowance = 50
    r = edge.request("POST", "/anthropic/v1/messages", body=body, fresh=True,
                     headers={"X-Tenant": "t1", "X-Mock-Output-Tokens": "400"})
    events = [event_data(ev) for ev in sse_events(r.body)]
    delta = [d for d in events if d["type"] == "message_delta"]
    assert len(delta) == 1 and delta[0]["delta"]["stop_reason"] == "max_tokens"
    counted = delta[0]["usage"]["output_tokens"]
    # The usage reported is the count the edge cut at and charged.
    sent_chars = sum(len(d["delta"]["text"]) for d in events if d["type"] == "content_block_delta")
    assert counted == sent_chars // 4  # the starting 4 characters per token, nothing learned yet
    assert policy_allowance <= counted <= policy_allowance + 8


def test_the_anthropic_sdk_sees_the_cut_and_its_token_count(edge):
    import anthropic

    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{edge.port}/anthropic", api_key="k", max_retries=0,
                                 default_headers={"X-Tenant": "sdk"})
    try:
        with client.messages.stream(model="claude-3-5-haiku", max_tokens=50,
                                    messages=[{"role": "user", "content": PROMPT}],
                                    extra_headers={"X-Mock-Output-Tokens": "400"}) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
    finally:
        client.close()
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == len(text) // 4  # what the edge counted and charged, not 0
    assert 50 <= final.usage.output_tokens <= 58
