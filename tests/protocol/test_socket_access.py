"""pyengine/socket_access.py: the socket's group and mode, and whether a worker user may connect."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import socket
import stat

import pytest

from pyengine.server import EngineServer
from pyengine.socket_access import (SocketAccessError, apply, group_id, system_nginx_user, unreachable_reason,
                                    unreadable_reason, who_may_connect)
from tests.fuzz.engines import keyed_engine
from tests.integration.conftest import reachable_dir

NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid).gr_name


def _bound(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s


def test_group_names_and_gids_resolve_and_unknown_ones_are_named():
    assert group_id(NOBODY_GROUP) == NOBODY.pw_gid and group_id(str(NOBODY.pw_gid)) == NOBODY.pw_gid
    with pytest.raises(SocketAccessError, match="^FAIRVISOR_ENGINE_SOCKET_GROUP: no group 'no-such-grp' "
                                                "on this machine$"):
        group_id("no-such-grp")


def test_a_worker_user_is_told_which_directory_or_mode_stops_it():
    d = reachable_dir("fv-access-unit-") / "run"  # pytest's tmp dirs are 0700: nobody could not enter
    d.mkdir(mode=0o711)
    path = d / "engine.sock"
    with _bound(path):
        apply(str(path), 0o600, None)
        owner, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        assert unreachable_reason(str(path), "nobody") == (
            f"user nobody may not write to {path} (mode 0600, owner {owner}:{group})")
        apply(str(path), 0o660, NOBODY_GROUP)  # the fix: the workers' group
        assert unreachable_reason(str(path), "nobody") is None
        assert who_may_connect(str(path)).startswith(f"nginx workers must run as user {owner} or a member of "
                                                     f"group {NOBODY_GROUP}")
        os.chmod(d, 0o700)
        assert unreachable_reason(str(path), "nobody") == f"user nobody may not enter {d}"
        assert unreachable_reason(str(path), "root") is None
        assert unreadable_reason(str(d), "nobody") == f"user nobody may not read {d} (mode 0700, owner {owner}:{group})"
        os.chmod(d, 0o755)
        assert unreadable_reason(str(d), "nobody") is None


def test_the_engine_socket_gets_the_configured_group_and_mode(tmp_path):
    path = str(tmp_path / "engine.sock")

    async def main(**access):
        server = EngineServer(keyed_engine(), path, **access)
        await server.start()
        try:
            st = os.stat(path)
            return st.st_gid, stat.S_IMODE(st.st_mode)
        finally:
            await server.shutdown()

    assert asyncio.run(main(socket_mode=0o660, socket_group=NOBODY_GROUP)) == (NOBODY.pw_gid, 0o660)
    assert asyncio.run(main(socket_mode=0o600, socket_group=None))[1] == 0o600
    with pytest.raises(SocketAccessError, match="no group 'no-such-grp'"):
        asyncio.run(main(socket_group="no-such-grp"))


def test_the_system_nginx_user_line_is_read(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("# comment\nuser www-data;\nworker_processes auto;\n")
    assert system_nginx_user(str(conf)) == "www-data"
    conf.write_text("worker_processes auto;\n")
    assert system_nginx_user(str(conf)) is None
    assert system_nginx_user(str(tmp_path / "absent.conf")) is None
