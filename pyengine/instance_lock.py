"""One owner per state dir and engine socket: an flock held for the process's life, and a socket removed only by its owner.

Why: two instances started with the same defaults must not share a socket or a state dir.
The second would take over the socket (the first nginx then talks to the wrong engine) and
delete it when it stops (the first edge then fails open on every request).

- `hold(path, what)` takes an exclusive, non-blocking flock on `path` (a small file holding
  the owner's PID) and keeps it until the process exits; the kernel releases it on any death,
  kill -9 included, so a crashed owner never blocks a restart. The file itself is never
  deleted: unlinking a lock file lets a third process lock a new inode beside a live owner.
- `live_owner(socket_path)` is the check behind the lock, for an owner that holds none (an
  older version, another user's engine): a socket that accepts a connection is live, and the
  kernel names its PID (SO_PEERCRED). Only a socket that refuses (nobody listens) is stale.
- `SocketIdentity` remembers the (device, inode) bound, so shutdown unlinks the path only
  while it is still ours, and the supervisor can tell its engine's socket gone or replaced.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct

EXIT_BUSY = 3  # the engine's exit status when another live process owns its socket or state dir


class InstanceBusy(Exception):
    """Another live process owns the resource; the message says which PID and which path."""


class Lock:
    """An exclusive flock held until release() or the process's end."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _pid_in(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


def hold(path: str, what: str) -> Lock:
    """Lock `path` for this process, or raise InstanceBusy naming the owner's PID."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except PermissionError:
        raise InstanceBusy(f"{what}: cannot open its lock file {path} (owned by another user?)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InstanceBusy(f"{what} is in use by another live process (pid {_pid_in(path)}; lock {path})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Lock(path, fd)


def peer_pid(sock: socket.socket) -> int | None:
    """The PID of the process on the other end of a connected Unix socket (Linux SO_PEERCRED)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    pid, _uid, _gid = struct.unpack("3i", creds)
    return pid or None


def live_owner(socket_path: str, timeout_s: float = 0.5) -> str | None:
    """Why `socket_path` must not be replaced (a live listener, or one we may not reach), or None if stale/absent."""
    try:
        if not stat.S_ISSOCK(os.stat(socket_path).st_mode):
            return f"{socket_path} exists and is not a socket"
    except FileNotFoundError:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(socket_path)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return None  # nobody listens: a crashed engine's leftover
            if exc.errno in (errno.EACCES, errno.EPERM):
                return f"{socket_path} belongs to a process this user may not reach"
            return f"{socket_path}: {exc.strerror}"
        pid = peer_pid(sock)
        return f"a live process (pid {pid if pid else 'unknown'}) listens on {socket_path}"


class SocketIdentity:
    """The (device, inode) of a socket file when it was bound: still ours, gone, or replaced."""

    def __init__(self, path: str):
        self.path = path
        st = os.stat(path)
        self._id = (st.st_dev, st.st_ino)

    def state(self) -> str:
        """"ours", "gone" or "replaced"."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "ours"  # cannot tell (e.g. a directory's mode changed): never act on a guess
        return "ours" if (st.st_dev, st.st_ino) == self._id else "replaced"

    def unlink_if_ours(self) -> bool:
        """Remove the path only while it is the socket we bound; never another process's."""
        if self.state() != "ours":
            return False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True
