"""Fixtures that run the real edge (`fairvisor run`: engine + nginx) and a tiny upstream on loopback."""

from __future__ import annotations

import atexit
import base64
import http.client
import http.server
import json
import os
import pathlib
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.support.redis_servers import redis_cluster, redis_server, redis_unix_server  # noqa: F401 (fixtures)

FAIRVISOR = [str(pathlib.Path(sys.executable).with_name("fairvisor"))]  # the installed console script
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def reachable_dir(prefix: str) -> pathlib.Path:
    """A fresh dir that nginx's workers may enter: under /tmp, mode 0711, removed at exit.

    Run as root, `fairvisor run` starts its workers as www-data (never root), and pytest's own
    tmp dirs are 0700 root: an edge's state dir (socket, nginx temp files) and anything the
    workers read (a venv's shim) live here instead.
    """
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    atexit.register(shutil.rmtree, path, True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.02):
    """Polls predicate until it returns a truthy value; fails the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def unsigned_jwt(claims: dict) -> str:
    """A JWT with alg "none": the engine keys limits on claims, it does not verify them."""
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def token_bucket_policy(limit_key: str, tps: float, burst: float, policy_id: str = "seed",
                        rule: str = "per-key", version: int = 1) -> dict:
    return {
        "bundle_version": version,
        "policies": [{
            "id": policy_id,
            "spec": {
                "selector": {"pathPrefix": "/"},
                "mode": "enforce",
                "rules": [{
                    "name": rule,
                    "limit_keys": [limit_key],
                    "algorithm": "token_bucket",
                    "algorithm_config": {"tokens_per_second": tps, "burst": burst},
                }],
            },
        }],
    }


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes, elapsed_s: float):
        self.status, self.headers, self.body, self.elapsed_s = status, headers, body, elapsed_s

    def json(self):
        return json.loads(self.body)


class Edge:
    """One `fairvisor run` process tree; every process is ended by its own PID."""

    def __init__(self, tmp: pathlib.Path, flags: list[str], env: dict | None = None, workers: int = 2,
                 command: list[str] = FAIRVISOR, cwd: pathlib.Path | None = None):
        self.port = free_port()
        # Every edge gets an admin listener of its own (the default 127.0.0.1:9090 would collide).
        self.admin_port = free_port()
        merged = {**os.environ, **(env or {})}
        self.admin_token = merged.get("FAIRVISOR_ADMIN_TOKEN")
        if "--admin-token" in flags:
            self.admin_token = flags[flags.index("--admin-token") + 1]
        admin_flags = ["--admin-listen", f"127.0.0.1:{self.admin_port}"]
        if "--admin-listen" in flags:  # the test chose: its port, or off
            admin_flags = []
            port = flags[flags.index("--admin-listen") + 1].rpartition(":")[2]
            self.admin_port = int(port) if port.isdigit() else None
        # tmp/state names the state dir for the tests; the edge is given its real path, one the
        # workers may enter (reachable_dir).
        self.state_dir = tmp / "state"
        real_state = reachable_dir("fv-edge-") / "state"
        real_state.mkdir()
        self.state_dir.symlink_to(real_state)
        self.runtime_dir = self.state_dir / "nginx"
        self.log_path = tmp / "fairvisor-run.log"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
        child_env.update(env or {})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            command + ["run", "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(real_state),
                         "--worker-processes", str(workers), *admin_flags, *flags],
            stdout=self._log, stderr=subprocess.STDOUT, env=child_env, cwd=cwd)
        self._conn: http.client.HTTPConnection | None = None

    # -- process handling --------------------------------------------------------------

    def pid_of(self, name: str) -> int | None:
        try:
            return int((self.runtime_dir / name).read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def engine_pid(self) -> int | None:
        return self.pid_of("engine.pid")

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace")
        err = self.runtime_dir / "error.log"
        if err.exists():
            text += "\n--- nginx error.log ---\n" + err.read_text(errors="replace")[-4000:]
        return text

    def wait_ready(self) -> None:
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"fairvisor run exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.get("/readyz", fresh=True).status == 200
            except OSError:
                return False

        wait_until(ready, START_TIMEOUT_S, "the edge to answer /readyz with 200")

    def stop(self) -> int:
        """SIGTERM to the supervisor; returns its exit status. Leftovers are killed by PID."""
        if self._conn is not None:
            self._conn.close()
        others = [self.engine_pid(), self.pid_of("nginx.pid")]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for pid in others:
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._log.close()
        return code

    # -- HTTP ----------------------------------------------------------------------------

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
                fresh: bool = False) -> Response:
        """One request on a kept-alive connection (fresh=True: on a new one)."""
        if fresh or self._conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            if not fresh:
                self._conn = conn
        else:
            conn = self._conn
        start = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            self._conn = None
            raise
        elapsed = time.monotonic() - start
        if fresh:
            conn.close()
        return Response(resp.status, resp.headers, data, elapsed)

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def admin(self, path: str, method: str = "GET", headers: dict | None = None, token: str | None = "",
              body: bytes | None = None) -> Response:
        """One request to the admin listener, on a new connection; token "" = the edge's own
        FAIRVISOR_ADMIN_TOKEN (if any), None = no Authorization header."""
        token = self.admin_token if token == "" else token
        h = {"Authorization": f"Bearer {token}"} if token else {}
        h.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        start = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        return Response(resp.status, resp.headers, data, time.monotonic() - start)

    def decide(self, xff: str = "10.0.0.1", method: str = "GET", uri: str = "/api/items",
               headers: dict | None = None) -> Response:
        h = {"X-Forwarded-For": xff, "X-Original-Method": method, "X-Original-URI": uri}
        h.update(headers or {})
        return self.request("POST", "/v1/decision", headers=h)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def start_edge(tmp_path):
    """start_edge(policy=None, flags=[...], workers=2) -> a ready Edge; all are stopped after the test."""
    edges: list[Edge] = []

    def start(policy: dict | None = None, flags: list[str] | None = None, env: dict | None = None,
              workers: int = 2) -> Edge:
        tmp = tmp_path / f"edge{len(edges)}"
        tmp.mkdir()
        args = list(flags or [])
        if policy is not None:
            path = tmp / "policy.json"
            path.write_text(json.dumps(policy))
            args += ["--config", str(path)]
        edge = Edge(tmp, args, env, workers)
        edges.append(edge)
        edge.wait_ready()
        return edge

    yield start
    codes = [(edge, edge.stop()) for edge in edges]
    for edge, code in codes:
        assert code == 0, f"fairvisor run exited {code} on SIGTERM:\n{edge.log()}"


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": self.command, "path": self.path,
                                     "headers": dict(self.headers.items()), "body": body})
        payload = json.dumps({"upstream": "ok", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def upstream():
    """A real HTTP server on a free loopback port; `.requests` lists what reached it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.daemon_threads = True
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
