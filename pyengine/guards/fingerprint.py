"""Request fingerprints for loop detection: method, path, key values and the body's salient part."""

import hashlib

from ..llm.chat_body import DECODE_ERRORS, decode_chat

DIGEST_BYTES = 16  # 128-bit blake2b: collisions between distinct requests are negligible


_USER_ROLES = frozenset(("user",))
_TOOL_ROLES = frozenset(("tool", "function", "ipython"))


def _last(messages: list, roles) -> bytes:
    for m in reversed(messages):
        if m.role in roles:
            return bytes(m.content) or bytes(m.parts)
    return b""


def body_part(body: bytes | None, chat=None) -> bytes:
    """What of the body identifies a repeat.

    A chat body (OpenAI/Anthropic `messages`, Gemini `contents`) is reduced to its last user
    message and its last tool result (Anthropic tool results are user messages, so they are
    the last user message): an agent looping on the same tool call keeps growing its history,
    but these stay identical. Any other body counts whole. `chat`: the body as the LLM rules
    already decoded it from these very bytes (pyengine.llm.chat_body), so it is not decoded twice.
    """
    if not body:
        return b""
    if chat is None:
        try:
            chat = decode_chat(body)
        except DECODE_ERRORS:
            return body
    messages = chat.messages or chat.contents
    if not messages:
        return body
    return b"chat\x00" + _last(messages, _USER_ROLES) + b"\x00" + _last(messages, _TOOL_ROLES)


def _part(h, data: bytes) -> None:
    # Length-prefixed, so no part can run into the next: (path "/a\x00x", value "y") and
    # (path "/a", value "x\x00y") are different requests.
    h.update(len(data).to_bytes(8, "big"))
    h.update(data)


def fingerprint(method: str, path: str, key_values, body: bytes | None, chat=None) -> str:
    """Hex digest over method, path, the policy's key values (None != "") and the body part
    (`chat`: see body_part)."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    _part(h, method.encode("utf-8", "surrogatepass"))
    _part(h, path.encode("utf-8", "surrogatepass"))
    for v in key_values:
        if v is None:
            h.update(b"-")
        else:
            h.update(b"=")
            _part(h, v.encode("utf-8", "surrogatepass"))
    h.update(b".")
    h.update(body_part(body, chat))
    return h.hexdigest()
