"""What an LLM request asks for: model, requested output tokens, choices, streaming, and a prompt estimate.

Parsed from the request body on the engine side only (the shim never parses providers).
A body the engine cannot read whole (cut at max_body_bytes, not JSON, compressed past the
bound) is never free: its prompt is estimated from its byte length (pyengine/llm/body.py).
`X-Token-Estimate` is a client number read on the decision-service surface only, where the
body is not seen; inline, the body is the truth.
"""

import math

import msgspec

from .body import read_body
from .chat_body import DECODE_ERRORS, decode_chat_body, prompt_chars
from .sse import MAX_TOKENS

CHARS_PER_TOKEN = 4.0  # starting estimate; pyengine/llm/estimator.py refines it per model
_decoder = msgspec.json.Decoder()  # the generic path: any JSON at all


def _parse_typed(body: bytes, req: "LLMRequest") -> bool:
    try:
        b = decode_chat_body(body)
        req.prompt_chars = prompt_chars(b)
    except DECODE_ERRORS:
        return False
    req.chat = b
    req.model = b.model
    gen = b.generationConfig
    # The first positive integer of the providers' fields, as an upstream would read them.
    want = b.max_completion_tokens
    if want is None or want <= 0:
        want = b.max_tokens
        if want is None or want <= 0:
            want = _positive_int(b.max_output_tokens)
            if want is None and gen is not None:
                want = _positive_int(gen.maxOutputTokens)
    req.max_output_tokens = want
    req.stream = b.stream
    n = b.n if b.n is not None else gen.candidateCount if gen is not None else None
    if n is not None:
        req.choices = _choices(n)
    return True


class LLMRequest:
    __slots__ = ("model", "max_output_tokens", "stream", "prompt_chars", "prompt_tokens", "choices", "readable",
                 "chat")

    def __init__(self, model=None, max_output_tokens=None, stream=False, prompt_chars=0, prompt_tokens=0,
                 choices=1, readable=True):
        self.model: str | None = model
        self.max_output_tokens: int | None = max_output_tokens  # per choice, as the client asked (tokens)
        self.stream: bool = stream
        self.prompt_chars: int = prompt_chars  # prompt text characters parsed (0 when the body was unread)
        self.prompt_tokens: int = prompt_tokens  # estimated prompt size (tokens)
        self.choices: int = choices  # completions asked for (OpenAI `n`, Gemini `candidateCount`), 1..MAX_CHOICES
        # The whole body was parsed: it may be rewritten (include_usage) and its estimate taught.
        self.readable: bool = readable
        # The decoded body (pyengine.llm.chat_body.ChatBody) when it was read as one, else None.
        self.chat = None


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


MAX_CHOICES = 128  # OpenAI's own cap on `n`; Gemini's candidateCount is lower


def _choices(value) -> int:
    """A client's choice count, clamped to 1..MAX_CHOICES. Numbers and numeric strings count as
    an upstream's lenient parser would read them (2.0, "2"); anything else is one choice."""
    if isinstance(value, str):
        try:
            value = float(value.strip()[:20])
        except ValueError:
            return 1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:  # also NaN
        return 1
    return MAX_CHOICES if value >= MAX_CHOICES else math.ceil(value)


def _parse_generic(body: bytes, req: LLMRequest) -> bool:
    """Any JSON object at all: pick what fits, ignore what does not. False: not a JSON object."""
    try:
        doc = _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    if not isinstance(doc, dict):
        return False
    model = doc.get("model")
    if isinstance(model, str):
        req.model = model
    req.max_output_tokens = (_positive_int(doc.get("max_completion_tokens")) or _positive_int(doc.get("max_tokens"))
                             or _positive_int(doc.get("max_output_tokens")))
    gen = doc.get("generationConfig")
    if isinstance(gen, dict) and req.max_output_tokens is None:
        req.max_output_tokens = _positive_int(gen.get("maxOutputTokens"))
    req.stream = doc.get("stream") is True
    req.choices = _choices(doc["n"] if "n" in doc else gen.get("candidateCount") if isinstance(gen, dict) else None)
    req.prompt_chars = sum(_text_chars(doc[f]) for f in
                           ("messages", "system", "contents", "systemInstruction", "prompt", "input", "instructions")
                           if f in doc)
    return True


def estimate_tokens(header: str | None) -> int | None:
    """`X-Token-Estimate` as a token count: decimal digits only, clamped to MAX_TOKENS; None for
    anything else (absent, negative, fractional, NaN, words). Never raises."""
    if not header:
        return None
    text = header.strip()
    if not text.isascii() or not text.isdigit():
        return None
    # Compare lengths first: int() of a 4,000-digit string is slow and then refused by Python.
    return MAX_TOKENS if len(text) > len(str(MAX_TOKENS)) else min(int(text), MAX_TOKENS)


def parse_llm_request(body: bytes | None, path: str, estimate_header: str | None, prompt_ratio=None,
                      body_bytes: int = -1, encoding: str | None = None) -> LLMRequest:
    """Extract the fields every provider format carries; never raises on client input.

    `body` None: the decision service, which sees no body; then `estimate_header` (the
    client's X-Token-Estimate) is the prompt estimate. Inline, the header is ignored.
    `body_bytes`: the body's real length when the shim sent less (-1: not told).
    `encoding`: the request's Content-Encoding."""
    req = LLMRequest()
    b = read_body(body, body_bytes, encoding)
    data = b.data
    if data is None or (data and not _parse_typed(data, req) and not _parse_generic(data, req)):
        req.readable = False
        req.prompt_chars = 0
    if data is not body:
        req.chat = None  # decoded from decompressed bytes: the fingerprint reads the client's own
    if req.model is None and "/models/" in path:
        # Gemini carries the model in the path: /v1beta/models/{model}:generateContent
        tail = path.split("/models/", 1)[1]
        req.model = tail.split(":", 1)[0] or None
        req.stream = req.stream or ":streamGenerateContent" in path
    # prompt_ratio(model) -> learned chars per token; the constant until the engine has learned.
    ratio = prompt_ratio(req.model) if prompt_ratio is not None else CHARS_PER_TOKEN
    if req.readable:
        req.prompt_tokens = int(req.prompt_chars / ratio + 0.999)
    elif b.unbounded:
        req.prompt_tokens = MAX_TOKENS  # nothing bounds it: only a limit that admits anything admits it
    else:  # each prompt character came from at least one of these bytes
        req.prompt_tokens = min(int(b.known_bytes / ratio + 0.999), MAX_TOKENS)
    if body is None:
        est = estimate_tokens(estimate_header)
        if est is not None and est > req.prompt_tokens:
            req.prompt_tokens = est
    return req


def llm_of(view) -> LLMRequest:
    """The request's LLM fields, parsed once per request whichever rule asks first."""
    req = view.llm
    if req is None:
        req = view.llm = parse_llm_request(view.body, view.path, view.header("x-token-estimate"), view.prompt_ratio,
                                           view.body_bytes, view.header("content-encoding"))
    return req


# Request headers every LLM rule reads (the compiler asks the shim for them).
LLM_HEADERS = ("x-token-estimate", "content-encoding")
