"""Real Debian redis-server processes for tests: one server (TCP or Unix socket) or a 3-master Cluster.

Each server runs from its own directory with persistence off, is awaited until it answers PING and
is stopped by its PID. `restart()` brings a stopped server back on the same port (and, in a
cluster, with the same node id), for fault tests. Use the fixtures by importing them into a
conftest.py: `from tests.support.redis_servers import redis_server, redis_unix_server, redis_cluster`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

INSTALL_HINT = "`make bootstrap` installs Debian's redis-server and redis-tools"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
CLUSTER_TIMEOUT_S = 20.0
CLUSTER_NODE_TIMEOUT_MS = 2000  # how long a silent master takes to be marked failing
POLL_S = 0.01


def binary(name: str) -> str:
    """The path of redis-server or redis-cli; fails the test (never skips it) when missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path is None:
        pytest.fail(f"{name} not found: {INSTALL_HINT}", pytrace=False)
    return path


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(with_bus: bool = False) -> int:
    """A loopback port nobody listens on; with_bus also keeps port + 10000 free (the cluster bus)."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        if _free(port) and (not with_bus or _free(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


def _frame(*args: str) -> bytes:
    return (f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)).encode()


def _reply(stream) -> bytes:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"closed mid-reply: {line[:200]!r}")
    kind, body = line[:1], line[1:-2]
    if kind in (b"+", b":"):
        return body
    if kind == b"-":
        raise RuntimeError(body.decode(errors="replace"))
    if kind == b"$":
        size = int(body)
        return b"" if size < 0 else stream.read(size + 2)[:size]
    raise RuntimeError(f"unexpected reply {line[:200]!r}")


def command(address: str | tuple[str, int], *args: str, password: str | None = None,
            tls_ca: str | None = None, timeout_s: float = 1.0) -> bytes:
    """One RESP command (after AUTH when a password is given; over TLS trusting tls_ca when given)
    on a fresh connection: its status, integer or bulk payload as bytes; an error reply raises."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as raw:
        raw.settimeout(timeout_s)
        raw.connect(address)
        s = ssl.create_default_context(cafile=tls_ca).wrap_socket(raw, server_hostname=address[0]) if tls_ca else raw
        with s, s.makefile("rb") as stream:
            s.sendall((_frame("AUTH", password) if password else b"") + _frame(*args))
            if password:
                _reply(stream)
            return _reply(stream)


def _die_with_parent() -> None:
    # A test run that dies leaves no redis-server behind (Linux prctl PR_SET_PDEATHSIG = SIGTERM).
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for 127.0.0.1, made with Debian's openssl (ca-certificates depends on it)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([shutil.which("openssl") or "/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return cert, key


class RedisServer:
    """One redis-server on 127.0.0.1:<port> (TLS only with tls=True), or on a Unix socket only (unix=True)."""

    def __init__(self, directory: Path, *, unix: bool = False, tls: bool = False, port: int | None = None,
                 password: str | None = None, extra_args: tuple[str, ...] = ()):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.unix = unix
        self.tls_cert = self_signed(self.dir) if tls else None
        self.password = password
        self.extra_args = tuple(extra_args)
        self._fixed_port = port is not None
        self.port = 0 if unix else (port or free_port(with_bus="--cluster-enabled" in extra_args))
        # sun_path holds 107 bytes: the socket lives in a short directory of its own under /tmp.
        self._sock_dir = tempfile.mkdtemp(prefix="fvr", dir="/tmp") if unix else None
        self.socket_path = os.path.join(self._sock_dir, "redis.sock") if unix else None
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str | tuple[str, int]:
        return self.socket_path if self.unix else ("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        """redis://, unix:// or, with TLS, rediss://...?ssl_ca_certs=<the server's own certificate>."""
        auth = f":{self.password}@" if self.password else ""
        if self.unix:
            return f"unix://{auth}{self.socket_path}"
        if self.tls_cert:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls_cert[0]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def _argv(self) -> list[str]:
        port = ["--port", "0", "--tls-port", str(self.port)] if self.tls_cert else ["--port", str(self.port)]
        argv = [binary("redis-server"), "--bind", "127.0.0.1", *port, "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
                "--protected-mode", "no"]
        if self.unix:
            argv += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        if self.password:
            argv += ["--requirepass", self.password]
        if self.tls_cert:
            cert, key = map(str, self.tls_cert)
            argv += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
                     "--tls-auth-clients", "no"]
        return argv + list(self.extra_args)

    def start(self) -> "RedisServer":
        """Starts the server and waits until it answers PING; a taken random port is swapped once more."""
        for attempt in range(3):
            self.proc = subprocess.Popen(self._argv(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
            if self._wait_ping():
                return self
            self.stop()
            if self.unix or self._fixed_port or "Address already in use" not in self.log():
                break
            self.port = free_port(with_bus="--cluster-enabled" in self.extra_args)
        raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S} s; log:\n{self.log()[-2000:]}")

    def _wait_ping(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.ping():
                    return True
            except (OSError, RuntimeError):
                pass
            time.sleep(POLL_S)
        return False

    def ping(self) -> bool:
        return self.call("PING") == b"PONG"

    def call(self, *args: str) -> bytes:
        """One command on a fresh connection, authenticated when the server has a password."""
        return command(self.address, *args, password=self.password,
                       tls_ca=str(self.tls_cert[0]) if self.tls_cert else None)

    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL after STOP_TIMEOUT_S; the port is free when this returns."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL by PID: the store vanishes without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung store)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> "RedisServer":
        """Stops (if running) and starts again on the same port or socket, from the same directory."""
        self.stop()
        self._fixed_port = True
        return self.start()

    def close(self) -> None:
        """stop() and remove the short socket directory."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.resume()
            except OSError:
                pass
        self.stop()
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)


class RedisClusterServers:
    """Three cluster-enabled masters joined by `redis-cli --cluster create`, no replicas."""

    def __init__(self, directory: Path, masters: int = 3):
        self.nodes = [RedisServer(Path(directory) / f"node{i}",
                                  extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                              "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)))
                      for i in range(masters)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> "RedisClusterServers":
        for node in self.nodes:
            node.start()
        hosts = [f"127.0.0.1:{n.port}" for n in self.nodes]
        proc = subprocess.run([binary("redis-cli"), "--cluster", "create", *hosts, "--cluster-replicas", "0",
                               "--cluster-yes"], capture_output=True, text=True, timeout=CLUSTER_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        self.wait_ok()
        return self

    def state(self, node: RedisServer) -> str:
        info = node.call("CLUSTER", "INFO").decode()
        return dict(line.split(":", 1) for line in info.split("\r\n") if ":" in line).get("cluster_state", "")

    def wait_ok(self, timeout_s: float = CLUSTER_TIMEOUT_S) -> None:
        """Until every running node says cluster_state:ok."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if all(self.state(n) == "ok" for n in self.nodes if n.pid is not None):
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(POLL_S)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout_s} s")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server on a free loopback port; `.url`, `.restart()`, `.stop()`, `.kill()`."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.close()


@pytest.fixture
def redis_unix_server(tmp_path):
    """A fresh redis-server listening on a Unix socket only (unix:///tmp/fvr.../redis.sock)."""
    server = RedisServer(tmp_path / "redis-unix", unix=True).start()
    yield server
    server.close()


@pytest.fixture
def redis_cluster(tmp_path):
    """A fresh 3-master Redis Cluster on free loopback ports; `.url` names its first node."""
    cluster = RedisClusterServers(tmp_path / "cluster")
    try:
        yield cluster.start()
    finally:
        cluster.close()
