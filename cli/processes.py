"""The supervisor's children: spawned in their own process group, dying with it, stopped with escalation."""

from __future__ import annotations

import signal
import socket
import subprocess

STOP_TIMEOUT_S = 5.0  # after TERM, before KILL


def engine_answers(path: str, timeout_s: float = 0.5) -> bool:
    """True when the engine's socket answers a Hello with a HelloReply."""
    from pyengine.errors import ProtocolError
    from pyengine.protocol.client import call
    from pyengine.protocol.messages import PROTOCOL_VERSION, Hello, HelloReply

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            return isinstance(call(sock, Hello(protocol_version=PROTOCOL_VERSION)), HelloReply)
    except (OSError, ProtocolError):
        return False


def _die_with_parent() -> None:
    # Children get SIGTERM if the supervisor itself is killed (Linux prctl PR_SET_PDEATHSIG).
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def spawn(argv: list[str], env: dict) -> subprocess.Popen:
    # Own process group: a terminal's Ctrl-C reaches only the supervisor, which stops the
    # children in order (nginx first, then the engines).
    return subprocess.Popen(argv, env=env, process_group=0, preexec_fn=_die_with_parent)


def signal_quietly(proc: subprocess.Popen | None, sig: int) -> None:
    if proc is not None and proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def stop(proc: subprocess.Popen | None, first_signal: int, timeout_s: float) -> None:
    """Signal, wait up to timeout_s, then TERM, then KILL: never leaves the process behind."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait_s in ((first_signal, timeout_s), (signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, None)):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
