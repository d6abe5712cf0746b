"""The Debian package (`make deb`), installed with apt into a clean Debian 12 container and driven over HTTP."""

from __future__ import annotations

import http.client
import json
import pathlib
import re
import subprocess
import uuid

import pytest

from tests.docker.conftest import docker
from tests.integration.conftest import free_port, wait_until

pytestmark = pytest.mark.docker

REPO = pathlib.Path(__file__).resolve().parents[2]
BASE = "local/debian:bookworm"  # docker/base-image.sh: debootstrap, no registry needed
UNIT = "/lib/systemd/system/fairvisor.service"
APT_TIMEOUT_S = 600.0
# Blocks service starts during apt: nginx's package would start the system nginx on port 80 of
# the host network, and there is no systemd inside the container to start fairvisor.service.
NO_START = "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d"
ASK = {"X-Original-Method": "GET", "X-Original-URI": "/api/items", "X-Forwarded-For": "203.0.113.7"}


def _version() -> str:
    return re.search(r'__version__ = "(.+)"', (REPO / "pyengine" / "__init__.py").read_text())[1]


@pytest.fixture(scope="module")
def deb() -> pathlib.Path:
    """`make deb`, for real: the wheel, the venv from requirements.lock, dpkg-deb."""
    build = subprocess.run(["make", "-s", "deb"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    path = REPO / "dist" / f"fairvisor_{_version()}_{arch}.deb"
    assert build.stdout.strip().splitlines()[-1] == f"dist/{path.name}"
    assert path.is_file()
    return path


class Box:
    """A clean Debian 12 container on the host network, with the .deb's folder mounted read-only.

    --init: an init that reaps, so a process that exits is gone (not a zombie of `sleep`).
    """

    def __init__(self, deb: pathlib.Path):
        self.name = f"fairvisor-deb-{uuid.uuid4().hex[:10]}"
        self.deb = f"/dist/{deb.name}"
        docker("image", "inspect", BASE)  # made by docker/base-image.sh (tests/docker/test_image.py builds it)
        docker("run", "-d", "--init", "--name", self.name, "--network", "host", "-v", f"{deb.parent}:/dist:ro",
               BASE, "sleep", "infinity")

    def sh(self, script: str, user: str | None = None, timeout: float = 60.0, check: bool = True):
        args = ["exec"] + (["-u", user] if user else []) + [self.name, "bash", "-c", script]
        out = docker(*args, timeout=timeout, check=False)
        if check:
            assert out.returncode == 0, f"{script}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def box(docker_daemon, deb):
    subprocess.run([str(REPO / "docker" / "base-image.sh"), BASE], check=True, timeout=1200,
                   capture_output=True)
    b = Box(deb)
    try:
        # Only the .deb is named: apt must pull nginx, the Lua module and python3 by itself.
        # systemd gives the test `systemd-analyze` (procps, for `ps` and the unit's /bin/kill, is a Depends).
        b.sh(f"{NO_START} && apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
             f"apt-get install -y -qq --no-install-recommends {b.deb} >/tmp/apt.log 2>&1 "
             "|| { tail -30 /tmp/apt.log; exit 1; }", timeout=APT_TIMEOUT_S)
        b.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd "
             ">/dev/null 2>&1", timeout=APT_TIMEOUT_S)
        yield b
    finally:
        b.remove()


def _unit(box: Box) -> dict[str, str]:
    text = box.sh(f"cat {UNIT}").stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_apt_pulls_nginx_the_lua_module_and_python(box):
    for pkg in ("nginx", "libnginx-mod-http-lua", "lua-resty-core", "python3", "procps", "fairvisor"):
        status = box.sh(f"dpkg-query -W -f='${{Status}}' {pkg}").stdout
        assert status == "install ok installed", pkg
    conffiles = box.sh("dpkg-query -W -f='${Conffiles}' fairvisor").stdout.split()
    assert "/etc/fairvisor/policy.json" in conffiles and "/etc/default/fairvisor" in conffiles
    assert box.sh("/usr/bin/fairvisor --version").stdout.split() == ["fairvisor", _version()]
    # The package's own venv, from requirements.lock: the locked versions, not Debian's python3-*.
    lock = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", (REPO / "requirements.lock").read_text(), re.M))
    frozen = box.sh("/usr/lib/fairvisor/bin/python3 -c 'import importlib.metadata as m; "
                    "print(m.version(\"msgspec\"), m.version(\"uvloop\"), m.version(\"click\"))'").stdout.split()
    assert frozen == [lock["msgspec"], lock["uvloop"], lock["click"]]
    # The shipped policy passes validate; the service user exists, system and without a shell.
    assert box.sh("/usr/bin/fairvisor validate /etc/fairvisor/policy.json").stdout.startswith("Valid: 1 policy")
    passwd = box.sh("getent passwd fairvisor").stdout.strip().split(":")
    assert int(passwd[2]) < 1000 and passwd[5] == "/var/lib/fairvisor" and passwd[6] == "/usr/sbin/nologin"
    assert box.sh("stat -c '%U:%G %a' /var/lib/fairvisor").stdout.strip() == "fairvisor:fairvisor 750"
    assert box.sh("stat -c '%U:%G %a' /etc/fairvisor/policy.json").stdout.strip() == "root:fairvisor 640"


def test_unit_verifies_and_is_hardened(box):
    out = box.sh(f"systemd-analyze verify {UNIT}", check=False)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr
    unit = _unit(box)
    assert unit["User"] == "fairvisor" and unit["EnvironmentFile"] == "-/etc/default/fairvisor"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                      ("ProtectHome", "yes"), ("ReadWritePaths", "/var/lib/fairvisor"),
                      ("CapabilityBoundingSet", "")):
        assert unit[key] == want, key
    # Everything the unit names exists in the installed package.
    for path in (unit["ExecStart"].split()[0], unit["ExecReload"].split()[0], unit["EnvironmentFile"].lstrip("-")):
        box.sh(f"test -x {path} || test -f {path}")


def _request(port: int, method: str, path: str, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def _answers(port: int) -> bool:
    try:
        return _request(port, "GET", "/readyz")[0] == 200
    except OSError:
        return False


def test_edge_runs_as_the_unit_runs_it(box):
    """ExecStart as User=, with EnvironmentFile's variables: decides, reloads on ExecReload, stops on SIGTERM."""
    unit = _unit(box)
    port, admin_port = free_port(), free_port()
    # The unit's own lines, with both listen addresses moved to free loopback ports of this host.
    start = (f"set -a && . {unit['EnvironmentFile'].lstrip('-')} && set +a && "
             f"export FAIRVISOR_LISTEN=127.0.0.1:{port} FAIRVISOR_ADMIN_LISTEN=127.0.0.1:{admin_port} "
             f"FAIRVISOR_WORKER_PROCESSES=1 && cd / && "
             f"exec setpriv --reuid {unit['User']} --regid {unit['Group']} --init-groups --no-new-privs "
             f"{unit['ExecStart']}")
    box.sh(f"nohup bash -c '{start}' >/tmp/run.log 2>&1 & echo $! >/tmp/run.pid")
    log = lambda: box.sh("cat /tmp/run.log", check=False).stdout  # noqa: E731
    wait_until(lambda: _answers(port), 60.0, "the packaged edge's /readyz")

    statuses = [_request(port, "POST", "/v1/decision", ASK)[0] for _ in range(11)]
    assert statuses == [200] * 10 + [429], log()  # /etc/fairvisor/policy.json: burst 10 per IP
    # Every process of the edge runs as fairvisor, none as root: supervisor, engine, nginx master and workers.
    procs = [line.split(None, 1) for line in box.sh("ps -eo user:20,args --no-headers").stdout.splitlines()
             if "fairvisor" in line or "nginx" in line or "pyengine" in line]
    edge = [p for p in procs if not p[1].startswith(("sleep", "bash", "ps "))]
    assert {user for user, _ in edge} == {"fairvisor"}, procs
    assert any("nginx: worker process" in args for _, args in edge)
    assert any("-m pyengine" in args for _, args in edge)

    # ExecReload with $MAINPID: the policy reloads without a restart (counted ok, nothing refused).
    main_pid = box.sh("cat /tmp/run.pid").stdout.strip()
    box.sh(unit["ExecReload"].replace("$MAINPID", main_pid))
    status = lambda: json.loads(box.sh(  # noqa: E731
        f"set -a && . /etc/default/fairvisor && /usr/bin/fairvisor status --json "
        f"--admin-url http://127.0.0.1:{admin_port}", user="fairvisor",
        check=False).stdout or "{}")
    wait_until(lambda: status().get("counters", {}).get("reloads_ok", 0) >= 1, 30.0, "the reload, in status")
    assert status()["counters"]["reloads_refused"] == 0
    assert _request(port, "POST", "/v1/decision", ASK)[0] in (200, 429)  # still deciding, same processes
    assert box.sh("cat /tmp/run.pid").stdout.strip() == main_pid and "restarting" not in log()

    # What systemd's stop sends (KillMode=mixed: SIGTERM to the main process): a clean exit 0.
    box.sh(f"kill -TERM {main_pid}")
    wait_until(lambda: box.sh(f"kill -0 {main_pid}", check=False).returncode != 0, 30.0, "fairvisor run to exit")
    assert "engine stopped (status 0)" in log() and "nginx stopped (status 0)" in log(), log()
    assert box.sh("test -e /var/lib/fairvisor/engine.sock", check=False).returncode != 0
