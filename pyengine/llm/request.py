"""What an LLM request asks for: model, requested output tokens, streaming, and a prompt estimate.

Parsed from the request body on the engine side only (the shim never parses providers).
Bodies that are not JSON, or not the provider's shape, yield an empty LLMRequest: rules then
fall back to `X-Token-Estimate` and `default_max_completion`.
"""

import msgspec

from .sse import MAX_TOKENS

CHARS_PER_TOKEN = 4.0  # starting estimate; pyengine/llm/estimator.py refines it per model


class _Part(msgspec.Struct):
    text: str = ""


class _Message(msgspec.Struct):  # OpenAI and Anthropic messages
    content: str | list[_Part] | None = None


class _Content(msgspec.Struct):  # Gemini contents and systemInstruction
    parts: list[_Part] = []


class _GenerationConfig(msgspec.Struct):
    maxOutputTokens: int | None = None


class _Body(msgspec.Struct):
    """The union of the three providers' request fields that matter here; the rest is skipped
    by msgspec in C. A body that does not fit these types takes the generic (slower) path."""

    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool = False
    messages: list[_Message] = []
    system: str | list[_Part] | None = None
    contents: list[_Content] = []
    systemInstruction: _Content | None = None
    generationConfig: _GenerationConfig | None = None
    prompt: str | None = None  # legacy completions
    input: str | None = None  # responses API, text form


_typed = msgspec.json.Decoder(_Body)
_decoder = msgspec.json.Decoder()


def _typed_chars(body: _Body) -> int:
    chars = 0
    for m in body.messages:
        c = m.content
        if isinstance(c, str):
            chars += len(c)
        elif c:
            chars += sum(len(p.text) for p in c)
    s = body.system
    if isinstance(s, str):
        chars += len(s)
    elif s:
        chars += sum(len(p.text) for p in s)
    for c in body.contents:
        chars += sum(len(p.text) for p in c.parts)
    if body.systemInstruction is not None:
        chars += sum(len(p.text) for p in body.systemInstruction.parts)
    return chars + len(body.prompt or "") + len(body.input or "")


def _parse_typed(body: bytes, req: "LLMRequest") -> bool:
    try:
        b = _typed.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    req.model = b.model
    req.max_output_tokens = _positive_int(b.max_completion_tokens) or _positive_int(b.max_tokens)
    if req.max_output_tokens is None and b.generationConfig is not None:
        req.max_output_tokens = _positive_int(b.generationConfig.maxOutputTokens)
    req.stream = b.stream
    req.prompt_chars = _typed_chars(b)
    return True


class LLMRequest:
    __slots__ = ("model", "max_output_tokens", "stream", "prompt_chars", "prompt_tokens")

    def __init__(self, model=None, max_output_tokens=None, stream=False, prompt_chars=0, prompt_tokens=0):
        self.model: str | None = model
        self.max_output_tokens: int | None = max_output_tokens  # as the client asked (tokens)
        self.stream: bool = stream
        self.prompt_chars: int = prompt_chars
        self.prompt_tokens: int = prompt_tokens  # estimated prompt size (tokens)


def _text_chars(node, depth: int = 0) -> int:
    """Characters of every string inside messages/contents: a cheap, format-agnostic prompt size."""
    if depth > 32:
        return 0
    if isinstance(node, str):
        return len(node)
    if isinstance(node, list):
        return sum(_text_chars(x, depth + 1) for x in node)
    if isinstance(node, dict):
        return sum(_text_chars(v, depth + 1) for k, v in node.items() if k not in ("role", "type"))
    return 0


def _positive_int(value) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _parse_generic(body: bytes, req: LLMRequest) -> None:
    """Any JSON at all: pick what fits, ignore what does not."""
    try:
        doc = _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return
    if not isinstance(doc, dict):
        return
    model = doc.get("model")
    if isinstance(model, str):
        req.model = model
    req.max_output_tokens = _positive_int(doc.get("max_completion_tokens")) or _positive_int(doc.get("max_tokens"))
    gen = doc.get("generationConfig")
    if isinstance(gen, dict) and req.max_output_tokens is None:
        req.max_output_tokens = _positive_int(gen.get("maxOutputTokens"))
    req.stream = doc.get("stream") is True
    req.prompt_chars = sum(_text_chars(doc[f]) for f in
                           ("messages", "system", "contents", "systemInstruction", "prompt", "input") if f in doc)


def parse_llm_request(body: bytes | None, path: str, estimate_header: str | None,
                      prompt_ratio=None) -> LLMRequest:
    """Extract the fields every provider format carries; never raises on client input."""
    req = LLMRequest()
    if body and not _parse_typed(body, req):
        _parse_generic(body, req)
    if req.model is None and "/models/" in path:
        # Gemini carries the model in the path: /v1beta/models/{model}:generateContent
        tail = path.split("/models/", 1)[1]
        req.model = tail.split(":", 1)[0] or None
        req.stream = req.stream or ":streamGenerateContent" in path
    est = None
    if estimate_header:
        try:
            est = int(estimate_header.strip())
        except ValueError:
            est = None
    if est is not None and est >= 0:
        # Clamped: a 4,000-digit estimate would overflow the float cost of an llm_usd budget.
        req.prompt_tokens = min(est, MAX_TOKENS)
    else:
        # prompt_ratio(model) -> learned chars per token; the constant until the engine has learned.
        ratio = prompt_ratio(req.model) if prompt_ratio is not None else CHARS_PER_TOKEN
        req.prompt_tokens = int(req.prompt_chars / ratio + 0.999)
    return req
