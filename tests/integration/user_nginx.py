"""A user-managed nginx for integration tests: wraps an http {} body in a main config, runs it by PID."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess

import pytest

from pyengine.cli.run_cmd import engine_answers

from .conftest import FAIRVISOR, Response, token_bucket_policy, wait_until

REPO = pathlib.Path(__file__).resolve().parents[2]
LUA_MODULES = ("load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
               "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n")


def _user_line() -> str:
    # As root, workers would run as "nobody"; keep them as this user (the engine's socket is 0660).
    if os.geteuid() != 0:
        return ""
    import grp
    import pwd
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"


class UserNginx:
    """nginx -p DIR with `http_body` inside http {}; main_extra goes before it (load_module ...)."""

    def __init__(self, tmp: pathlib.Path, http_body: str, port: int, main_extra: str = "",
                 user_line: str | None = None):
        self.dir, self.port = tmp, port
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        temp_paths = "".join(f"    {sub}_temp_path {tmp}/tmp/{sub};\n"
                             for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(
            f"{main_extra}{_user_line() if user_line is None else user_line}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
            f"error_log {tmp}/error.log notice;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n    access_log off;\n{temp_paths}{http_body}\n}}\n")
        self.proc = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(self.conf), "-e", str(tmp / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._listening, 15.0, f"the user nginx on port {port}")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited {self.proc.returncode}: {self.proc.stderr.read().decode()}\n"
                                 f"{self.error_log()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read(), 0.0)
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()


def example(name: str, replacements: dict[str, str]) -> str:
    """An examples/nginx/ file with its documented addresses replaced by the test's own."""
    text = (REPO / "examples" / "nginx" / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"{name} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def engine(tmp_path):
    """`fairvisor engine` alone on a socket in tmp_path (2 requests, then 1 per 10 s, per X-Api-Key);
    yields (process, socket path) and stops it by its PID."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(token_bucket_policy("header:x-api-key", tps=0.1, burst=2, rule="key-rps")))
    sock = tmp_path / "engine.sock"
    log = open(tmp_path / "engine.log", "wb")
    proc = subprocess.Popen(FAIRVISOR + ["engine", "--config", str(policy), "--engine-socket", str(sock),
                                         "--state-dir", str(tmp_path / "state")], stdout=log, stderr=log)
    wait_until(lambda: proc.poll() is None and engine_answers(str(sock)), 20.0, "the engine socket")
    yield proc, sock
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    log.close()
