"""The mock LLM upstream speaks the providers' real formats: checked with the official SDKs."""

import asyncio
import socket
import threading

import anthropic
import openai
import pytest

from pyengine.devtools.mock_llm import MockLLM


@pytest.fixture(scope="module")
def mock_url():
    """The mock on a free loopback port, served from a background event loop."""
    loop = asyncio.new_event_loop()
    mock = MockLLM(output_tokens=7)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = loop.run_until_complete(asyncio.start_server(mock.handle, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", mock
    loop.call_soon_threadsafe(server.close)
    asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


MESSAGES = [{"role": "user", "content": "Say something short about rate limits."}]  # 39 chars -> 10 tokens


def test_openai_sdk_chat_and_stream_with_usage(mock_url):
    url, mock = mock_url
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)
    r = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert r.usage.prompt_tokens == 10 and r.usage.completion_tokens == 7
    assert r.choices[0].message.content == "lorem ipsum dolor sit amet consectetur adipiscing "
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, max_tokens=3,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "lorem ipsum dolor "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 3
    assert mock.requests[-1]["headers"]["authorization"] == "Bearer sk-test"
    client.close()


def test_anthropic_sdk_messages_and_stream(mock_url):
    url, _ = mock_url
    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0)
    m = client.messages.create(model="claude-3-5-haiku", max_tokens=100, messages=MESSAGES)
    assert (m.usage.input_tokens, m.usage.output_tokens) == (10, 7) and m.stop_reason == "end_turn"
    with client.messages.stream(model="claude-3-5-haiku", max_tokens=2, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "lorem ipsum " and final.usage.output_tokens == 2 and final.stop_reason == "max_tokens"
    client.close()


def test_errors_and_gemini_shapes(mock_url):
    import http.client
    import json

    url, _ = mock_url
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/v1beta/models/gemini-2.0-flash:generateContent",
                 json.dumps({"contents": [{"parts": [{"text": "abcdefgh"}]}]}))
    doc = json.loads(conn.getresponse().read())
    assert doc["usageMetadata"] == {"promptTokenCount": 2, "candidatesTokenCount": 7, "totalTokenCount": 9}
    conn.request("POST", "/v1/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                 json.dumps({"contents": [{"parts": [{"text": "abcd"}]}], "generationConfig": {"maxOutputTokens": 2}}))
    events = [json.loads(line[6:]) for line in conn.getresponse().read().decode().splitlines()
              if line.startswith("data: ")]
    assert [e["usageMetadata"]["candidatesTokenCount"] for e in events] == [1, 2]
    assert events[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    conn.request("POST", "/v1/chat/completions", "{}", {"x-mock-status": "503"})
    resp = conn.getresponse()
    assert resp.status == 503 and json.loads(resp.read())["error"]["type"] == "server_error"
    conn.close()
