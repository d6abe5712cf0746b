"""`fairvisor run` refuses what cannot work before it starts anything: the reason on stderr, exit 1."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import pwd
import socket
import stat
import subprocess

import pytest

from .conftest import FAIRVISOR, free_port, wait_until

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0  # a refusal comes before the engine or nginx start: well under a second here


def _run(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
    return subprocess.run(FAIRVISOR + ["run", "--state-dir", str(tmp_path / "state"), *flags],
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def test_a_missing_config_file_exits_1_naming_it(tmp_path):
    missing = tmp_path / "typo.json"
    out = _run(tmp_path, "--config", str(missing), "--listen", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1, out.stderr
    assert f"refusing to start: --config {missing}: cannot read: {os.strerror(errno.ENOENT)}" in out.stderr
    assert not (tmp_path / "state" / "nginx" / "nginx.conf").exists()  # nothing was started or written


def test_an_invalid_config_exits_1_with_every_error_validate_reports(tmp_path):
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps({"version": 1, "policies": [{"id": "p"}], "extra": True}))
    validate = subprocess.run(FAIRVISOR + ["validate", str(bad)], capture_output=True, text=True)
    assert validate.returncode == 1 and validate.stderr.strip()
    out = _run(tmp_path, "--config", str(bad), "--listen", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    for line in validate.stderr.strip().splitlines():  # the same errors, with their JSON paths
        assert line in out.stderr
    assert f"--config {bad} is not a valid policy bundle" in out.stderr
    assert not (tmp_path / "state" / "nginx" / "nginx.conf").exists()


@pytest.mark.parametrize("which", ["--listen", "--admin-listen"])
def test_a_taken_port_is_named_by_the_cli(tmp_path, which):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        other = f"127.0.0.1:{free_port()}"
        flags = {"--listen": other, "--admin-listen": other, which: taken}
        out = _run(tmp_path, *[x for kv in flags.items() for x in kv])
    assert out.returncode == 1, out.stderr
    var = "FAIRVISOR_LISTEN" if which == "--listen" else "FAIRVISOR_ADMIN_LISTEN"
    assert f"{var} {taken}: cannot listen: {os.strerror(errno.EADDRINUSE)}" in out.stderr, out.stderr
    assert not (tmp_path / "state" / "engine.sock").exists()  # no engine was started


def _workers_of(master_pid: int) -> list[int]:
    """uids of the nginx workers: the children of the master (from /proc)."""
    uids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = (pathlib.Path("/proc") / entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["PPid"]) == master_pid:
            uids.append(int(fields["Uid"].split()[1]))  # the effective uid
    return uids


def test_run_as_root_never_runs_nginx_workers_as_root(start_edge):  # as root, like CI
    edge = start_edge()
    www = pwd.getpwnam("www-data")
    master = edge.pid_of("nginx.pid")
    # A child seen in the instant between fork and setuid is still root: a root worker that
    # stays root is the defect, so the set must settle on www-data within the deadline.
    wait_until(lambda: set(_workers_of(master)) == {www.pw_uid}, 5.0, "every nginx worker running as www-data")
    sock = os.stat(edge.state_dir / "engine.sock")
    assert sock.st_gid == www.pw_gid and stat.S_IMODE(sock.st_mode) == 0o660
    r = edge.decide()
    assert r.status == 200 and "X-Fairvisor-Degraded" not in r.headers  # and they reach the engine
    assert "nginx workers (user www-data) cannot open" not in edge.log()


def test_run_as_root_refuses_a_state_dir_the_workers_cannot_enter(tmp_path):
    # pytest's tmp dirs are 0700 root: www-data may not enter them.
    out = _run(tmp_path, "--listen", f"127.0.0.1:{free_port()}", "--admin-listen", "off")
    assert out.returncode == 1, out.stderr
    blocked = next(p for p in [*reversed(tmp_path.parents), tmp_path] if not os.stat(p).st_mode & 0o001)
    assert (f"refusing to start: nginx workers run as www-data (never root), and user www-data may not "
            f"enter {blocked}") in out.stderr, out.stderr
    assert "nginx stopped" not in out.stderr  # nginx was never started
