"""Response bodies and SSE events in the OpenAI, Anthropic and Gemini wire formats, for the mock upstream.

Each generator yields the exact JSON objects the provider sends, with its real usage fields:
OpenAI `usage.prompt_tokens/completion_tokens` (final stream chunk when include_usage),
Anthropic `usage.input_tokens/output_tokens` in message_start and message_delta, Gemini
`usageMetadata.promptTokenCount/candidatesTokenCount`.

`kind` chooses what the output is, in each provider's real shape: "text", "tool" (a function
call's arguments: OpenAI `tool_calls[].function.arguments`, Anthropic `tool_use` with
`input_json_delta`, Gemini `functionCall` parts), "reasoning" (OpenAI-compatible
`reasoning_content`, Anthropic `thinking` blocks with `thinking_delta`, Gemini `thought` parts)
or "refusal" (OpenAI `refusal`; text elsewhere).

`logprobs` gives a non-stream answer per-token structure, as long answers with log
probabilities have: OpenAI `choices[].logprobs.content`, Gemini `logprobsResult`; Anthropic has
no log probabilities, so its text comes as one content block per token instead.
"""

import time

WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


def token_text(i: int) -> str:
    """The i-th output token: one short word and a space (about 4-6 characters, like real BPE tokens)."""
    return WORDS[i % len(WORDS)] + " "


KINDS = ("text", "tool", "reasoning", "refusal")
TOOL = "lookup"  # the mock's one function


def pieces(kind: str, n: int) -> list[str]:
    """The n output fragments: words, or for a tool call the JSON text of its arguments."""
    words = [token_text(i) for i in range(n)]
    if kind == "tool" and words:
        words[0] = '{"q": "' + words[0]
        words[-1] += '"}'
    return words


def _finish(kind: str, capped: bool, tool: str, stop: str) -> str:
    return "length" if capped else tool if kind == "tool" else stop


def _openai_delta(kind: str, piece: str) -> dict:
    if kind == "tool":
        return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
    return {"reasoning_content" if kind == "reasoning" else "refusal" if kind == "refusal" else "content": piece}


def openai_response(model: str, prompt_tokens: int, n: int, capped: bool = False, kind: str = "text",
                    logprobs: bool = False) -> dict:
    out = "".join(pieces(kind, n))
    message = {"role": "assistant", "content": out if kind == "text" else None}
    if kind == "tool":
        message["tool_calls"] = [{"id": "call_mock", "type": "function", "function": {"name": TOOL, "arguments": out}}]
    elif kind != "text":
        message["reasoning_content" if kind == "reasoning" else "refusal"] = out
    choice = {"index": 0, "message": message, "finish_reason": _finish(kind, capped, "tool_calls", "stop")}
    if logprobs:
        choice["logprobs"] = {"content": [{"token": t, "logprob": -0.25, "bytes": list(t.encode()),
                                           "top_logprobs": []} for t in pieces(kind, n)], "refusal": None}
    return {
        "id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n},
    }


def openai_stream(model: str, prompt_tokens: int, n: int, include_usage: bool, capped: bool = False,
                  kind: str = "text"):
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    first = {"role": "assistant", "content": "" if kind == "text" else None}
    if kind == "tool":
        first["tool_calls"] = [{"index": 0, "id": "call_mock", "type": "function",
                                "function": {"name": TOOL, "arguments": ""}}]
    yield {**base, "choices": [{"index": 0, "delta": first, "finish_reason": None}]}
    for piece in pieces(kind, n):
        yield {**base, "choices": [{"index": 0, "delta": _openai_delta(kind, piece), "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(kind, capped, "tool_calls", "stop")}]}
    if include_usage:
        yield {**base, "choices": [],
               "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}}


def _anthropic_block(kind: str, out: str) -> dict:
    if kind == "tool":
        return {"type": "tool_use", "id": "toolu_mock", "name": TOOL, "input": {"q": out} if out else {}}
    if kind == "reasoning":
        return {"type": "thinking", "thinking": out, "signature": "mock-signature"}
    return {"type": "text", "text": out}


def _anthropic_delta(kind: str, piece: str) -> dict:
    if kind == "tool":
        return {"type": "input_json_delta", "partial_json": piece}
    if kind == "reasoning":
        return {"type": "thinking_delta", "thinking": piece}
    return {"type": "text_delta", "text": piece}


def anthropic_response(model: str, prompt_tokens: int, n: int, capped: bool = False, kind: str = "text",
                       logprobs: bool = False) -> dict:
    blocks = ([_anthropic_block(kind, token_text(i)) for i in range(n)] if logprobs
              else [_anthropic_block(kind, "".join(token_text(i) for i in range(n)))])
    return {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": blocks,
        "stop_reason": _finish(kind, capped, "tool_use", "end_turn").replace("length", "max_tokens"),
        "stop_sequence": None, "usage": {"input_tokens": prompt_tokens, "output_tokens": n},
    }


def anthropic_stream(model: str, prompt_tokens: int, n: int, capped: bool = False, kind: str = "text"):
    """(event name, data) pairs, as Anthropic names every SSE event."""
    yield "message_start", {"type": "message_start", "message": {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": _anthropic_block(kind, "")}
    for piece in pieces(kind, n):
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": _anthropic_delta(kind, piece)}
    if kind == "reasoning":
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "signature_delta", "signature": "mock-signature"}}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    stop = _finish(kind, capped, "tool_use", "end_turn").replace("length", "max_tokens")
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                            "usage": {"output_tokens": n}}
    yield "message_stop", {"type": "message_stop"}


def gemini_usage(prompt_tokens: int, n: int) -> dict:
    return {"promptTokenCount": prompt_tokens, "candidatesTokenCount": n, "totalTokenCount": prompt_tokens + n}


def _gemini_part(kind: str, out: str) -> dict:
    if kind == "tool":  # Gemini sends a function call whole, its args an object
        return {"functionCall": {"name": TOOL, "args": {"q": out}}}
    if kind == "reasoning":
        return {"text": out, "thought": True}
    return {"text": out}


def gemini_response(model: str, prompt_tokens: int, n: int, capped: bool = False, kind: str = "text",
                    logprobs: bool = False) -> dict:
    cand = {"content": {"role": "model", "parts": [_gemini_part(kind, "".join(token_text(i) for i in range(n)))]},
            "finishReason": "MAX_TOKENS" if capped else "STOP", "index": 0}
    if logprobs:
        chosen = [{"token": token_text(i), "logProbability": -0.25} for i in range(n)]
        cand["logprobsResult"] = {"topCandidates": [{"candidates": [c]} for c in chosen], "chosenCandidates": chosen}
    return {
        "candidates": [cand],
        "usageMetadata": gemini_usage(prompt_tokens, n), "modelVersion": model,
    }


def gemini_stream(model: str, prompt_tokens: int, n: int, capped: bool = False, kind: str = "text"):
    """Gemini sends each chunk as a whole GenerateContentResponse; usage grows as it goes.
    Tool output is one functionCall part per chunk (parallel calls), so it can be cut."""
    for i in range(n):
        last = i == n - 1
        cand = {"content": {"role": "model", "parts": [_gemini_part(kind, token_text(i))]}, "index": 0}
        if last:
            cand["finishReason"] = "MAX_TOKENS" if capped else "STOP"
        yield {"candidates": [cand], "usageMetadata": gemini_usage(prompt_tokens, i + 1), "modelVersion": model}
    if n == 0:
        yield {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP",
                               "index": 0}], "usageMetadata": gemini_usage(prompt_tokens, 0), "modelVersion": model}


# ---- OpenAI Responses API (/v1/responses) ------------------------------------------------


def _responses_usage(prompt_tokens: int, n: int) -> dict:
    return {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": n, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt_tokens + n}


def _responses_item(kind: str, out: str, done: bool) -> dict:
    status = "completed" if done else "in_progress"
    if kind == "tool":
        return {"type": "function_call", "id": "fc_mock", "call_id": "call_mock", "name": TOOL,
                "arguments": out, "status": status}
    part = [{"type": "output_text", "text": out, "annotations": []}] if done else []
    return {"type": "message", "id": "msg_mock", "status": status, "role": "assistant", "content": part}


def responses_response(model: str, prompt_tokens: int, n: int, capped: bool = False, kind: str = "text",
                       logprobs: bool = False, in_progress: bool = False) -> dict:
    """A Responses API answer; `capped` = cut at max_output_tokens (status "incomplete")."""
    kind = kind if kind == "tool" else "text"
    out = "".join(pieces(kind, n))
    item = _responses_item(kind, out, True)
    if logprobs and kind == "text":
        item["content"][0]["logprobs"] = [{"token": t, "logprob": -0.25, "bytes": list(t.encode()), "top_logprobs": []}
                                          for t in pieces(kind, n)]
    return {"id": "resp_mock", "object": "response", "created_at": int(time.time()),
            "status": "in_progress" if in_progress else "incomplete" if capped else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if capped else None, "model": model,
            "output": [] if in_progress else [item], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": None if in_progress else _responses_usage(prompt_tokens, n)}


def responses_stream(model: str, prompt_tokens: int, n: int, capped: bool = False, kind: str = "text"):
    """(event name, data) pairs: the Responses API's typed events, usage in the last one."""
    kind = kind if kind == "tool" else "text"
    seq = iter(range(1_000_000))

    def ev(kind_: str, **fields):
        return kind_, {"type": kind_, "sequence_number": next(seq), **fields}

    yield ev("response.created", response=responses_response(model, prompt_tokens, n, in_progress=True))
    yield ev("response.output_item.added", output_index=0, item=_responses_item(kind, "", False))
    if kind == "text":
        yield ev("response.content_part.added", item_id="msg_mock", output_index=0, content_index=0,
                 part={"type": "output_text", "text": "", "annotations": []})
    for piece in pieces(kind, n):
        if kind == "tool":
            yield ev("response.function_call_arguments.delta", item_id="fc_mock", output_index=0, delta=piece)
        else:
            yield ev("response.output_text.delta", item_id="msg_mock", output_index=0, content_index=0, delta=piece)
    out = "".join(pieces(kind, n))
    if kind == "text":
        yield ev("response.output_text.done", item_id="msg_mock", output_index=0, content_index=0, text=out)
        yield ev("response.content_part.done", item_id="msg_mock", output_index=0, content_index=0,
                 part={"type": "output_text", "text": out, "annotations": []})
    else:
        yield ev("response.function_call_arguments.done", item_id="fc_mock", output_index=0, arguments=out)
    yield ev("response.output_item.done", output_index=0, item=_responses_item(kind, out, True))
    final = responses_response(model, prompt_tokens, n, capped, kind)
    yield ev("response.incomplete" if capped else "response.completed", response=final)


def with_cached(kind: str, doc: dict, cached: int) -> dict:
    """`doc` (an answer or a stream event) reporting `cached` of its prompt tokens as read from
    the provider's prompt cache, in that provider's fields (Anthropic counts them apart)."""
    if not cached:
        return doc
    for holder in (doc, doc.get("message"), doc.get("response")):
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        elif isinstance(usage, dict) and kind == "responses" and "input_tokens" in usage:
            usage["input_tokens_details"] = {"cached_tokens": cached}
        elif isinstance(usage, dict) and "input_tokens" in usage:
            usage["input_tokens"] = max(0, usage["input_tokens"] - cached)
            usage["cache_read_input_tokens"] = cached
    meta = doc.get("usageMetadata")
    if isinstance(meta, dict):
        meta["cachedContentTokenCount"] = cached
    return doc
