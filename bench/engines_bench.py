"""1 vs 2 engines behind one nginx (FAIRVISOR_ENGINES): RPS, engine CPU per decision, decisions/s per engine.

Each row is a real `fairvisor run` (decision service, five_rules.json, fleet mode against a
redis-server this script starts on a free loopback port and stops by its PID; each row uses a
database of its own), driven by wrk with run_bench.py's request script. Decisions per engine come from the edge's merged /metrics
(the engine="<i>" label). Every run is bounded by --duration; only 127.0.0.1 is targeted.

Usage: .venv/bin/python bench/engines_bench.py [--duration 10] [--connections 50] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import http.client
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import FAIRVISOR, child_pids, emit, free_port, wait_listening, wrk_args
from run_bench import FIVE_RULES, ROOT, run_wrk, wait_for, wrk_script

sys.path.insert(0, str(ROOT))
from pyengine.cli.status_cmd import parse_metrics  # noqa: E402

WORKERS = 4  # nginx workers: 2 per engine with 2 engines
ENGINE_TIMEOUT_MS = 1000  # a saturated engine still answers: no fail-open rows in the figures


def start_redis(work: pathlib.Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc, "redis-server")
    return proc, f"redis://127.0.0.1:{port}"


def scrape(admin_port: int) -> dict[str, float]:
    """Decisions so far per engine ("0", "1", ...; one engine has no label: "0")."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[str, float] = {}
    for labels, value in parse_metrics(text).get("fairvisor_decisions_total", []):
        engine = labels.get("engine", "0")
        out[engine] = out.get(engine, 0.0) + value
    return out


def pids(state_dir: pathlib.Path, engines: int) -> tuple[list[int], list[int]]:
    from pyengine.engine_paths import per_engine

    runtime = state_dir / "nginx"
    nginx = int((runtime / "nginx.pid").read_text())
    return child_pids(nginx), [int((runtime / per_engine("engine.pid", i)).read_text()) for i in range(engines)]


def one_row(work: pathlib.Path, engines: int, redis_url: str, script: pathlib.Path, args) -> dict:
    state_dir = work / f"edge-{engines}"
    port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
    env.update({"FAIRVISOR_ENGINES": str(engines), "FAIRVISOR_STATE_URL": redis_url, "FAIRVISOR_LOG_LEVEL": "warning"})
    proc = subprocess.Popen([FAIRVISOR, "run", "--config", str(FIVE_RULES), "--listen", f"127.0.0.1:{port}",
                             "--admin-listen", f"127.0.0.1:{admin_port}", "--state-dir", str(state_dir),
                             "--worker-processes", str(WORKERS), "--decision-log", "off",
                             "--engine-timeout-ms", str(ENGINE_TIMEOUT_MS)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, "fairvisor run")
        wait_for(lambda: (state_dir / "nginx" / "nginx.pid").exists(), 10, "nginx")
        nginx_pids, engine_pids = pids(state_dir, engines)
        before, start = scrape(admin_port), time.monotonic()
        r = run_wrk(f"http://127.0.0.1:{port}/v1/decision", script, args, None,
                    {"nginx": nginx_pids, "engines": engine_pids})
        elapsed_s = time.monotonic() - start
        after = scrape(admin_port)
        r["per_engine"] = [(after.get(str(i), 0) - before.get(str(i), 0)) / elapsed_s for i in range(engines)]
        return r
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    args = wrk_args(__doc__.split("\n")[0]).parse_args()
    for tool in ("wrk", "nginx", "redis-server"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: needs {tool} (scripts/bootstrap installs it)")
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fairvisor-engines-bench-") as tmp:
        work = pathlib.Path(tmp)
        work.chmod(0o711)  # run as root, nginx's workers (www-data) enter it
        script = work / "requests.lua"
        wrk_script(script)
        redis, url = start_redis(work)
        try:
            for engines in (1, 2):
                # A database of its own per row: the second starts from empty buckets too.
                rows.append((engines, one_row(work, engines, f"{url}/{engines}", script, args)))
        finally:
            redis.terminate()
            redis.wait(timeout=10)
    lines = [f"1 vs 2 engines behind one nginx ({WORKERS} workers), fleet mode on a local redis-server, "
             f"five_rules.json; wrk -t{args.threads} -c{args.connections} -d{args.duration}s, loopback, "
             f"{os.cpu_count()} CPUs, 1-min load average before {load_before:.2f}",
             "",
             "| engines | RPS | p50 ms | p99 ms | non-2xx (429s) | engine CPU µs/decision | nginx CPU µs/req "
             "| decisions/s per engine |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for engines, r in rows:
        cpu = r["cpu_us"]
        each = ", ".join(f"{d:,.0f}" for d in r["per_engine"])
        lines.append(f"| {engines} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{100 * r['non2xx'] / max(r['total'], 1):.0f}% | "
                     f"{cpu['engines']:.1f} | {cpu['nginx']:.1f} | {each} |")
    errors = [f"{n} engines: {r['errors']}" for n, r in rows if r["errors"]]
    if errors:
        lines += ["", "wrk socket errors: " + "; ".join(errors)]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
