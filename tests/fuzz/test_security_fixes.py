"""Regressions for the security review (docs/security.md): socket and config file modes."""

import asyncio
import os
import stat

from pyengine.cli.nginx_conf import write
from pyengine.config import from_env
from pyengine.server import SOCKET_MODE, EngineServer

from .engines import keyed_engine


def test_socket_is_created_owner_only_by_bind_even_under_umask_000(tmp_path, monkeypatch):
    path = str(tmp_path / "engine.sock")
    # Without the chmod, only bind() decides the mode: it is owner-only (the group and the final
    # mode come after the chown, pyengine/socket_access.py), so no window is wider than the end.
    monkeypatch.setattr("pyengine.server.os.chmod", lambda *a: None)
    old = os.umask(0)
    try:
        async def main():
            server = EngineServer(keyed_engine(), path)
            await server.start()
            try:
                return stat.S_IMODE(os.stat(path).st_mode), os.umask(0)
            finally:
                await server.shutdown()

        mode, umask_after = asyncio.run(main())
    finally:
        os.umask(old)
    assert mode == 0o600 and not mode & (stat.S_IRWXG | stat.S_IRWXO)
    assert umask_after == 0  # the process umask is restored after bind


def test_socket_ends_at_its_mode_under_umask_000(tmp_path):
    path = str(tmp_path / "engine.sock")
    old = os.umask(0)
    try:
        async def main():
            server = EngineServer(keyed_engine(), path)
            await server.start()
            try:
                return stat.S_IMODE(os.stat(path).st_mode)
            finally:
                await server.shutdown()

        mode = asyncio.run(main())
    finally:
        os.umask(old)
    assert mode == SOCKET_MODE and not mode & stat.S_IWOTH


def test_nginx_conf_with_upstream_secrets_is_owner_only(tmp_path):
    settings = from_env({"FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_BACKEND_URL": "http://127.0.0.1:9",
                         "FAIRVISOR_UPSTREAM_HEADER_Authorization": "Bearer sk-secret",
                         "FAIRVISOR_STATE_DIR": str(tmp_path)})
    runtime = tmp_path / "nginx"
    runtime.mkdir()
    (runtime / "nginx.conf").write_text("old")
    os.chmod(runtime / "nginx.conf", 0o644)  # as written by an older version
    conf = write(settings, runtime)
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    assert "sk-secret" in conf.read_text()
