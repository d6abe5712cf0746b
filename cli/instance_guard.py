"""`fairvisor run`'s side of one-owner-per-instance: the state dir's lock, and a watch on its engine's socket."""

from __future__ import annotations

import os

import click

from pyengine.instance_lock import InstanceBusy, Lock, SocketIdentity, hold


def claim_state_dir(state_dir: str) -> Lock:
    """Held for the supervisor's life, before it writes nginx.conf or pid files into the state dir."""
    try:
        return hold(os.path.join(state_dir, "run.lock"), f"state dir {state_dir}")
    except InstanceBusy as exc:
        raise click.ClickException(
            f"another `fairvisor run` owns this instance: {exc}. Give this one its own --state-dir "
            f"(FAIRVISOR_STATE_DIR) and --listen") from None


class SocketWatch:
    """Notices when the engine's socket file stops being the one the engine bound.

    rm of the socket, or another process binding the path, leaves the engine running but
    unreachable (or nginx reaching someone else's engine): the supervisor must not stay silent.
    """

    def __init__(self, path: str):
        self.path = path
        self._identity: SocketIdentity | None = None

    def engine_ready(self) -> None:
        """Call once the engine answered on the path: what is there now is its socket."""
        try:
            self._identity = SocketIdentity(self.path)
        except OSError:
            self._identity = None

    @property
    def watching(self) -> bool:
        return self._identity is not None

    def engine_gone(self) -> None:
        self._identity = None

    def problem(self) -> str | None:
        """"removed" or "replaced" the first time it happens (then forgets until engine_ready)."""
        if self._identity is None:
            return None
        state = self._identity.state()
        if state == "ours":
            return None
        self._identity = None
        return "removed" if state == "gone" else "replaced by another process's socket"
