"""An LLM request body's shape, decoded once per request for the token estimate and the loop fingerprint.

The union of the three providers' request fields that matter here; msgspec skips the rest in C.
A message's content stays raw JSON: the loop detector fingerprints those client bytes
(pyengine.guards.fingerprint), and the estimate reads the text out of them (`prompt_chars`).
A body that does not fit these types is not a typed chat body: the estimate falls back to a
generic walk (pyengine.llm.request) and the fingerprint to its own narrower decode.
"""

import msgspec

# What a bad client body raises while it is read here; the callers fall back on any of these.
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class Part(msgspec.Struct):
    text: str = ""


class Message(msgspec.Struct):
    """A chat message (OpenAI, Anthropic, Responses API input) or a Gemini `contents` item."""

    role: str = ""
    content: msgspec.Raw = msgspec.Raw(b"")  # msgspec.Raw cannot be part of a union
    parts: msgspec.Raw = msgspec.Raw(b"")


class _Content(msgspec.Struct):  # Gemini systemInstruction
    parts: list[Part] = []


class _GenerationConfig(msgspec.Struct):
    maxOutputTokens: int | None = None
    candidateCount: object = None  # Gemini choices: a client number (pyengine.llm.request)


class ChatBody(msgspec.Struct):
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_output_tokens: int | None = None  # Responses API
    stream: bool = False
    n: object = None  # OpenAI choices: a client number (pyengine.llm.request)
    messages: list[Message] = []
    system: str | list[Part] | None = None
    contents: list[Message] = []  # Gemini: their `parts`
    systemInstruction: _Content | None = None
    generationConfig: _GenerationConfig | None = None
    prompt: str | None = None  # legacy completions
    input: str | list[Message] | None = None  # Responses API: text, or input messages
    instructions: str | None = None  # Responses API system prompt


class Chat(msgspec.Struct):
    """Only the messages: what the fingerprint reads of a body that is not a typed ChatBody."""

    messages: list[Message] = []
    contents: list[Message] = []


decode_chat_body = msgspec.json.Decoder(ChatBody).decode
decode_chat = msgspec.json.Decoder(Chat).decode
_content = msgspec.json.Decoder(str | list[Part] | None).decode
_parts = msgspec.json.Decoder(list[Part]).decode


def _parts_chars(parts) -> int:
    n = 0
    for p in parts:
        n += len(p.text)
    return n


def _content_chars(raw) -> int:
    if not raw:
        return 0
    c = _content(raw)
    return len(c) if c.__class__ is str else _parts_chars(c) if c else 0


def prompt_chars(body: ChatBody) -> int:
    """Characters of the prompt's text; raises DECODE_ERRORS when a message's content has
    another shape than the providers' (the caller then reads the body generically)."""
    chars = 0
    for m in body.messages:
        chars += _content_chars(m.content)
    s = body.system
    if s:
        chars += len(s) if s.__class__ is str else _parts_chars(s)
    for c in body.contents:
        if c.parts:
            chars += _parts_chars(_parts(c.parts))
    if body.systemInstruction is not None:
        chars += _parts_chars(body.systemInstruction.parts)
    inp = body.input
    if inp:
        if inp.__class__ is str:
            chars += len(inp)
        else:
            for m in inp:
                chars += _content_chars(m.content)
    if body.prompt:
        chars += len(body.prompt)
    if body.instructions:
        chars += len(body.instructions)
    return chars
