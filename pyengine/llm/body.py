"""The request body an LLM rule can read: decompressed with a hard bound, or a byte count to reserve from.

An LLM rule never treats an unread body as free (docs/llm.md, "Bodies the engine cannot read").
The shim sends at most `max_body_bytes` of the body and the body's real length.
- An uncompressed body cut short (or not JSON) is not parsed; what is known instead is how many
  bytes the prompt came from, and every prompt character came from at least one body byte, so
  bytes / (chars per token) is never less than the estimate the whole body would have given.
- A gzip or deflate body is decompressed with a hard output bound. One that does not decode
  whole within it (cut short, corrupt, larger than the bound, a second gzip member) or that
  uses another encoding (br, zstd, ...) has no size the engine could bound: it is `unbounded`,
  and the rule refuses it as a prompt over any limit.
"""

import zlib

# Decompressed output read per body (bytes): the identity cap, so a compressed body costs the
# engine no more than an uncompressed one (one decision must not spend 20 ms inflating a bomb).
MAX_DECODED_BYTES = 1024 * 1024
_GZIP_WBITS = 32 + zlib.MAX_WBITS  # gzip or zlib header, detected
_IDENTITY = ("", "identity")
_DEFLATE = ("gzip", "x-gzip", "deflate")


class Body:
    """What the rule can use: `data` to parse (None = unreadable) and `known_bytes`, a lower bound
    on the decoded body length. `unbounded`: nothing bounds the decoded length (see above)."""

    __slots__ = ("data", "known_bytes", "unbounded")

    def __init__(self, data: bytes | None, known_bytes: int, unbounded: bool = False):
        self.data = data
        self.known_bytes = known_bytes
        self.unbounded = unbounded


def read_body(body: bytes | None, body_bytes: int, encoding: str | None) -> Body:
    """`body` as sent by the shim, `body_bytes` its real length (-1: not told, an older shim),
    `encoding` the Content-Encoding header. Never raises on client bytes."""
    body = body or b""
    total = max(body_bytes, len(body))
    truncated = total > len(body)
    if encoding is None:  # the common case, spared the header normalising below
        return Body(None if truncated else body, total)
    coding = encoding.strip().lower()
    if coding in _IDENTITY:
        return Body(None if truncated else body, total)
    # br, zstd, "gzip, br", anything else; or compressed and cut short.
    decoded = _inflate(body, coding) if coding in _DEFLATE and not truncated else None
    if decoded is None:
        return Body(None, total, unbounded=True)
    return Body(decoded, max(total, len(decoded)))


def _inflate(body: bytes, coding: str) -> bytes | None:
    """The whole decoded body, or None when it does not decode whole within MAX_DECODED_BYTES."""
    # HTTP "deflate" is the zlib format, but some clients send raw deflate: try both.
    for wbits in ((_GZIP_WBITS,) if coding != "deflate" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)):
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, MAX_DECODED_BYTES)
        except zlib.error:
            continue
        # Whole: the stream ended with no output waiting past the bound, and nothing follows
        # it (a second gzip member would be read by the upstream, not by us).
        return out if d.eof and not d.unconsumed_tail and not d.unused_data else None
    return None
