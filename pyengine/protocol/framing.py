"""Length-prefixed msgpack frames: a 4-byte big-endian body length, then the body."""

import struct

import msgspec

from ..errors import ProtocolError
from .messages import Request, Response

HEADER_BYTES = 4
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

_encoder = msgspec.msgpack.Encoder()
_pack_length = struct.Struct(">I").pack
_request_decoder = msgspec.msgpack.Decoder(Request)
_response_decoder = msgspec.msgpack.Decoder(Response)


def encode_frame(msg) -> bytes:
    """One message as a complete frame (prefix + body).

    Encode-then-concatenate measured 2.6x faster here than encode_into a bytearray with a
    reserved prefix (0.8 vs 2.1 us for a typical Verdict): the bytearray path copies twice."""
    body = _encoder.encode(msg)
    return _pack_length(len(body)) + body


def decode_request(body) -> Request:
    """Decode one frame body sent by the shim; any defect becomes a ProtocolError."""
    try:
        return _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ProtocolError("bad_message", str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # a str field that is not UTF-8
        raise ProtocolError("bad_frame", str(exc)) from None


def decode_response(body) -> Response:
    """Decode one frame body sent by the engine (used by Python clients and tests)."""
    try:
        return _response_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_frame", str(exc)) from None


class FrameBuffer:
    """Accumulates stream bytes and yields complete frame bodies.

    Invariant: `_buf` never holds more than one partial frame plus what the last read added.
    A declared length over `max_frame_bytes` raises ProtocolError("frame_too_large"): the
    stream cannot be resynchronised after that, so the caller closes the connection.
    """

    __slots__ = ("_buf", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self._buf = bytearray()
        self.max_frame_bytes = max_frame_bytes

    def feed(self, data: bytes) -> list:
        """Add bytes; return the bodies of all frames now complete (memoryviews of the read).

        No frame is copied: under load one read carries a dozen frames or more. Only a
        partial frame at the end is kept, and joined with the next read."""
        buf = self._buf
        if buf:
            buf.extend(data)
            if len(buf) >= HEADER_BYTES:
                size = int.from_bytes(buf[:HEADER_BYTES], "big")
                if HEADER_BYTES + size > len(buf) and size <= self.max_frame_bytes:
                    return []  # still partial: copied once, when it is whole
            data = bytes(buf)
            buf.clear()
        n = len(data)
        frames = []
        pos = 0
        view = memoryview(data)
        while n - pos >= HEADER_BYTES:
            size = int.from_bytes(data[pos:pos + HEADER_BYTES], "big")
            if size > self.max_frame_bytes:
                raise ProtocolError("frame_too_large", f"frame of {size} bytes > {self.max_frame_bytes}")
            start = pos + HEADER_BYTES
            if n - start < size:
                break
            frames.append(view[start:start + size])
            pos = start + size
        if pos < n:
            buf.extend(view[pos:])
        return frames

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the partial frame received so far."""
        return len(self._buf)

    @property
    def pending_bytes(self) -> int:
        """What the partial frame will hold once complete: its declared length as soon as its
        header is in, so a peer is counted for the memory it announced before it sends it."""
        buf = self._buf
        if len(buf) < HEADER_BYTES:
            return len(buf)
        return max(len(buf), HEADER_BYTES + int.from_bytes(buf[:HEADER_BYTES], "big"))
