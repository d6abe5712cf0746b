"""Response bodies and SSE events in the OpenAI, Anthropic and Gemini wire formats, for the mock upstream.

Each generator yields the exact JSON objects the provider sends, with its real usage fields:
OpenAI `usage.prompt_tokens/completion_tokens` (final stream chunk when include_usage),
Anthropic `usage.input_tokens/output_tokens` in message_start and message_delta, Gemini
`usageMetadata.promptTokenCount/candidatesTokenCount`.
"""

import time

WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


def token_text(i: int) -> str:
    """The i-th output token: one short word and a space (about 4-6 characters, like real BPE tokens)."""
    return WORDS[i % len(WORDS)] + " "


def openai_response(model: str, prompt_tokens: int, n: int, capped: bool = False) -> dict:
    return {
        "id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(token_text(i) for i in range(n))},
                     "finish_reason": "length" if capped else "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n},
    }


def openai_stream(model: str, prompt_tokens: int, n: int, include_usage: bool, capped: bool = False):
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    for i in range(n):
        yield {**base, "choices": [{"index": 0, "delta": {"content": token_text(i)}, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length" if capped else "stop"}]}
    if include_usage:
        yield {**base, "choices": [],
               "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}}


def anthropic_response(model: str, prompt_tokens: int, n: int, capped: bool = False) -> dict:
    return {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "".join(token_text(i) for i in range(n))}],
        "stop_reason": "max_tokens" if capped else "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": n},
    }


def anthropic_stream(model: str, prompt_tokens: int, n: int, capped: bool = False):
    """(event name, data) pairs, as Anthropic names every SSE event."""
    yield "message_start", {"type": "message_start", "message": {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}
    for i in range(n):
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": token_text(i)}}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    stop = "max_tokens" if capped else "end_turn"
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                            "usage": {"output_tokens": n}}
    yield "message_stop", {"type": "message_stop"}


def gemini_usage(prompt_tokens: int, n: int) -> dict:
    return {"promptTokenCount": prompt_tokens, "candidatesTokenCount": n, "totalTokenCount": prompt_tokens + n}


def gemini_response(model: str, prompt_tokens: int, n: int, capped: bool = False) -> dict:
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "".join(token_text(i) for i in range(n))}]},
                        "finishReason": "MAX_TOKENS" if capped else "STOP", "index": 0}],
        "usageMetadata": gemini_usage(prompt_tokens, n), "modelVersion": model,
    }


def gemini_stream(model: str, prompt_tokens: int, n: int, capped: bool = False):
    """Gemini sends each chunk as a whole GenerateContentResponse; usage grows as it goes."""
    for i in range(n):
        last = i == n - 1
        cand = {"content": {"role": "model", "parts": [{"text": token_text(i)}]}, "index": 0}
        if last:
            cand["finishReason"] = "MAX_TOKENS" if capped else "STOP"
        yield {"candidates": [cand], "usageMetadata": gemini_usage(prompt_tokens, i + 1), "modelVersion": model}
    if n == 0:
        yield {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP",
                               "index": 0}], "usageMetadata": gemini_usage(prompt_tokens, 0), "modelVersion": model}
