"""The decision service's throughput with and without the status page open: wrk through a real
`fairvisor run` edge (five-rule policy), alternating rounds with no poller and with one that
does what the page does (GET /status once, then GET /v1/admin/summary every 2 s).

Usage: .venv/bin/python bench/console_bench.py [--duration 10] [--connections 50] [--threads 2] [--rounds 3]
Only 127.0.0.1 is ever targeted; every run is bounded by --duration.
"""

from __future__ import annotations

import http.client
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import threading

from benchlib import free_port, wrk_args
from run_bench import FIVE_RULES, run_wrk, wait_for, wrk_script

ROOT = pathlib.Path(__file__).resolve().parent.parent
POLL_S = 2.0


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


def poller(admin_port: int, stop: threading.Event, polls: list) -> None:
    get(admin_port, "/status")
    while not stop.is_set():
        polls.append(get(admin_port, "/v1/admin/summary"))
        stop.wait(POLL_S)


def main() -> int:
    ap = wrk_args(__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    fairvisor = str(pathlib.Path(sys.executable).with_name("fairvisor"))
    with tempfile.TemporaryDirectory() as tmp:
        pathlib.Path(tmp).chmod(0o711)  # run as root, nginx's workers (www-data) enter it
        work = pathlib.Path(tmp)
        port, admin_port = free_port(), free_port()
        script = work / "requests.lua"
        wrk_script(script)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
        log = open(work / "run.log", "wb")
        edge = subprocess.Popen([fairvisor, "run", "--config", str(FIVE_RULES), "--listen", f"127.0.0.1:{port}",
                                 "--admin-listen", f"127.0.0.1:{admin_port}", "--state-dir", str(work / "state")],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(lambda: get(port, "/readyz") == 200, 30, "the edge")
            results: dict[str, list[dict]] = {"page closed": [], "page open": []}
            answered = [0, 0]  # summary polls answered 200, polls made
            for _ in range(args.rounds):
                for name in results:
                    stop, polls = threading.Event(), []
                    t = threading.Thread(target=poller, args=(admin_port, stop, polls)) if name == "page open" else None
                    if t:
                        t.start()
                    r = run_wrk(f"http://127.0.0.1:{port}/v1/decision", script, args, None)
                    if t:
                        stop.set()
                        t.join()
                        answered[0] += sum(s == 200 for s in polls)
                        answered[1] += len(polls)
                    results[name].append(r)
        finally:
            edge.send_signal(signal.SIGTERM)
            edge.wait(timeout=30)
            log.close()
    lines = ["| | RPS (median of rounds) | rounds | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for name, rs in results.items():
        lines.append(f"| {name} | {statistics.median(r['rps'] for r in rs):.0f} | "
                     f"{' '.join(str(round(r['rps'])) for r in rs)} | "
                     f"{statistics.median(r['p50'] for r in rs):.2f} | {statistics.median(r['p99'] for r in rs):.2f} |")
    closed, opened = (statistics.median(r["rps"] for r in results[n]) for n in results)
    lines.append(f"\npage open / page closed RPS: {opened / closed:.3f} ({args.rounds} rounds of {args.duration} s each); "
                 f"summary polls answered 200: {answered[0]} of {answered[1]} (the rest 503: the engine saturated "
                 f"by wrk answered after the shim's engine timeout)")
    print("\n".join(lines))
    if args.out:
        pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
