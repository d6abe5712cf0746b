"""Bounds on what shim connections may hold: a stalled partial frame, an idle connection, and
the partial-frame bytes of all connections together.

Why: a peer on the socket that sends the start of a large frame and stops holds up to
max_frame_bytes (16 MiB) of engine memory for as long as it keeps the connection; six of them
took the engine from 29 to 127 MiB. The shim writes each frame whole from memory, so a frame
still incomplete seconds after its first byte is a stalled or hostile peer, never a slow one.
Closing an idle shim connection is harmless: a pooled one leaves nginx's pool when closed,
and the pipe's send on it fails without delivering anything, so its batch goes again on a new
connection (lua-shim/fairvisor/pipe.lua, `deliver`).
"""

import logging
import time

log = logging.getLogger("fairvisor.connection")

PARTIAL_FRAME_TIMEOUT_S = 5.0  # a frame not complete this long after its first byte is closed
IDLE_TIMEOUT_S = 600.0  # a connection that sent no byte this long is closed
PENDING_BUDGET_BYTES = 32 * 1024 * 1024  # partial-frame bytes of all connections together
# The shim's legitimate worst case is one 1 MiB batch in flight per worker plus one frame per
# pooled connection (docs/protocol.md): far below the budget.


class ConnectionLimits:
    """Shared by the connections of one server. `clock` returns seconds (monotonic)."""

    def __init__(self, partial_frame_timeout_s: float = PARTIAL_FRAME_TIMEOUT_S,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, pending_budget_bytes: int = PENDING_BUDGET_BYTES,
                 metrics=None, clock=time.monotonic):
        self.partial_frame_timeout_s = partial_frame_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.pending_budget_bytes = pending_budget_bytes
        self.metrics = metrics
        self.clock = clock
        self.pending_bytes = 0  # partial-frame bytes held by all connections now

    @property
    def reap_interval_s(self) -> float:
        """How often the server calls reap: a stalled frame is closed within 1.25 timeouts."""
        return min(1.0, self.partial_frame_timeout_s / 4)

    def account(self, conn, delta_bytes: int) -> None:
        """A connection's partial-frame bytes (declared, see FrameBuffer.pending_bytes) changed by
        `delta_bytes`. Over the budget, the connections announcing the most are closed until the
        rest fit; among equals, the one that has received the least goes first (dropping it frees
        least and costs its peer least), so a frame is refused before its bytes are buffered."""
        self.pending_bytes += delta_bytes
        if delta_bytes > 0 and self.pending_bytes > self.pending_budget_bytes:
            open_ = [c for c in conn.peers() if c.pending_bytes]
            open_.sort(key=lambda c: (-c.pending_bytes, c.buffered_bytes))
            for c in open_:
                if self.pending_bytes <= self.pending_budget_bytes:
                    break
                self.close(c, "buffer_budget")

    def reap(self, connections, now_s: float | None = None) -> int:
        """Close the connections whose partial frame stalled or which went idle; returns how many."""
        now_s = self.clock() if now_s is None else now_s
        closed = 0
        for conn in list(connections):
            since = conn.partial_since_s
            if since is not None and now_s - since >= self.partial_frame_timeout_s:
                self.close(conn, "partial_frame")
            elif now_s - conn.last_read_s >= self.idle_timeout_s:
                self.close(conn, "idle")
            else:
                continue
            closed += 1
        return closed

    def close(self, conn, reason: str) -> None:
        if conn.closed:
            return
        log.warning("closing shim connection (%s): %d bytes of a partial frame pending", reason,
                    conn.pending_bytes)
        conn.close()
        if self.metrics is not None:
            self.metrics.shim_connections_closed.inc((reason,))
