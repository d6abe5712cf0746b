"""One adapter per provider format: the streaming recipe the shim applies, and usage parsing.

The shim knows nothing of providers. For each LLM request the engine hands it a recipe: a
regex that finds output text in an SSE event, the exact events to send when the allowance is
reached (the provider's own finish), and, for OpenAI, which injected usage chunk to hide.
After the response, the engine reads the provider's usage fields from the body head and tail.
"""

import msgspec

from ..protocol.messages import CUTOFF_CAPTURE, CUTOFF_TOKENS
from .sse import count, json_objects

_json = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

# A JSON string value: group 1 is its (still escaped) text. Escapes make a few characters
# count twice; the chars-per-token ratio is learned on the same measure, so it cancels out.
_STR = r'"((?:[^"\\]|\\.)*)"'


def _object(depth: int) -> str:
    """A JSON object nested at most `depth` deep (PCRE and Python re alike: no recursion).
    Possessive quantifiers: a deeper or unbalanced object fails fast instead of backtracking."""
    inner = r'[^{}"]++|"(?:[^"\\]|\\.)*+"'
    pat = r"\{(?:" + inner + r")*+\}"
    for _ in range(depth - 1):
        pat = r"\{(?:" + inner + "|" + pat + r")*+\}"
    return pat


# A string's text, or a whole object (Gemini functionCall args), as group 1 either way: the
# optional quote and the lookbehind choose the branch, so one group serves both.
_STR_OR_OBJECT = r'"?((?<=")(?:[^"\\]|\\.)*(?=")|' + _object(8) + ")"


class Usage:
    """A provider's counts, normalised: `prompt_tokens` is every input token (cached and
    cache-written included), `completion_tokens` every output token (reasoning included)."""

    __slots__ = ("prompt_tokens", "completion_tokens", "cached_input_tokens", "cache_write_tokens",
                 "reasoning_tokens")

    def __init__(self, prompt_tokens=None, completion_tokens=None):
        self.prompt_tokens: int | None = prompt_tokens
        self.completion_tokens: int | None = completion_tokens  # None: no final count seen
        self.cached_input_tokens = 0  # of prompt_tokens: read from the provider's prompt cache
        self.cache_write_tokens = 0  # of prompt_tokens: written to it (Anthropic)
        self.reasoning_tokens = 0  # of completion_tokens: thinking (priced as output)


def _detail(usage: dict, details: str, field: str) -> int:
    d = usage.get(details)
    return (count(d.get(field)) or 0) if isinstance(d, dict) else 0


def _sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {_json.encode(data).decode()}\n\n"


_SLOT = 987654321987654321  # an int no real field has: replaced by a placeholder after encoding


def _with_slot(text: str, placeholder: str) -> str:
    """The encoded events with `placeholder` (for the shim to fill) where _SLOT was."""
    return text.replace(str(_SLOT), placeholder)


class OpenAI:
    name = "openai"
    capture_regex = ""
    running_totals = False  # usage arrives once, at the end
    # Every kind of output: text, tool-call names and arguments, refusals, reasoning (the
    # `reasoning_content` / `reasoning` of OpenAI-compatible servers), Responses API deltas.
    count_regex = r'"(?:content|arguments|name|refusal|reasoning_content|reasoning|delta)"\s*:\s*' + _STR
    # The usage-only chunk (`"choices":[]`) that include_usage adds at the end of a stream.
    injected_usage_regex = r'"choices":\s*\[\s*\]'

    @staticmethod
    def cutoff(model: str) -> str:
        chunk = {"id": "chatcmpl-fairvisor-cutoff", "object": "chat.completion.chunk", "created": 0,
                 "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        return _sse(chunk) + "data: [DONE]\n\n"

    @staticmethod
    def with_usage(body: bytes) -> bytes | None:
        """The body with `stream_options.include_usage` on, or None when already on or not JSON."""
        try:
            doc = _decoder.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        opts = doc.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage") is True:
            return None
        doc["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        return _json.encode(doc)

    @staticmethod
    def usage(raw: bytes) -> Usage:
        u = Usage()
        for doc in json_objects(raw, b"usage"):
            usage = doc.get("usage")
            if isinstance(usage, dict):
                u.prompt_tokens = count(usage.get("prompt_tokens"))
                u.completion_tokens = count(usage.get("completion_tokens"))
                u.cached_input_tokens = _detail(usage, "prompt_tokens_details", "cached_tokens")
                u.reasoning_tokens = _detail(usage, "completion_tokens_details", "reasoning_tokens")
        return u


class OpenAIResponses:
    """The OpenAI Responses API (`/v1/responses`): typed stream events, usage in the final
    `response.completed` (`input_tokens`, `output_tokens`), or at the top of a JSON answer."""
    name = "openai_responses"
    running_totals = False
    # Every generated kind arrives as a `delta` (output_text, function_call_arguments, refusal,
    # reasoning text and summaries); the `.done` events and the final response repeat the whole
    # text under other names, so only deltas count.
    count_regex = r'"delta"\s*:\s*' + _STR
    injected_usage_regex = ""
    # The response id, first named by `response.created` (the first event): an SDK checks that
    # the stream's lifecycle events, the cutoff's included, name one response.
    capture_regex = r'"id"\s*:\s*' + _STR

    @staticmethod
    def cutoff(model: str) -> str:
        """How the API ends a response cut at max_output_tokens: `response.incomplete`."""
        response = {"id": _SLOT, "object": "response", "created_at": 0, "status": "incomplete",
                    "incomplete_details": {"reason": "max_output_tokens"}, "model": model, "output": None,
                    "usage": None}
        return _with_slot(_sse({"type": "response.incomplete", "sequence_number": 0, "response": response},
                               "response.incomplete"), f'"{CUTOFF_CAPTURE}"')

    @staticmethod
    def usage(raw: bytes) -> Usage:
        u = Usage()
        for doc in json_objects(raw, b"usage"):
            resp = doc.get("response")  # stream events carry the response; a JSON answer is one
            usage = resp.get("usage") if isinstance(resp, dict) else doc.get("usage")
            if isinstance(usage, dict):
                u.prompt_tokens = count(usage.get("input_tokens"))
                u.completion_tokens = count(usage.get("output_tokens"))
                u.cached_input_tokens = _detail(usage, "input_tokens_details", "cached_tokens")
                u.reasoning_tokens = _detail(usage, "output_tokens_details", "reasoning_tokens")
        return u


class Anthropic:
    name = "anthropic"
    capture_regex = ""
    running_totals = False
    # text_delta, input_json_delta (tool arguments), thinking_delta, and tool_use names.
    count_regex = r'"(?:text|partial_json|thinking|name)"\s*:\s*' + _STR
    injected_usage_regex = ""

    @staticmethod
    def cutoff(model: str) -> str:
        # output_tokens: the tokens the stream carried, filled in by the shim when it cuts.
        return (_sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
                + _with_slot(_sse({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                                   "usage": {"output_tokens": _SLOT}}, "message_delta"), CUTOFF_TOKENS)
                + _sse({"type": "message_stop"}, "message_stop"))

    @staticmethod
    def usage(raw: bytes) -> Usage:
        u = Usage()
        for doc in json_objects(raw, b"usage"):
            kind = doc.get("type")
            if kind == "message_start":  # output_tokens here is a placeholder, not the final count
                msg = doc.get("message")
                usage = msg.get("usage") if isinstance(msg, dict) else None
                if isinstance(usage, dict):
                    _anthropic_input(u, usage)
            elif kind in ("message_delta", "message"):
                usage = doc.get("usage")
                if isinstance(usage, dict):
                    if count(usage.get("input_tokens")) is not None:  # newer deltas repeat the input counts
                        _anthropic_input(u, usage)
                    u.completion_tokens = count(usage.get("output_tokens"))
        return u


def _anthropic_input(u: Usage, usage: dict) -> None:
    """Anthropic counts cache reads and writes apart from `input_tokens`: the prompt is all three."""
    plain = count(usage.get("input_tokens"))
    read = count(usage.get("cache_read_input_tokens")) or 0
    written = count(usage.get("cache_creation_input_tokens")) or 0
    u.prompt_tokens = None if plain is None else plain + read + written
    u.cached_input_tokens, u.cache_write_tokens = read, written


class Gemini:
    name = "gemini"
    capture_regex = ""
    running_totals = True  # every chunk carries the count so far
    # Text and thought parts, functionCall names and args (an object), executableCode.
    count_regex = r'"(?:text|name|code|args)"\s*:\s*' + _STR_OR_OBJECT
    injected_usage_regex = ""

    @staticmethod
    def cutoff(model: str) -> str:
        return _sse({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                                     "finishReason": "MAX_TOKENS", "index": 0}], "modelVersion": model})

    @staticmethod
    def usage(raw: bytes) -> Usage:
        """Every Gemini chunk carries running totals, so even a cut stream has an exact count."""
        u = Usage()
        for doc in json_objects(raw, b"usageMetadata"):
            meta = doc.get("usageMetadata")
            if isinstance(meta, dict):
                u.prompt_tokens = count(meta.get("promptTokenCount"))  # cached content included
                u.cached_input_tokens = count(meta.get("cachedContentTokenCount")) or 0
                # Thinking is counted apart from the candidates, and billed as output.
                thoughts = count(meta.get("thoughtsTokenCount")) or 0
                out = count(meta.get("candidatesTokenCount", 0))
                u.completion_tokens = None if out is None else out + thoughts
                u.reasoning_tokens = thoughts
        return u


class Plain:
    """A plain-HTTP answer (FAIRVISOR_LLM_FORMAT=auto, a path of no provider) that an LLM rule
    reserved for: its usage is never read, so a 2xx answer keeps the whole reservation."""
    name = "plain"
    running_totals = False

    @staticmethod
    def usage(raw: bytes) -> Usage:
        return Usage()


PLAIN = Plain
# One adapter per FAIRVISOR_LLM_FORMAT provider; BY_NAME adds the APIs a format serves on
# several paths (llm/formats.py adapter_name), which reservations remember.
ADAPTERS = {"openai": OpenAI, "anthropic": Anthropic, "gemini": Gemini}
BY_NAME = {**ADAPTERS, OpenAIResponses.name: OpenAIResponses}
