"""Reading provider usage out of a response head+tail: JSON bodies and SSE `data:` lines, defensively.

A JSON body larger than the kept head+tail (a long answer, logprobs) is not one JSON document
any more; its usage object is then found by its key and decoded by itself (`keyed_object`).
"""

import msgspec

_decoder = msgspec.json.Decoder()
_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

# Longest usage object looked at (bytes): real ones are a few hundred bytes, with details.
MAX_USAGE_OBJECT_BYTES = 8192
MAX_USAGE_CANDIDATES = 8  # keys tried from the end: a hostile body cannot make the search quadratic
_OPEN, _CLOSE, _QUOTE, _ESCAPE = ord("{"), ord("}"), ord('"'), ord("\\")


def is_event_stream(raw: bytes) -> bool:
    """Whether a kept response head is SSE (the shim counted it event by event), not a JSON body:
    SSE starts with a field name or a comment, JSON with `{` or `[`."""
    head = raw.lstrip()[:6]
    return head.startswith((b"data:", b"event:", b"id:", b":"))


def json_objects(raw: bytes, usage_key: bytes = b""):
    """Every JSON object in a response fragment: the whole body when it is one JSON document,
    else each SSE `data:` line that decodes. Lines cut at the head/tail junction are skipped.
    A JSON document that does not decode whole yields `{"type": "message", usage_key: object}`
    (every provider's non-stream body, reduced to its usage) when that object is found."""
    if not raw:
        return
    stripped = raw.strip()
    # SSE starts with a field name ("data:", "event:") or ":"; a JSON text never holds a line
    # starting "data:" (its newlines are outside strings, its keys quoted), so a body with one
    # is a stream whatever its first byte (junk before the first event).
    if stripped[:1] in (b"{", b"[") and b"\ndata:" not in raw:
        try:
            doc = _decoder.decode(stripped)
        except _ERRORS:
            doc = None
        if isinstance(doc, dict):
            yield doc
        elif isinstance(doc, list):  # Gemini streaming without alt=sse: one JSON array
            yield from (d for d in doc if isinstance(d, dict))
        elif usage_key:
            usage = keyed_object(stripped, usage_key)
            if usage is not None:
                yield {"type": "message", usage_key.decode(): usage}
        return
    for line in raw.split(b"\n"):
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            continue
        try:
            doc = _decoder.decode(payload)
        except _ERRORS:
            continue
        if isinstance(doc, dict):
            yield doc


def keyed_object(raw: bytes, key: bytes) -> dict | None:
    """The last `"key": {...}` object of a JSON text that need not be valid as a whole.

    Only a real key counts: its opening quote follows `{` or `,` (inside a JSON string every
    quote follows a backslash, so no answer text can fake one). The object ends at its matching
    brace (strings skipped) within MAX_USAGE_OBJECT_BYTES, and must decode by itself."""
    needle = b'"' + key + b'"'
    end = len(raw)
    for _ in range(MAX_USAGE_CANDIDATES):
        at = raw.rfind(needle, 0, end)
        if at < 0:
            return None
        end = at
        before = raw[max(0, at - 64):at].rstrip()[-1:]
        after = raw[at + len(needle):at + len(needle) + 64].lstrip()
        if before not in (b"{", b",") or after[:1] != b":":
            continue
        start = raw.find(b"{", at + len(needle), at + len(needle) + 64)
        if start < 0 or raw[at + len(needle):start].strip() != b":":
            continue
        stop = _object_end(raw, start)
        if stop < 0:
            continue
        try:
            obj = _decoder.decode(raw[start:stop])
        except _ERRORS:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _object_end(raw: bytes, start: int) -> int:
    """Index just past the `}` matching the `{` at `start`, or -1 (unbalanced, or too long)."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, min(len(raw), start + MAX_USAGE_OBJECT_BYTES)):
        c = raw[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == _ESCAPE:
                escaped = True
            elif c == _QUOTE:
                in_string = False
        elif c == _QUOTE:
            in_string = True
        elif c == _OPEN:
            depth += 1
        elif c == _CLOSE:
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


# Larger than any response could be: a count beyond it is a broken or hostile upstream. Charged,
# it would drain the key's bucket for millennia; treated as unknown, the counted tokens apply.
MAX_TOKENS = 100_000_000


def count(value) -> int | None:
    """A token count from provider JSON: a non-negative int up to MAX_TOKENS, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return value
    return None
