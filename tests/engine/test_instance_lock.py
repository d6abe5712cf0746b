"""pyengine/instance_lock.py: one owner per lock file, live vs stale sockets, and unlinking only our own socket."""

from __future__ import annotations

import os
import socket

import pytest

from pyengine.instance_lock import InstanceBusy, SocketIdentity, hold, live_owner


def test_a_second_holder_is_refused_with_the_owners_pid_until_the_first_releases(tmp_path):
    path = str(tmp_path / "run.lock")
    first = hold(path, "state dir X")
    with pytest.raises(InstanceBusy) as exc:
        hold(path, "state dir X")
    assert str(exc.value) == f"state dir X is in use by another live process (pid {os.getpid()}; lock {path})"
    first.release()
    hold(path, "state dir X").release()  # free again, and the file was never deleted
    assert os.path.exists(path)


def test_live_stale_absent_and_foreign_socket_paths(tmp_path):
    path = str(tmp_path / "engine.sock")
    assert live_owner(path) is None  # absent
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    assert live_owner(path) is None  # nobody listens: removable
    os.unlink(path)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        assert live_owner(path) == f"a live process (pid {os.getpid()}) listens on {path}"
    os.unlink(path)
    (tmp_path / "engine.sock").write_text("not a socket")
    assert live_owner(path) == f"{path} exists and is not a socket"


def test_socket_identity_unlinks_only_its_own_socket(tmp_path):
    path = str(tmp_path / "engine.sock")
    ours = socket.socket(socket.AF_UNIX)
    ours.bind(path)
    identity = SocketIdentity(path)
    assert identity.state() == "ours"
    os.unlink(path)
    assert identity.state() == "gone" and identity.unlink_if_ours() is False
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)
    assert identity.state() == "replaced"
    assert identity.unlink_if_ours() is False and os.path.exists(path)  # another process's: left alone
    ours.close()
    other.close()
    assert SocketIdentity(path).unlink_if_ours() is True and not os.path.exists(path)
