"""Process and port helpers shared by the loopback benchmarks (plain nginx, `fairvisor run`, cleanup)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

FAIRVISOR = str(pathlib.Path(sys.executable).with_name("fairvisor"))
WORKERS = 2  # nginx workers of every proxy under test: the edge and its plain baseline alike

def nginx_conf(work_dir, port: int, http_body: str, workers: int = WORKERS, load_lua_ndk: bool = False) -> str:
    """A self-contained nginx.conf: one server on 127.0.0.1:port whose contents are http_body
    (its locations, plus any http-level lines before `server {`), runtime files in work_dir."""
    d = work_dir
    return (("load_module /usr/lib/nginx/modules/ndk_http_module.so;\n" if load_lua_ndk else "")
            + f"daemon off;\nworker_processes {workers};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            + "events { worker_connections 4096; }\n"
            + "http {\n    access_log off;\n    keepalive_requests 100000;\n"
            + f"    client_body_temp_path {d}/cb; proxy_temp_path {d}/px;\n"
            + f"    fastcgi_temp_path {d}/fc; uwsgi_temp_path {d}/uw; scgi_temp_path {d}/sc;\n"
            + http_body.replace("{port}", str(port)) + "}\n")


def plain_proxy_conf(work_dir, port: int, upstream_port: int) -> str:
    """Plain nginx proxy_pass, with the proxy settings of the edge's reverse_proxy template
    (HTTP/1.1 + keepalive to the upstream, no buffering) and its keepalive_requests, so that the
    difference between it and the edge is the enforcement and nothing else."""
    return nginx_conf(work_dir, port, f"""\
    upstream mock {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{{port}};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
""", load_lua_ndk=True)


def wrk_args(description: str):
    """The command line shared by the wrk benches; parse_args() on the returned parser."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--duration", type=int, default=10, help="seconds per path")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the Markdown table to this file")
    return ap


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime (fields 14, 15)


def child_pids(pid: int) -> list[int]:
    """The direct children of a process, e.g. an nginx master's workers."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {what}")


def start_nginx(conf: str, work_dir: pathlib.Path, port: int, what: str) -> subprocess.Popen:
    """nginx in the foreground (`daemon off`) on `conf`, with its prefix, pid and logs in work_dir."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["nginx", "-p", str(work_dir), "-c", str(work_dir / "nginx.conf"),
                             "-e", str(work_dir / "error.log")])
    try:
        wait_listening(port, proc, what)
    except BaseException:
        stop_all([proc])
        raise
    return proc


def start_edge(policy: pathlib.Path, backend_port: int, port: int, state_dir: pathlib.Path,
               *extra_args: str, admin_port: int | None = None) -> subprocess.Popen:
    """`fairvisor run --mode reverse_proxy` in front of 127.0.0.1:backend_port, WORKERS nginx workers.
    Its nginx and engine pids are in state_dir/nginx/{nginx,engine}.pid; stopping this process stops both.
    admin_port: its admin listener (/metrics) on 127.0.0.1; None = off."""
    admin = f"127.0.0.1:{admin_port}" if admin_port else "off"
    proc = subprocess.Popen([FAIRVISOR, "run", "--mode", "reverse_proxy", "--admin-listen", admin, *extra_args,
                             "--backend-url", f"http://127.0.0.1:{backend_port}", "--config", str(policy),
                             "--listen", f"127.0.0.1:{port}", "--state-dir", str(state_dir),
                             "--worker-processes", str(WORKERS), "--decision-log", "off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, "fairvisor run")
    except BaseException:
        stop_all([proc])
        raise
    return proc


def stop_all(procs: list[subprocess.Popen]) -> None:
    """TERM each process (last started first), then KILL what has not exited after 20 s.
    `fairvisor run` needs that long at worst: it drains nginx, then stops the engine."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def emit(lines: list[str], out: str | None) -> None:
    """A bench's Markdown table: printed, and written to `out` (its --out) when given."""
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if out:
        pathlib.Path(out).write_text(table)
