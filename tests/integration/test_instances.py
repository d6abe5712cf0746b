"""Two instances never cross-wire: a second owner of a state dir or socket refuses, and a socket is removed only by its owner."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.integration.conftest import FAIRVISOR, Edge, reachable_dir, wait_until

pytestmark = pytest.mark.integration

REFUSE_TIMEOUT_S = 20.0


def _inode(path) -> int:
    return os.stat(path).st_ino


def _served(edge: Edge) -> bool:
    """A decision from the engine, not the fail mode."""
    r = edge.decide()
    return r.status == 200 and "X-Fairvisor-Degraded" not in r.headers


def test_second_run_on_the_same_state_dir_refuses_and_the_first_keeps_serving(start_edge, tmp_path):
    first = start_edge()
    sock = first.state_dir / "engine.sock"
    inode, conf = _inode(sock), (first.runtime_dir / "nginx.conf").read_text()
    (tmp_path / "second").mkdir()
    second = Edge(tmp_path / "second", ["--state-dir", str(first.state_dir)])
    code = second.proc.wait(timeout=REFUSE_TIMEOUT_S)
    log = second.log()
    second.stop()
    assert code != 0, log
    # The reason names the owner (the first supervisor's PID) and the contested path.
    assert f"pid {first.proc.pid}" in log and str(first.state_dir) in log, log  # the path it was given
    # Nothing of the first instance was touched: its socket, its nginx.conf, its answers.
    assert _inode(sock) == inode and (first.runtime_dir / "nginx.conf").read_text() == conf
    assert _served(first)


def test_an_engine_on_a_live_socket_refuses_and_leaves_it_in_place(start_edge, tmp_path):
    first = start_edge()
    sock = first.state_dir / "engine.sock"
    inode = _inode(sock)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
    out = subprocess.run(FAIRVISOR + ["engine", "--engine-socket", str(sock), "--state-dir", str(tmp_path / "other")],
                         capture_output=True, text=True, timeout=REFUSE_TIMEOUT_S, env=env)
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"pid {first.engine_pid()}" in out.stdout and str(sock) in out.stdout, out.stdout
    assert _inode(sock) == inode and _served(first)


def test_a_stale_socket_is_replaced(start_edge):
    # A crashed engine's leftover: a socket file nobody listens on.
    state = reachable_dir("fv-stale-")
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(state / "engine.sock"))
    leftover.close()
    edge = start_edge(flags=["--state-dir", str(state)])
    assert _served(edge)


def test_the_supervisor_restarts_its_engine_when_its_socket_is_removed(start_edge):
    edge = start_edge()
    old_engine = edge.engine_pid()
    os.unlink(edge.state_dir / "engine.sock")
    wait_until(lambda: "was removed" in edge.log(), 10.0, "the supervisor to report the removed socket")
    wait_until(lambda: edge.engine_pid() != old_engine and _served(edge), 20.0, "a new engine on a new socket")
    assert f"pid {old_engine}" in edge.log()


def test_the_supervisor_stops_when_another_process_takes_its_socket(tmp_path):
    (tmp_path / "edge").mkdir()
    edge = Edge(tmp_path / "edge", [])
    foreign = socket.socket(socket.AF_UNIX)
    try:
        edge.wait_ready()
        path = edge.state_dir / "engine.sock"
        # Atomically, so there is no moment without a socket: bind beside it, rename over it.
        foreign.bind(str(path) + ".foreign")
        foreign.listen(8)
        os.rename(str(path) + ".foreign", path)
        foreign_inode = _inode(path)
        code = edge.proc.wait(timeout=30)
        log = edge.log()
        assert code == 1, log
        assert "was replaced" in log, log
        # The new engine named the process now listening there (this test), and left its socket alone.
        assert f"pid {os.getpid()}" in log and os.path.realpath(path) in log, log
        assert _inode(path) == foreign_inode
    finally:
        edge.stop()
        foreign.close()
