"""Streaming through the LLM reverse proxy vs plain nginx `proxy_pass`, same mock upstream.

Both paths stream OpenAI chat completions (SSE, `--tokens` events each) from one
pyengine.devtools.mock_llm process on loopback:
  1. plain   nginx, proxy_pass + proxy_buffering off, nothing else (same worker count)
  2. edge    `fairvisor run --mode reverse_proxy --llm-format openai`: enforce + reserve, SSE
             counting in body_filter, Settle from a timer, settlement in the engine
A small asyncio client keeps `--concurrency` streams open for `--duration` seconds per path
and reports streams/s, events/s, time to first byte and whole-stream latency; the ratio of
edge to plain streams/s should be >= 0.8. Every run is bounded, loopback only.

Usage: .venv/bin/python bench/llm_stream_bench.py [--duration 10] [--concurrency 32] [--tokens 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import (WORKERS, child_pids, cpu_s, free_port, plain_proxy_conf, start_edge, start_nginx, stop_all,
                      wait_listening)

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.8

POLICY = {  # limits far above what the bench sends: every stream is allowed, reserved and settled
    "bundle_version": 1,
    "policies": [{"id": "bench", "spec": {"selector": {"pathPrefix": "/"}, "rules": [{
        "name": "tokens", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
        "algorithm_config": {"tokens_per_minute": 10**12, "default_max_completion": 1000}}]}}],
}


async def one_stream(port: int, request: bytes) -> tuple[float, float, int]:
    """(time to first byte, total time, body bytes) of one streamed completion on a new connection."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    first = await reader.read(65536)
    ttfb = time.perf_counter() - start
    size = len(first)
    while chunk := await reader.read(65536):
        size += len(chunk)
    writer.close()
    await writer.wait_closed()
    if not first.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"bench: unexpected response {first[:200]!r}")
    return ttfb, time.perf_counter() - start, size


async def drive(port: int, path: str, tokens: int, concurrency: int, duration_s: float) -> dict:
    # max_tokens well above what the mock writes: the allowance is never reached, nothing is cut.
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "max_tokens": 4 * tokens,
                       "messages": [{"role": "user", "content": "Benchmark the streaming path, please."}]}).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nX-Tenant: bench\r\n"
               f"X-Mock-Output-Tokens: {tokens}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    results: list[tuple[float, float, int]] = []
    deadline = time.perf_counter() + duration_s

    async def worker():
        while time.perf_counter() < deadline:
            results.append(await one_stream(port, request))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ttfb = sorted(r[0] for r in results)
    total = sorted(r[1] for r in results)

    def pct(xs, p):
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000

    return {"streams": len(results), "streams_s": len(results) / elapsed, "events_s": len(results) * tokens / elapsed,
            "mb_s": sum(r[2] for r in results) / elapsed / 1e6, "ttfb_p50_ms": pct(ttfb, 0.5),
            "ttfb_p99_ms": pct(ttfb, 0.99), "total_p50_ms": pct(total, 0.5), "total_p99_ms": pct(total, 0.99),
            "total_mean_ms": statistics.fmean(total) * 1000}


def tree_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of the processes and their children (nginx workers)."""
    return sum(cpu_s(p) for pid in pids for p in [pid, *child_pids(pid)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per path")
    ap.add_argument("--concurrency", type=int, default=32, help="streams open at once")
    ap.add_argument("--tokens", type=int, default=200, help="SSE content events per stream")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    args = ap.parse_args()

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="fv-llm-bench-") as tmp:
        pathlib.Path(tmp).chmod(0o711)  # run as root, nginx's workers (www-data) enter it
        tmp_path = pathlib.Path(tmp)
        try:
            mock_port, plain_port, edge_port = free_port(), free_port(), free_port()
            mock = subprocess.Popen([sys.executable, "-m", "pyengine.devtools.mock_llm",
                                     "--listen", f"127.0.0.1:{mock_port}"], cwd=ROOT)
            procs.append(mock)
            wait_listening(mock_port, mock, "mock upstream")

            plain = start_nginx(plain_proxy_conf(tmp_path / "plain", plain_port, mock_port), tmp_path / "plain",
                                plain_port, "plain nginx")
            procs.append(plain)

            policy = tmp_path / "policy.json"
            policy.write_text(json.dumps(POLICY))
            procs.append(start_edge(policy, mock_port, edge_port, tmp_path / "state", "--llm-format", "openai"))

            runtime = tmp_path / "state" / "nginx"
            edge_pids = [int((runtime / "nginx.pid").read_text()), int((runtime / "engine.pid").read_text())]
            rows = {}
            for name, port, path, pids in (("plain", plain_port, "/v1/chat/completions", [plain.pid]),
                                           ("edge", edge_port, "/openai/v1/chat/completions", edge_pids)):
                asyncio.run(drive(port, path, args.tokens, args.concurrency, 1.0))  # warm-up
                before = tree_cpu_s(pids)
                rows[name] = asyncio.run(drive(port, path, args.tokens, args.concurrency, args.duration))
                rows[name]["cpu_ms"] = (tree_cpu_s(pids) - before) * 1000 / rows[name]["streams"]
        finally:
            stop_all(procs)

    lines = [
        f"LLM streaming, {args.tokens} events/stream, concurrency {args.concurrency}, "
        f"{args.duration:g} s per path, {WORKERS} nginx workers, loopback",
        "",
        "| path | streams | streams/s | events/s | MB/s | TTFB p50 ms | TTFB p99 ms | total p50 ms | total p99 ms "
        "| proxy CPU ms/stream |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['streams']} | {r['streams_s']:.1f} | {r['events_s']:.0f} | {r['mb_s']:.2f} | "
                     f"{r['ttfb_p50_ms']:.2f} | {r['ttfb_p99_ms']:.2f} | {r['total_p50_ms']:.2f} | "
                     f"{r['total_p99_ms']:.2f} | {r['cpu_ms']:.2f} |")
    ratio = rows["edge"]["streams_s"] / rows["plain"]["streams_s"]
    lines += ["", f"throughput ratio edge/plain: {ratio:.2f} (target >= {TARGET_RATIO}); proxy CPU per stream "
                  f"(nginx workers, + engine for edge): {rows['edge']['cpu_ms'] / rows['plain']['cpu_ms']:.1f}x"]
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.out:
        pathlib.Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
