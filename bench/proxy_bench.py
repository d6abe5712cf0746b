"""Loopback throughput of the plain (non-LLM) reverse proxy vs plain nginx `proxy_pass`, with wrk.

Both paths proxy wrk's GETs to one fast JSON upstream, a separate nginx answering
`return 200 '{"ok":true}'`:
  1. baseline   plain nginx, proxy_pass with keepalive to the upstream (benchlib.plain_proxy_conf,
                the edge's proxy settings), the same worker count as the edge
  2. edge       `fairvisor run --mode reverse_proxy`, no LLM format: one token-bucket rule per
                client address whose limits wrk never reaches, so every request is decided by
                the real engine, allowed and proxied
The edge's /metrics is read before and after its run: the engine's allow decisions are
reported next to wrk's request count, and any fail-open pass (engine unavailable) is reported.
There is no target ratio for this path. Only 127.0.0.1 is targeted; every run is bounded.

Usage: .venv/bin/python bench/proxy_bench.py [--duration 10] [--connections 50] [--threads 2]
                                             [--out FILE] [--json FILE]
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from benchlib import (WORKERS, child_pids, free_port, nginx_conf, plain_proxy_conf, start_edge, start_nginx,
                      stop_all, wrk_args)
from run_bench import run_wrk

WARMUP_S = 1  # per path, not measured: upstream keepalive connections, the engine's first decisions
UPSTREAM_BODY = '{"ok":true}'

UPSTREAM_SERVER = """\
    server {
        listen 127.0.0.1:{port};
        default_type application/json;
        location / { return 200 '%s'; }
    }
""" % UPSTREAM_BODY

# Far above anything wrk reaches on loopback (all of wrk's requests share the key 127.0.0.1).
POLICY = {
    "bundle_version": 1,
    "policies": [{"id": "bench-api", "spec": {"selector": {"pathPrefix": "/"}, "mode": "enforce", "rules": [{
        "name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 10_000_000, "burst": 10_000_000}}]}}],
}

_METRIC = re.compile(r"^(fairvisor_decisions_total|fairvisor_engine_unavailable_total)(\{[^}]*\})? (\S+)$",
                     re.MULTILINE)


def edge_counters(port: int) -> dict:
    """{"allow", "reject", "engine_unavailable"} from the edge's admin /metrics, summed over labels."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {"allow": 0.0, "reject": 0.0, "engine_unavailable": 0.0}
    for name, labels, value in _METRIC.findall(text):
        if name == "fairvisor_engine_unavailable_total":
            out["engine_unavailable"] += float(value)
        elif 'action="allow"' in labels:
            out["allow"] += float(value)
        else:
            out["reject"] += float(value)
    return out


def check_proxies(port: int, what: str) -> None:
    """One request through the path must come back 200 with the upstream's body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/api/items")
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        conn.close()
    if resp.status != 200 or body != UPSTREAM_BODY:
        raise SystemExit(f"bench: {what} answered {resp.status} {body[:200]!r}, expected 200 {UPSTREAM_BODY}")


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api/items"


def warm_up(port: int, args) -> None:
    short = copy.copy(args)
    short.duration = WARMUP_S
    run_wrk(url(port), None, short, None)


def measure(port: int, args, cpu_pids: dict[str, list[int]]) -> dict:
    r = run_wrk(url(port), None, args, None, cpu_pids)
    del r["in_flight"]  # run_bench samples it from stub_status, which the edge does not serve
    return r


def with_units(r: dict) -> dict:
    """parse_wrk's result with the units in the key names, for --json."""
    return {"rps": r["rps"], "p50_ms": r["p50"], "p90_ms": r["p90"], "p99_ms": r["p99"], "requests": r["total"],
            "non2xx": r["non2xx"], "socket_errors": r["errors"]}


def table(rows: list[tuple[str, dict]], args, load_before: float, edge_delta: dict) -> str:
    base = rows[0][1]["rps"]
    lines = [
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency, GET, loopback, "
        f"{WORKERS} nginx workers per proxy, {os.cpu_count()} CPUs, "
        f"1-min load average before the run {load_before:.2f}",
        "",
        "| path | RPS | ratio | p50 ms | p90 ms | p99 ms | non-2xx | CPU µs/req proxy nginx | engine "
        "| upstream | wrk |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        share = f"{100 * r['non2xx'] / max(r['total'], 1):.0f}%"
        cpu = r["cpu_us"]
        engine = f"{cpu['engine']:.1f}" if "engine" in cpu else "–"
        lines.append(f"| {name} | {r['rps']:,.0f} | {r['rps'] / base:.2f} | {r['p50']:.2f} | {r['p90']:.2f} | "
                     f"{r['p99']:.2f} | {share} | {cpu['nginx']:.1f} | {engine} | {cpu['upstream']:.1f} | "
                     f"{cpu['wrk']:.1f} |")
    edge = rows[-1][1]
    lines += ["", f"reverse proxy / plain proxy_pass = {edge['rps'] / base:.2f} (no target); engine decisions "
                  f"during the edge run: {edge_delta['allow']:,.0f} allowed, {edge_delta['reject']:,.0f} rejected, "
                  f"{edge_delta['engine_unavailable']:,.0f} engine-unavailable (fail-open) for "
                  f"{edge['total']:,} wrk requests"]
    errors = [f"{name}: {r['errors']}" for name, r in rows if r["errors"]]
    if errors:
        lines += ["", "wrk socket errors: " + "; ".join(errors)]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = wrk_args(__doc__.split("\n")[0])
    ap.add_argument("--json", help="also write the raw numbers to this file")
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("bench: needs wrk and nginx (scripts/bootstrap installs them)")

    load_before = os.getloadavg()[0]
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="fv-proxy-bench-") as tmp:
        pathlib.Path(tmp).chmod(0o711)  # run as root, nginx's workers (www-data) enter it
        work = pathlib.Path(tmp)
        try:
            upstream_port, plain_port, edge_port = free_port(), free_port(), free_port()
            admin_port = free_port()  # the edge's /metrics: on its admin listener in this mode
            procs.append(start_nginx(nginx_conf(work / "upstream", upstream_port, UPSTREAM_SERVER),
                                     work / "upstream", upstream_port, "upstream nginx"))
            procs.append(start_nginx(plain_proxy_conf(work / "plain", plain_port, upstream_port),
                                     work / "plain", plain_port, "plain nginx"))
            policy = work / "policy.json"
            policy.write_text(json.dumps(POLICY))
            procs.append(start_edge(policy, upstream_port, edge_port, work / "state", admin_port=admin_port))
            check_proxies(plain_port, "plain nginx")
            check_proxies(edge_port, "the edge")

            upstream_workers = child_pids(procs[0].pid)
            warm_up(plain_port, args)
            plain = measure(plain_port, args, {"nginx": child_pids(procs[1].pid), "upstream": upstream_workers})
            warm_up(edge_port, args)
            runtime = work / "state" / "nginx"  # `fairvisor run` writes its children's pids here
            edge_cpu = {"nginx": child_pids(int((runtime / "nginx.pid").read_text())),
                        "engine": [int((runtime / "engine.pid").read_text())], "upstream": upstream_workers}
            before = edge_counters(admin_port)
            edge = measure(edge_port, args, edge_cpu)
            after = edge_counters(admin_port)
            edge_delta = {k: after[k] - before[k] for k in after}
        finally:
            stop_all(procs)

    rows = [("plain nginx `proxy_pass` (baseline)", plain),
            ("reverse proxy, real engine, 1 rule (token bucket per client address)", edge)]
    text = table(rows, args, load_before, edge_delta)
    print(text, end="")
    if args.out:
        pathlib.Path(args.out).write_text(text)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "duration_s": args.duration, "connections": args.connections, "threads": args.threads,
            "workers": WORKERS, "cpus": os.cpu_count(), "load_before_1min": load_before,
            "plain_proxy_pass": with_units(plain), "edge_reverse_proxy": with_units(edge),
            "edge_engine_decisions": edge_delta},
            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
