"""Writes the latest `make bench` run into the generated block of docs/performance.md.

Only the text between the two marker lines BEGIN and END is replaced; everything outside them
(the hand-written analysis) is left byte for byte as it was. The block gets the date, the
machine (CPU count and model, load average), and the outputs of the bench parts: the tables of
bench/run_bench.py, bench/proxy_bench.py, bench/llm_stream_bench.py, bench/fleet_bench.py and bench/engines_bench.py
(their --out files, as written), the engine micro-benchmark medians from pytest-benchmark's --benchmark-json file, in
µs, and the JSON line of bench/engine_memory.py. A part that was not given is marked "not run".

Usage: .venv/bin/python bench/report.py --doc docs/performance.md [--run-bench FILE] [--proxy FILE]
           [--llm FILE] [--fleet FILE] [--engines FILE] [--engine-json FILE] [--memory FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"

# pytest-benchmark test name -> what it measures (tests/engine/test_bench_engine.py,
# tests/algorithms/test_bench_algorithms.py); a name missing here is shown as is.
BENCH_LABELS = {
    "test_bench_decode_only": "msgpack decode of one Decide frame",
    "test_bench_token_bucket_acquire": "`TokenBucket.acquire` (warm key)",
    "test_bench_cost_budget_acquire": "`CostBudget.acquire`",
    "test_bench_llm_reserve_with_tpd": "`LLMTokenLimiter.reserve` (TPM + TPD)",
    "test_bench_decide_one_rule": "`Engine.decide`, 1 rule (default policy), 1000 clients, allow path",
    "test_bench_decide_five_rules": "`Engine.decide`, 5 rules (five_rules.json, LLM), 1000 tenants, allow path",
    "test_bench_decide_realistic_mix": "`Engine.decide`, 5 rules all allowed (realistic_mix.json), 1000 tenants",
    "test_bench_decide_unmatched": "`Engine.decide`, a request no policy selects (coverage path)",
    "test_bench_frame_round_trip": "frame → decide → frame, 5 rules",
}


class ReportError(Exception):
    """A marker or an input is missing or malformed; main() turns it into a one-line exit message."""


def replace_block(doc: str, block: str, doc_name: str = "document") -> str:
    """doc with the text between the BEGIN and END lines replaced by block (markers kept)."""
    begins, ends = doc.count(BEGIN), doc.count(END)
    if begins != 1 or ends != 1:
        raise ReportError(f"{doc_name}: expected exactly one `{BEGIN}` and one `{END}` marker, "
                          f"found {begins} and {ends}; add them around the generated section")
    start, stop = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    if stop < start:
        raise ReportError(f"{doc_name}: `{END}` comes before `{BEGIN}`")
    return doc[:start] + "\n" + block.strip("\n") + "\n" + doc[stop:]


def engine_medians(bench: dict) -> list[tuple[str, float, float, int]]:
    """[(label, median µs, min µs, rounds)] from a pytest-benchmark JSON report, fastest first."""
    try:
        rows = [(BENCH_LABELS.get(b["name"], f"`{b['name']}`"), b["stats"]["median"] * 1e6,
                 b["stats"]["min"] * 1e6, int(b["stats"]["rounds"])) for b in bench["benchmarks"]]
    except (KeyError, TypeError) as exc:
        raise ReportError(f"engine benchmark JSON: missing {exc} (expected pytest --benchmark-json output)") from None
    if not rows:
        raise ReportError("engine benchmark JSON: no benchmarks (was --benchmark-enable given?)")
    return sorted(rows, key=lambda r: r[1])


def memory_result(text: str) -> dict:
    """The last JSON line that bench/engine_memory.py printed."""
    for line in reversed(text.strip().splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and "tenant_keys" in result:
            return result
    raise ReportError("engine memory output: no JSON line with tenant_keys (expected bench/engine_memory.py output)")


def machine_info() -> dict:
    """What the numbers depend on: CPUs, load (1/5/15 min, read after the run), interpreter, nginx."""
    model = "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:  # `nginx -v` prints to stderr
        nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10, check=False).stderr.strip()
        nginx = nginx.removeprefix("nginx version: ").removeprefix("nginx/") or "unknown"
    except (OSError, subprocess.SubprocessError):
        nginx = "not found"
    return {"cpus": os.cpu_count(), "cpu_model": model, "load_avg": os.getloadavg(),
            "python": f"{platform.python_implementation()} {platform.python_version()}", "nginx": nginx}


def render_block(*, when: datetime.datetime, machine: dict, run_bench: str | None = None, proxy: str | None = None,
                 llm: str | None = None, fleet: str | None = None, engines: str | None = None,
                 engine: dict | None = None,
                 memory: dict | None = None) -> str:
    """The Markdown of the generated block. Each bench table is embedded as its script wrote it."""
    load_1, load_5, load_15 = machine["load_avg"]
    out = [
        "_Generated by `make bench` (bench/report.py); edits inside this block are overwritten._",
        "",
        f"Run finished {when:%Y-%m-%d %H:%M %Z}. Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"load average {load_1:.2f} / {load_5:.2f} / {load_15:.2f} (1 / 5 / 15 min, read after the run, so it "
        f"includes the bench itself), {machine['python']}, nginx {machine['nginx']}.",
    ]

    def part(title: str, body: str | None) -> None:
        out.extend(["", f"**{title}**", "", body.strip("\n") if body is not None else "_not run_"])

    part("Decision service vs raw nginx (`bench/run_bench.py`)", run_bench)
    part("Reverse proxy, plain API, vs plain nginx `proxy_pass` (`bench/proxy_bench.py`)", proxy)
    part("LLM streaming proxy vs plain nginx `proxy_pass` (`bench/llm_stream_bench.py`)", llm)
    part("Fleet mode: cost of the store per decision, and overshoot (`bench/fleet_bench.py`)", fleet)
    part("Engines per edge: 1 vs 2 engines behind one nginx (`bench/engines_bench.py`)", engines)
    if engine is not None:
        lines = ["| benchmark | median µs | min µs | rounds |", "|---|---:|---:|---:|"]
        lines += [f"| {label} | {median_us:.1f} | {min_us:.1f} | {rounds:,} |"
                  for label, median_us, min_us, rounds in engine_medians(engine)]
        part("Engine micro-benchmarks (pytest-benchmark)", "\n".join(lines))
    else:
        part("Engine micro-benchmarks (pytest-benchmark)", None)
    if memory is not None:
        part("Memory per tenant key (`bench/engine_memory.py`)",
             f"{memory['tenant_keys']:,} tenant keys through the real decision path (1 token-bucket rule): "
             f"RSS {memory['rss_total_mb']} MB in total, +{memory['rss_growth_mb']} MB, "
             f"{memory['bytes_per_key']} bytes per key; `Engine.decide` mean {memory['decide_us_mean']} µs.")
    else:
        part("Memory per tenant key (`bench/engine_memory.py`)", None)
    return "\n".join(out) + "\n"


def _read(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return pathlib.Path(path).read_text()
    except OSError as exc:
        raise ReportError(f"{what}: cannot read {path}: {exc.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", required=True, help="the Markdown file holding the markers")
    ap.add_argument("--run-bench", help="bench/run_bench.py --out file")
    ap.add_argument("--proxy", help="bench/proxy_bench.py --out file")
    ap.add_argument("--llm", help="bench/llm_stream_bench.py --out file")
    ap.add_argument("--fleet", help="bench/fleet_bench.py --out file")
    ap.add_argument("--engines", help="bench/engines_bench.py --out file")
    ap.add_argument("--engine-json", help="pytest --benchmark-json file")
    ap.add_argument("--memory", help="bench/engine_memory.py output")
    args = ap.parse_args(argv)
    try:
        doc = _read(args.doc, "document")
        engine_text = _read(args.engine_json, "engine benchmark JSON")
        memory_text = _read(args.memory, "engine memory output")
        try:
            engine = json.loads(engine_text) if engine_text is not None else None
        except ValueError as exc:
            raise ReportError(f"engine benchmark JSON: {args.engine_json}: {exc}") from None
        block = render_block(
            when=datetime.datetime.now(datetime.UTC), machine=machine_info(),
            run_bench=_read(args.run_bench, "run_bench table"), proxy=_read(args.proxy, "proxy table"),
            llm=_read(args.llm, "LLM streaming table"), fleet=_read(args.fleet, "fleet table"),
            engines=_read(args.engines, "engines table"), engine=engine,
            memory=memory_result(memory_text) if memory_text is not None else None)
        new_doc = replace_block(doc, block, args.doc)
    except ReportError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    pathlib.Path(args.doc).write_text(new_doc)
    print(f"report: wrote the generated block of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
