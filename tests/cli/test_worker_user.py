"""cli/worker_user.py: run as root, nginx's workers get an unprivileged account, and the engine socket its group."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from pyengine.cli import worker_user
from pyengine.cli.nginx_conf import RenderError, render
from pyengine.config import from_env


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)


def _group_of(user: str) -> str:
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def test_root_gets_www_data_workers_and_the_socket_gets_their_group(as_root, tmp_path):
    settings = from_env({"FAIRVISOR_STATE_DIR": str(tmp_path)})
    assert worker_user.root_workers(settings) == ("www-data", _group_of("www-data"))
    assert f"user www-data {_group_of('www-data')};" in render(settings, tmp_path / "nginx")
    env: dict = {}
    worker_user.run_env(settings, env)
    assert env == {"FAIRVISOR_NGINX_USER": "www-data", "FAIRVISOR_ENGINE_SOCKET_GROUP": _group_of("www-data")}


def test_an_explicit_socket_group_and_worker_user_win(as_root, tmp_path):
    settings = from_env({"FAIRVISOR_STATE_DIR": str(tmp_path), "FAIRVISOR_NGINX_USER": "nobody",
                         "FAIRVISOR_ENGINE_SOCKET_GROUP": "adm"})
    env: dict = {}
    worker_user.run_env(settings, env)
    assert env == {"FAIRVISOR_NGINX_USER": "nobody", "FAIRVISOR_ENGINE_SOCKET_GROUP": "adm"}
    assert f"user nobody {_group_of('nobody')};" in render(settings, tmp_path / "nginx")


def test_root_workers_are_refused_by_name(as_root, tmp_path):
    settings = from_env({"FAIRVISOR_STATE_DIR": str(tmp_path), "FAIRVISOR_NGINX_USER": "root"})
    with pytest.raises(RenderError, match="^FAIRVISOR_NGINX_USER: nginx workers never run as root; "
                                          "name an unprivileged user$"):
        render(settings, tmp_path / "nginx")
    unknown = from_env({"FAIRVISOR_STATE_DIR": str(tmp_path), "FAIRVISOR_NGINX_USER": "no-such-user-x"})
    with pytest.raises(RenderError, match="^FAIRVISOR_NGINX_USER: no user 'no-such-user-x' on this machine$"):
        render(unknown, tmp_path / "nginx")


def test_not_root_keeps_the_workers_as_the_caller(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    settings = from_env({"FAIRVISOR_STATE_DIR": str(tmp_path)})
    assert worker_user.root_workers(settings) is None
    assert "\nuser " not in render(settings, tmp_path / "nginx")
    env: dict = {}
    worker_user.run_env(settings, env)
    assert env == {}
