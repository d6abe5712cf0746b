"""The docker daemon the docker tests share: the running one, or one started here and stopped by its PID."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.integration.conftest import wait_until


def docker(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


def daemon_up() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory):
    """The running daemon, or one started here (no bridge, no iptables) and stopped by its PID."""
    assert shutil.which("docker"), "the docker CLI is missing: run docker/install-tools.sh first"
    if daemon_up():
        yield
        return
    assert shutil.which("dockerd"), "no docker daemon is running and dockerd is not installed"
    log = open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "wb")
    proc = subprocess.Popen(["dockerd", "--iptables=false", "--bridge=none"], stdout=log, stderr=log)
    wait_until(lambda: proc.poll() is None and daemon_up(), 60.0, "dockerd to answer", interval_s=0.5)
    yield
    proc.terminate()
    proc.wait(timeout=60)
    log.close()
