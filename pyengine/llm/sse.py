"""Reading provider usage out of a response head+tail: JSON bodies and SSE `data:` lines, defensively."""

import msgspec

_decoder = msgspec.json.Decoder()


def json_objects(raw: bytes):
    """Every JSON object in a response fragment: the whole body when it is one JSON document,
    else each SSE `data:` line that decodes. Lines cut at the head/tail junction are skipped."""
    if not raw:
        return
    stripped = raw.strip()
    if stripped[:1] in (b"{", b"["):
        try:
            doc = _decoder.decode(stripped)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            yield doc
            return
        if isinstance(doc, list):  # Gemini streaming without alt=sse: one JSON array
            yield from (d for d in doc if isinstance(d, dict))
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
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(doc, dict):
            yield doc


# Larger than any response could be: a count beyond it is a broken or hostile upstream. Charged,
# it would drain the key's bucket for millennia; treated as unknown, the counted tokens apply.
MAX_TOKENS = 100_000_000


def count(value) -> int | None:
    """A token count from provider JSON: a non-negative int up to MAX_TOKENS, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return value
    return None
