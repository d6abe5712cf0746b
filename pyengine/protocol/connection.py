"""One shim connection: an asyncio Protocol that turns request frames into reply frames."""

import asyncio
import logging
import time
from collections import deque
from types import CoroutineType

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

    The handler is synchronous: the engine answers almost every frame without awaiting, and no
    per-request task is created on that path. A frame whose answer needs the state store (a
    strict rule in fleet mode) is answered with a coroutine instead: it runs as a task, and
    replies still leave in request order (`_queue`: the answers waiting behind it).
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
        # Answers (frame bytes, or tasks that will give them) behind an unfinished task, in
        # request order; empty while every answer so far went out at once.
        self._queue: deque = deque()
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
        if len(bodies) == 1:
            out = answer(bodies[0])
            if out.__class__ is bytes and not self._queue:
                self.transport.write(out)
                return
            self._queue.append(out)
        else:
            outs = list(map(answer, bodies))
            if not self._queue and all(o.__class__ is bytes for o in outs):
                self.transport.write(b"".join(outs))
                return
            self._queue.extend(outs)
        self._flush()

    def _answer(self, body):
        """The reply frame, or a task that gives it (the handler answered with a coroutine)."""
        try:
            reply = self._handle(decode_request(body))
            if reply.__class__ is CoroutineType:
                task = asyncio.ensure_future(self._encoded(reply))
                task.add_done_callback(self._flush)
                return task
            return encode_frame(reply)
        except ProtocolError as exc:
            return encode_frame(ErrorReply(code=exc.code, message=exc.message))
        except Exception:  # noqa: BLE001 - last resort: the handler answers its own errors
            return _last_resort(self._limits)

    async def _encoded(self, reply) -> bytes:
        try:
            return encode_frame(await reply)
        except Exception:  # noqa: BLE001 - as in _answer
            return _last_resort(self._limits)

    def _flush(self, _task=None) -> None:
        """Write every answer at the head of the queue that is ready, in order, in one write."""
        queue = self._queue
        ready = []
        while queue:
            head = queue[0]
            if head.__class__ is not bytes:
                if not head.done():
                    break
                head = b"" if head.cancelled() else head.result()
            queue.popleft()
            ready.append(head)
        if ready and self.transport is not None:
            self.transport.write(b"".join(ready))
        if not queue and self._closing and self.transport is not None:
            self.transport.close()  # shutdown waited for these answers

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
        """Stop reading; close once every frame read has been answered (at once, or by `_flush`
        when its last awaited answer is ready)."""
        if self.transport is not None and not self._closing:
            self._closing = True
            if self._queue:
                self.transport.pause_reading()
            else:
                self.transport.close()


def _last_resort(limits) -> bytes:
    """What failed outside the handler (a Decide that raises is answered engine_error by
    Engine.decide: a rejection, never the fail mode), e.g. encoding a reply: engine_error,
    counted in fairvisor_engine_errors_total{where="frame"}, and the connection stays open;
    the next frame is answered as usual."""
    metrics = limits.metrics if limits is not None else None
    if metrics is not None:
        metrics.engine_errors.inc(("frame",))
    now_s = time.monotonic()
    if now_s >= _next_log_s[0]:
        _next_log_s[0] = now_s + LOG_INTERVAL_S
        log.error("engine error while answering a frame", exc_info=True)
    return encode_frame(ErrorReply(code="engine_error", message="engine error"))
