"""No silent fail-open at setup: nginx workers that may not open the engine socket are named as the cause."""

from __future__ import annotations

import grp
import http.client
import json
import pathlib
import pwd
import shutil
import signal
import subprocess
import tempfile

import pytest

from pyengine.cli.run_cmd import engine_answers

from .conftest import FAIRVISOR, Response, free_port, wait_until
from .user_nginx import LUA_MODULES, REPO, UserNginx

pytestmark = pytest.mark.integration  # as root (CI): the workers run as another user

WORKER = "nobody"
ASK = {"X-Original-Method": "GET", "X-Original-URI": "/api/items", "X-Forwarded-For": "203.0.113.9"}
SERVER = """
    server {{
        listen 127.0.0.1:{port};
        location = /v1/decision {{
            default_type "";
            content_by_lua_block {{ require("fairvisor.shim").decision() }}
        }}
        location = /readyz {{ content_by_lua_block {{ require("fairvisor.shim").admin("health") }} }}
        location = /metrics {{ content_by_lua_block {{ require("fairvisor.shim").admin("metrics") }} }}
    }}
"""
ADMIN_SERVER = """
    server {{
        listen 127.0.0.1:{admin_port};
        include {admin_conf};
    }}
"""


@pytest.fixture
def base():
    """A dir the workers may enter (pytest's own tmp dirs are 0700 root): /tmp/fv-access-*, 0711."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="fv-access-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Engine:
    def __init__(self, base: pathlib.Path, *flags: str):
        self.sock = base / "engine.sock"
        self.log_path = base / f"engine-{len(list(base.glob('engine-*.log')))}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(FAIRVISOR + ["engine", "--engine-socket", str(self.sock), "--state-dir",
                                                  str(base / "state"), "--nginx-user", WORKER, *flags],
                                     stdout=self._log, stderr=self._log)
        wait_until(lambda: self.proc.poll() is None and engine_answers(str(self.sock)), 20.0, "the engine socket")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self._log.close()


def _admin(port: int, path: str) -> Response:
    """GET on the admin listener of the same nginx (nginx/fairvisor-admin.conf)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read(), 0.0)
    finally:
        conn.close()


def _status(port: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(FAIRVISOR + ["status", "--admin-url", f"http://127.0.0.1:{port}", *extra],
                          capture_output=True, text=True, timeout=30)


def test_a_socket_the_workers_cannot_open_is_named_in_metrics_status_and_logs(base):
    worker_group = grp.getgrgid(pwd.getpwnam(WORKER).pw_gid).gr_name
    engine = Engine(base, "--engine-socket-mode", "0600")
    nginx = None
    try:
        # The engine says at start who may connect, and that the workers' user is not among them.
        log = engine.log()
        assert f"socket {engine.sock} (mode 0600): nginx workers must run as user root; yours run as {WORKER}" in log
        assert (f"nginx workers (user {WORKER}) cannot open the engine socket: user {WORKER} may not write to "
                f"{engine.sock} (mode 0600, owner root:root)") in log, log

        include = subprocess.run(FAIRVISOR + ["nginx-include", "--engine-socket", str(engine.sock)],
                                 check=True, capture_output=True, text=True).stdout
        port, admin_port = free_port(), free_port()
        server = SERVER.format(port=port) + ADMIN_SERVER.format(
            admin_port=admin_port, admin_conf=REPO / "nginx" / "fairvisor-admin.conf")
        nginx = UserNginx(base / "site", include + server, port, main_extra=LUA_MODULES,
                          user_line=f"user {WORKER} {worker_group};\n")
        for _ in range(3):
            r = nginx.request("POST", "/v1/decision", headers=ASK)
            assert r.status == 200 and r.headers["X-Fairvisor-Degraded"] == "engine_unavailable"

        # The reason, not only degraded traffic: counted, in /readyz, in status, explained once in error.log.
        metrics = _admin(admin_port, "/metrics")
        assert metrics.status == 503
        assert 'fairvisor_engine_unreachable_total{reason="permission_denied"} 3' in metrics.body.decode()
        ready = _admin(admin_port, "/readyz")
        assert ready.status == 503 and ready.json()["cause"] == "permission_denied"
        status = _status(admin_port, "--json")
        assert status.returncode == 1, status.stdout + status.stderr
        summary = json.loads(status.stdout)
        assert summary["engine_unreachable"] == {"permission_denied": 3}
        assert summary["health"]["cause"] == "permission_denied"
        text = _status(admin_port).stdout
        assert "reason     engine_unavailable (permission_denied)" in text
        assert "nginx      could not reach the engine: permission_denied 3 fail-mode answers" in text
        error_log = (base / "site" / "error.log").read_text()
        assert error_log.count(f"cannot open the engine socket {engine.sock}: permission denied") == 1

        # The fix the message names: the socket's group is the workers'. Decisions come back.
        engine.stop()
        engine = Engine(base, "--engine-socket-group", worker_group)
        assert "cannot open the engine socket" not in engine.log()
        wait_until(lambda: "X-Fairvisor-Degraded" not in nginx.request("POST", "/v1/decision", headers=ASK).headers,
                   10.0, "decisions from the engine")
        metrics = _admin(admin_port, "/metrics")
        assert metrics.status == 200
        body = metrics.body.decode()
        assert "fairvisor_decisions_total" in body  # the engine's own metrics
        # nginx's count since it started stays, beside the engine's, for whoever scrapes later.
        assert 'fairvisor_engine_unreachable_total{reason="permission_denied"} 3' in body
    finally:
        if nginx is not None:
            nginx.stop()
        engine.stop()
