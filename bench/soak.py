"""Soak: mixed loopback traffic through two real edges for a bounded time; engine RSS and fds sampled.

Two `fairvisor run` edges (own state dirs, own ports, 127.0.0.1 only):
  - decision_service: /v1/decision, most keys within their bucket, a few hot keys refused (429);
  - reverse_proxy (openai format) in front of pyengine.devtools.mock_llm: JSON and SSE chat
    completions, one tenant with a small TPM that gets 429 tpm_exceeded.
Every --reload-every seconds both policy files are replaced atomically with a higher
bundle_version (checked in force through /readyz). Every --sample-every seconds each engine's
RSS (/proc/<pid>/status VmRSS) and open file descriptors (/proc/<pid>/fd) are recorded.

Pass: 0 errors (anything but 200 and the intended 429s, any exception, any engine restart),
every reload in force, and after warm-up (the first --warmup fraction) RSS and fds flat:
RSS grows less than --max-rss-growth-mb and fds vary by at most --max-fd-spread.

Usage: .venv/bin/python bench/soak.py [--duration 600] [--out soak.json]
`make soak` runs 10 minutes; `make soak SOAK_S=120` a shorter one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
FAIRVISOR = str(pathlib.Path(sys.executable).with_name("fairvisor"))
MAX_REQUESTS_PER_WORKER = 2_000_000  # a count bound on every load loop, on top of the deadline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"soak: timed out waiting for {what}")
        time.sleep(0.05)


def decision_policy(version: int) -> dict:
    return {"bundle_version": version, "policies": [{"id": "api", "spec": {
        "selector": {"pathPrefix": "/"},
        "rules": [{"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
                   "algorithm_config": {"tokens_per_second": 20, "burst": 40}}]}}]}


def llm_policy(version: int) -> dict:
    return {"bundle_version": version, "policies": [{"id": "llm", "spec": {
        "selector": {"pathPrefix": "/"},
        "rules": [{"name": "tokens", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket_llm",
                   "algorithm_config": {"tokens_per_minute": 6_000_000, "default_max_completion": 50}}]}},
        {"id": "tight", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
            {"name": "small", "limit_keys": ["header:x-small"], "algorithm": "token_bucket_llm",
             "algorithm_config": {"tokens_per_minute": 600, "default_max_completion": 50}}]}}],
        "pricing": {"*": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 2}}}


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class Edge:
    def __init__(self, work: pathlib.Path, name: str, policy: dict, flags: list[str]):
        self.name, self.port, self.admin_port = name, free_port(), free_port()
        self.dir = work / name
        self.dir.mkdir()
        self.policy_path = self.dir / "policy.json"
        self.policy_path.write_text(json.dumps(policy))
        self.version = policy["bundle_version"]
        self.state_dir = self.dir / "state"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
        env["FAIRVISOR_LOG_LEVEL"] = "warning"
        self.log = open(self.dir / "run.log", "wb")
        self.proc = subprocess.Popen([FAIRVISOR, "run", "--listen", f"127.0.0.1:{self.port}", "--state-dir",
                                      str(self.state_dir), "--worker-processes", "2", "--config",
                                      str(self.policy_path), "--admin-listen", f"127.0.0.1:{self.admin_port}",
                                      *flags], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)
        wait_for(self.ready, 30, f"the {name} edge")
        self.first_engine_pid = self.engine_pid()

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"soak: {self.name} edge exited: {(self.dir / 'run.log').read_text()[-2000:]}")
        try:
            return _get(self.port, "/readyz")[0] == 200
        except OSError:
            return False

    def engine_pid(self) -> int | None:
        try:
            return int((self.state_dir / "nginx" / "engine.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def push(self, policy: dict) -> None:
        tmp = self.policy_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(policy))
        os.replace(tmp, self.policy_path)
        self.version = policy["bundle_version"]

    def version_in_force(self) -> int | None:
        status, body = _get(self.port, "/readyz")
        return json.loads(body).get("policy_version") if status == 200 else None

    def sample(self) -> dict:
        pid = self.engine_pid()
        rss_kb = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kb = int(line.split()[1])
        keys = None
        status, body = _get(self.admin_port, "/metrics")  # the admin listener: both modes
        for line in body.decode(errors="replace").splitlines() if status == 200 else ():
            if line.startswith("fairvisor_state_keys "):
                keys = int(float(line.split()[1]))
        return {"pid": pid, "rss_mb": round(rss_kb / 1024, 2), "fds": len(os.listdir(f"/proc/{pid}/fd")),
                "state_keys": keys}

    def stop(self) -> int:
        others = [self.engine_pid()]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for pid in others:  # only PIDs this script started (through fairvisor run)
            try:
                if pid:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        return code


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []

    def add(self, kind: str, status: int, allowed=(200, 429), detail: str = "") -> None:
        with self.lock:
            key = f"{kind} {status}"
            self.counts[key] = self.counts.get(key, 0) + 1
            if status not in allowed and len(self.errors) < 50:
                self.errors.append(f"{kind}: HTTP {status} {detail[:200]}")

    def error(self, kind: str, exc: Exception) -> None:
        with self.lock:
            self.counts[f"{kind} exception"] = self.counts.get(f"{kind} exception", 0) + 1
            if len(self.errors) < 50:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    def n_errors(self) -> int:
        return sum(v for k, v in self.counts.items() if not k.endswith((" 200", " 429")))


def decision_worker(edge: Edge, stats: Stats, deadline: float, worker: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=5)
    for i in range(MAX_REQUESTS_PER_WORKER):
        if time.monotonic() >= deadline:
            break
        # Mostly spread keys (allowed); every 10th request from a hot address (refused once its burst is gone).
        xff = "10.9.9.9" if i % 10 == 0 else f"10.{worker}.{(i // 250) % 250}.{i % 250}"
        try:
            conn.request("POST", "/v1/decision", headers={"X-Forwarded-For": xff, "X-Original-Method": "GET",
                                                          "X-Original-URI": f"/api/items/{i % 100}"})
            r = conn.getresponse()
            body = r.read()
            stats.add("decision", r.status, detail=body.decode(errors="replace"))
        except (OSError, http.client.HTTPException) as exc:
            stats.error("decision", exc)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=5)
        time.sleep(0.001)
    conn.close()


def llm_worker(edge: Edge, stats: Stats, deadline: float, worker: int) -> None:
    for i in range(MAX_REQUESTS_PER_WORKER):
        if time.monotonic() >= deadline:
            break
        stream = i % 2 == 0
        doc = {"model": "gpt-4o-mini", "stream": stream, "max_tokens": 40,
               "messages": [{"role": "user", "content": f"soak request {worker}-{i} " + "x" * (i % 200)}]}
        headers = {"Content-Type": "application/json", "X-Tenant": f"t{i % 20}",
                   "X-Mock-Output-Tokens": str(5 + i % 30), "X-Mock-Token-Delay-Ms": "1" if stream else "0"}
        if i % 7 == 0:
            headers["X-Small"] = "s1"  # 600 tokens a minute for everyone: soon 429 tpm_exceeded
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
        try:
            conn.request("POST", "/openai/v1/chat/completions", body=json.dumps(doc).encode(), headers=headers)
            r = conn.getresponse()
            body = r.read()
            if r.status == 200 and stream and not body.endswith(b"data: [DONE]\n\n"):
                stats.add("llm-stream", 599, detail="stream did not end with [DONE]")
            else:
                stats.add("llm-stream" if stream else "llm-json", r.status, detail=body.decode(errors="replace"))
        except (OSError, http.client.HTTPException) as exc:
            stats.error("llm", exc)
        finally:
            conn.close()
        time.sleep(0.002)


def summarize(samples: list[dict], names: list[str], warmup_s: float) -> dict:
    out = {}
    for name in names:
        after = [s[name] for s in samples if s["t"] >= warmup_s]
        if not after:
            after = [s[name] for s in samples[-1:]]
        rss = [a["rss_mb"] for a in after]
        fds = [a["fds"] for a in after]
        k = max(1, len(rss) // 5)  # first and last fifth of the post-warm-up samples, by median
        first, last = sorted(rss[:k])[k // 2], sorted(rss[-k:])[k // 2]
        out[name] = {"rss_start_mb": first, "rss_end_mb": last, "rss_growth_mb": round(last - first, 2),
                     "rss_min_mb": min(rss), "rss_max_mb": max(rss), "fds_min": min(fds), "fds_max": max(fds),
                     "samples": len(after)}
    return out


def run(duration_s: float, reload_every_s: float = 30.0, sample_every_s: float = 5.0, warmup: float = 0.2,
        decision_workers: int = 4, llm_workers: int = 4, log=print) -> dict:
    """Runs the soak; returns a report dict (see the module docstring). Never leaves a process behind."""
    with tempfile.TemporaryDirectory(prefix="fairvisor-soak-") as tmp:
        pathlib.Path(tmp).chmod(0o711)  # run as root, nginx's workers (www-data) enter it
        work = pathlib.Path(tmp)
        mock_port = free_port()
        mock = subprocess.Popen([sys.executable, "-m", "pyengine.devtools.mock_llm", "--listen",
                                 f"127.0.0.1:{mock_port}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        edges: list[Edge] = []
        try:
            wait_for(lambda: _reachable(mock_port), 10, "the mock upstream")
            dec = Edge(work, "decision", decision_policy(1), ["--mode", "decision_service"])
            edges.append(dec)
            llm = Edge(work, "llm", llm_policy(1), ["--mode", "reverse_proxy", "--backend-url",
                                                     f"http://127.0.0.1:{mock_port}", "--llm-format", "openai"])
            edges.append(llm)
            stats = Stats()
            start = time.monotonic()
            deadline = start + duration_s
            threads = [threading.Thread(target=decision_worker, args=(dec, stats, deadline, w), daemon=True)
                       for w in range(decision_workers)]
            threads += [threading.Thread(target=llm_worker, args=(llm, stats, deadline, w), daemon=True)
                        for w in range(llm_workers)]
            for t in threads:
                t.start()
            samples, reloads, reload_failures = [], 0, []
            next_sample, next_reload = start, start + reload_every_s
            while time.monotonic() < deadline:
                now = time.monotonic()
                if now >= next_sample:
                    s = {"t": round(now - start, 1)}
                    for e in edges:
                        s[e.name] = e.sample()
                    samples.append(s)
                    log(f"soak t={s['t']:>6.1f}s " + " ".join(
                        f"{e.name}: rss={s[e.name]['rss_mb']:.1f}MB fds={s[e.name]['fds']} "
                        f"keys={s[e.name]['state_keys']}" for e in edges)
                        + f" requests={sum(stats.counts.values())} errors={stats.n_errors()}")
                    next_sample += sample_every_s
                if now >= next_reload:
                    reloads += 1
                    dec.push(decision_policy(dec.version + 1))
                    llm.push(llm_policy(llm.version + 1))
                    for e in (dec, llm):
                        try:
                            wait_for(lambda e=e: e.version_in_force() == e.version, 3.0, f"{e.name} reload")
                        except RuntimeError as exc:
                            reload_failures.append(str(exc))
                    next_reload += reload_every_s
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            for t in threads:
                t.join(30)
            restarts = [e.name for e in edges if e.engine_pid() != e.first_engine_pid]
            samples.append({"t": round(time.monotonic() - start, 1), **{e.name: e.sample() for e in edges}})
        finally:
            codes = {e.name: e.stop() for e in edges}
            mock.terminate()
            mock.wait(timeout=10)
        report = {"duration_s": duration_s, "reloads": reloads, "reload_failures": reload_failures,
                  "engine_restarts": restarts, "stop_codes": codes, "counts": dict(sorted(stats.counts.items())),
                  "errors": stats.n_errors(), "error_examples": stats.errors[:10],
                  "summary": summarize(samples, [e.name for e in edges], warmup * duration_s),
                  "samples": samples}
        return report


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def verdict(report: dict, max_rss_growth_mb: float, max_fd_spread: int) -> list[str]:
    """Why the soak failed; empty when it passed."""
    problems = []
    if report["errors"]:
        problems.append(f"{report['errors']} errors: {report['error_examples']}")
    if report["reload_failures"]:
        problems.append(f"reloads not in force: {report['reload_failures']}")
    if report["engine_restarts"]:
        problems.append(f"engines restarted: {report['engine_restarts']}")
    if any(report["stop_codes"].values()):
        problems.append(f"non-zero exit on SIGTERM: {report['stop_codes']}")
    for name, s in report["summary"].items():
        if s["rss_growth_mb"] > max_rss_growth_mb:
            problems.append(f"{name} engine RSS grew {s['rss_growth_mb']} MB after warm-up")
        if s["fds_max"] - s["fds_min"] > max_fd_spread:
            problems.append(f"{name} engine fds varied {s['fds_min']}..{s['fds_max']} after warm-up")
    for kind in ("decision", "llm"):
        if not any(k.startswith(kind) and k.endswith(" 429") for k in report["counts"]):
            problems.append(f"no intended {kind} 429: the mix did not exercise rejections")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600, help="seconds of traffic (default 600)")
    ap.add_argument("--reload-every", type=float, default=30)
    ap.add_argument("--sample-every", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of the run ignored for flatness")
    ap.add_argument("--max-rss-growth-mb", type=float, default=10)
    ap.add_argument("--max-fd-spread", type=int, default=4)
    ap.add_argument("--out", help="write the full report (samples included) as JSON here")
    args = ap.parse_args()
    report = run(args.duration, args.reload_every, args.sample_every, args.warmup)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    problems = verdict(report, args.max_rss_growth_mb, args.max_fd_spread)
    for p in problems:
        print("SOAK FAIL:", p)
    if not problems:
        print("SOAK PASS")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
