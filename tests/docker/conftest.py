"""What the docker tests share: the daemon (the running one, or one started here and stopped by its PID) and the image."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time

import pytest

from tests.integration.conftest import wait_until

REPO = pathlib.Path(__file__).resolve().parents[2]
TAG = os.environ.get("FAIRVISOR_TEST_IMAGE", "fairvisor:test")  # another tag: no clash with a parallel run
BUILD_TIMEOUT_S = 1200.0  # a cold machine: debootstrap, then apt and pip inside the build


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


@pytest.fixture(scope="session")
def image(docker_daemon):
    """The project's image, built for real by docker/build-local.sh (local Debian base)."""
    started = time.monotonic()
    build = subprocess.run([str(REPO / "docker" / "build-local.sh"), TAG], capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    print(f"\nimage {TAG} built in {time.monotonic() - started:.0f} s")
    return TAG
