"""What consistency=strict costs per decision: the 1-rule policy embedded, in fleet mode (local), and strict.

The default policy (one token bucket per client address) through nginx + shim + engine, three
ways: embedded state (no FAIRVISOR_STATE_URL); fleet mode with the rule `local` (decided from
local counters, synced every 50 ms); fleet mode with the rule `strict` (one atomic script call in
the store per decision). The store is a real redis-server on loopback, started here and stopped
by its PID. Rows: the paced rate of bench/run_bench.py (wrk -c10, 5 ms between a connection's
requests, about 2k requests/s: latency added when nothing queues), then wrk -c50 unpaced
(throughput). CPU columns are per request: nginx's workers, the engine, redis-server.

Usage: .venv/bin/python bench/strict_bench.py [--duration 10] [--out FILE]
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import tempfile

from benchlib import child_pids, wrk_args

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run_bench import ONE_RULE, PACED_CONNECTIONS, PACED_DELAY_MS, Edge, run_wrk, wrk_script  # noqa: E402
from tests.support.redis_servers import RedisServer  # noqa: E402


def _policy(work: pathlib.Path, consistency: str) -> pathlib.Path:
    bundle = json.loads(ONE_RULE.read_text())
    for p in bundle["policies"]:
        for r in p["spec"]["rules"]:
            r["consistency"] = consistency
    path = work / f"policy-{consistency}.json"
    path.write_text(json.dumps(bundle))
    return path


def _row(name: str, r: dict, base: dict | None) -> str:
    cpu = r["cpu_us"]
    added = "" if base is None else f"{(r['p50'] - base['p50']) * 1000:+.0f} | {(r['p99'] - base['p99']) * 1000:+.0f}"
    return (f"| {name} | {r['rps']:,.0f} | {r['p50'] * 1000:.0f} | {r['p99'] * 1000:.0f} | {added or '– | –'} | "
            f"{cpu['nginx']:.1f} | {cpu['engine']:.1f} | {cpu.get('redis', 0.0):.1f} |")


def main() -> int:
    args = wrk_args(__doc__.split("\n")[0]).parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("bench: needs wrk and nginx (scripts/bootstrap installs them)")
    paced, unpaced = [], []
    with tempfile.TemporaryDirectory(prefix="fairvisor-strict-bench-") as tmp:
        work = pathlib.Path(tmp)
        work.chmod(0o711)  # run as root, nginx's workers (www-data) enter it
        script, paced_script = work / "requests.lua", work / "paced.lua"
        wrk_script(script)
        wrk_script(paced_script, PACED_DELAY_MS)
        redis = RedisServer(work / "redis").start()
        try:
            runs = [("embedded state, 1 rule", _policy(work, "local"), {}),
                    ("fleet mode, 1 rule local", _policy(work, "local"), {"FAIRVISOR_STATE_URL": redis.url}),
                    ("fleet mode, 1 rule strict", _policy(work, "strict"), {"FAIRVISOR_STATE_URL": redis.url})]
            for n, (name, policy, env) in enumerate(runs):
                edge_dir = work / f"edge{n}"
                edge_dir.mkdir()
                redis.call("FLUSHALL")
                edge = Edge(edge_dir, lambda sock: [sys.executable, "-m", "pyengine"], policy, env)
                try:
                    cpu = {"nginx": child_pids(edge.nginx.pid), "engine": [edge.engine.pid], "redis": [redis.pid]}
                    url = f"http://127.0.0.1:{edge.port}/v1/decision"
                    paced.append((name, run_wrk(url, paced_script, args, None, cpu, PACED_CONNECTIONS)))
                    unpaced.append((name, run_wrk(url, script, args, None, cpu)))
                finally:
                    edge.stop()
        finally:
            redis.close()
    header = ["| path | RPS | p50 µs | p99 µs | added p50 µs | added p99 µs | CPU µs/req nginx | engine | redis |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines = [f"Paced: wrk -t{args.threads} -c{PACED_CONNECTIONS} -d{args.duration}s, delay() = {PACED_DELAY_MS} ms "
             "per connection between requests; added = over the embedded row", "", *header]
    lines += [_row(name, r, paced[0][1] if i else None) for i, (name, r) in enumerate(paced)]
    lines += ["", f"Unpaced: wrk -t{args.threads} -c{args.connections} -d{args.duration}s", "", *header]
    lines += [_row(name, r, unpaced[0][1] if i else None) for i, (name, r) in enumerate(unpaced)]
    errors = [f"{name}: {r['errors']}" for name, r in paced + unpaced if r["errors"]]
    if errors:
        lines += ["", "wrk socket errors: " + "; ".join(errors)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
