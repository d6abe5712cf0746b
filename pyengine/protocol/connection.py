"""One shim connection: an asyncio Protocol that turns request frames into reply frames."""

import asyncio
import logging
import time

from ..errors import ProtocolError
from .framing import FrameBuffer, decode_request, encode_frame
from .messages import ErrorReply

log = logging.getLogger("fairvisor.connection")

# Pause reading when this many reply bytes wait in the transport (a shim that stopped
# reading must not make the engine buffer without bound).
WRITE_HIGH_WATER_BYTES = 256 * 1024
LOG_INTERVAL_S = 1.0  # at most one traceback a second from the last-resort handler below
_next_log_s = [0.0]


class FrameStats:
    """Counts shared by every connection of one server: reads that carried frames, and frames."""

    __slots__ = ("reads", "frames")

    def __init__(self):
        self.reads = 0
        self.frames = 0


class ConnectionProtocol(asyncio.Protocol):
    """Per-connection state: the transport, a frame buffer and flow control.

    The handler is synchronous: the engine answers every frame without awaiting, so replies
    go out in request order and no per-request task is created on the hot path.
    """

    def __init__(self, handle, connections: set, max_frame_bytes: int, stats: FrameStats | None = None,
                 limits=None):
        # Shared server state.
        self._handle = handle  # Request -> Response, never raises for a decodable request
        self._connections = connections
        self._stats = stats if stats is not None else FrameStats()
        # Per-connection state.
        self._frames = FrameBuffer(max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self._reading_paused = False
        self._closing = False
        # Held-bytes bounds (pyengine.protocol.limits); None: not tracked (unit tests).
        self._limits = limits
        self.pending_bytes = 0  # partial-frame bytes buffered, as last accounted to the limits
        self.partial_since_s: float | None = None  # when the pending partial frame began
        self.last_read_s = limits.clock() if limits is not None else 0.0

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER_BYTES)
        self._connections.add(self)

    def connection_lost(self, exc) -> None:
        self._connections.discard(self)
        self.transport = None
        self._release()

    def pause_writing(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self._frames.feed(data)
        except ProtocolError as exc:
            # The length prefix is untrustworthy: the stream cannot be resynchronised.
            log.warning("closing shim connection: %s", exc)
            self.transport.write(encode_frame(ErrorReply(code=exc.code, message=exc.message)))
            self.close()
            return
        if self._limits is not None:
            self._track(bool(bodies))
            if self._closing:
                return
        if not bodies:
            return
        stats = self._stats
        stats.reads += 1
        stats.frames += len(bodies)
        # Replies to frames that arrived together leave together: one write (syscall) per read.
        answer = self._answer
        self.transport.write(answer(bodies[0]) if len(bodies) == 1 else b"".join(map(answer, bodies)))

    def _answer(self, body) -> bytes:
        try:
            return encode_frame(self._handle(decode_request(body)))
        except ProtocolError as exc:
            return encode_frame(ErrorReply(code=exc.code, message=exc.message))
        except Exception:  # noqa: BLE001 - last resort: the handler answers its own errors
            # (a Decide that raises is answered engine_error by Engine.decide: a rejection,
            # never the fail mode). What reaches here failed outside it, e.g. encoding a reply;
            # the connection stays open and the next frame is answered as usual.
            now_s = time.monotonic()
            if now_s >= _next_log_s[0]:
                _next_log_s[0] = now_s + LOG_INTERVAL_S
                log.error("engine error while answering a frame", exc_info=True)
            return encode_frame(ErrorReply(code="engine_error", message="engine error"))

    # -- held bytes (pyengine.protocol.limits) -----------------------------------------------

    def _track(self, completed: bool) -> None:
        limits = self._limits
        now_s = self.last_read_s = limits.clock()
        pending = self._frames.pending_bytes
        if not pending:
            self.partial_since_s = None
        elif completed or not self.pending_bytes:
            self.partial_since_s = now_s  # a new frame began in this read
        delta, self.pending_bytes = pending - self.pending_bytes, pending
        if delta:
            limits.account(self, delta)

    def _release(self) -> None:
        """Drop the partial frame now (the transport may take a while to report the close)."""
        if self.pending_bytes and self._limits is not None:
            self._limits.account(self, -self.pending_bytes)
        self.pending_bytes = 0
        self.partial_since_s = None
        self._frames = FrameBuffer(self._frames.max_frame_bytes)

    def peers(self):
        return self._connections

    @property
    def buffered_bytes(self) -> int:
        return self._frames.buffered_bytes

    @property
    def closed(self) -> bool:
        return self._closing or self.transport is None

    def close(self) -> None:
        """Close for a limit: the partial frame is released at once."""
        self.shutdown()
        self._release()

    # -- shutdown ----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop reading; the reply to a frame already answered has been written."""
        if self.transport is not None and not self._closing:
            self._closing = True
            self.transport.close()
