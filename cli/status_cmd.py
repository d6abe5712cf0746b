"""`fairvisor status`: health, policy in force, uptime, decision counters, top rejected keys, latency."""

import json
import os
import re
import time

import click

from .output import echo_json, paint, table

PINGS = 5  # Health round trips timed for the latency figure
EXIT_NOT_READY = 1
EXIT_FILE_REFUSED = 4  # ready on the last good bundle, but the policy file on disk was refused
EXIT_UNREACHABLE = 3
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Unreachable(Exception):
    """Neither the engine socket nor the edge URL answered."""


def parse_metrics(text: str) -> dict[str, list[tuple[dict, float]]]:
    """Prometheus text exposition -> {sample name: [(labels, value)]} (comments skipped)."""
    out: dict[str, list[tuple[dict, float]]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if not m or line.startswith("#"):
            continue
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def value(metrics: dict, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    return sum(v for lab, v in metrics.get(name, ()) if all(lab.get(k) == w for k, w in labels.items()))


def _call(sock, msg):
    from pyengine.protocol.client import call

    return call(sock, msg)


def fetch_socket(path: str, timeout_s: float) -> tuple[int, dict, str, list[float]]:
    """(health status, health body, metrics text, round-trip times in ms) over the engine socket."""
    import socket

    from pyengine.errors import ProtocolError
    from pyengine.protocol.messages import Health, Metrics

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            rtts_ms = []
            for _ in range(PINGS):
                start = time.perf_counter()
                health = _call(sock, Health())
                rtts_ms.append((time.perf_counter() - start) * 1000)
            metrics = _call(sock, Metrics(engine_unavailable_delta=0))
    except (OSError, ProtocolError) as exc:
        raise Unreachable(f"engine socket {path}: {exc}") from None
    return health.status, json.loads(health.body), metrics.body, rtts_ms


def fetch_url(url: str, timeout_s: float) -> tuple[int, dict, str, list[float]]:
    """The same through the edge: GET /readyz (timed) and GET /metrics."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = conn_cls(parts.netloc, timeout=timeout_s)
        rtts_ms = []
        for _ in range(PINGS):
            start = time.perf_counter()
            conn.request("GET", parts.path.rstrip("/") + "/readyz")
            resp = conn.getresponse()
            body = resp.read()
            rtts_ms.append((time.perf_counter() - start) * 1000)
        conn.request("GET", parts.path.rstrip("/") + "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
        health = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise Unreachable(f"{url}: {exc}") from None
    return resp.status, health, metrics, rtts_ms


def summarize(source: str, status: int, health: dict, metrics_text: str, rtts_ms: list[float]) -> dict:
    import statistics

    m = parse_metrics(metrics_text)
    decisions = sorted(({"action": lab.get("action", ""), "reason": lab.get("reason", ""),
                         "policy": lab.get("policy", ""), "count": int(v)}
                        for lab, v in m.get("fairvisor_decisions_total", ()) if v),
                       key=lambda d: (-d["count"], d["action"], d["reason"], d["policy"]))
    count = value(m, "fairvisor_decision_duration_seconds_count")
    return {
        "source": source,
        "ready": status == 200,
        "health": health,
        "latency_ms": {"median": round(statistics.median(rtts_ms), 3), "max": round(max(rtts_ms), 3),
                       "samples": len(rtts_ms)},
        "decision_mean_us": round(value(m, "fairvisor_decision_duration_seconds_sum") / count * 1e6, 1)
        if count else None,
        "decisions": decisions,
        "counters": {
            "reloads_ok": int(value(m, "fairvisor_policy_reload_total", result="ok")),
            "reloads_refused": int(value(m, "fairvisor_policy_reload_total", result="refused")),
            "kill_switches_active": int(value(m, "fairvisor_kill_switch_active")),
            "would_reject": int(value(m, "fairvisor_would_reject_total")),
            "engine_unavailable": int(value(m, "fairvisor_engine_unavailable_total")),
            "decision_log_dropped": int(value(m, "fairvisor_decision_log_dropped_total")),
            "state_keys": int(value(m, "fairvisor_state_keys")),
        },
        # Fail-mode answers by why nginx could not reach the engine (served by the shim: via the edge only).
        "engine_unreachable": {lab.get("reason", ""): int(v) for lab, v in m.get("fairvisor_engine_unreachable_total", ())
                               if v},
        # The shim's pipe: open connections from nginx and how many frames one read carried.
        "shim": {
            "connections": int(value(m, "fairvisor_shim_connections")),
            "frames": int(value(m, "fairvisor_frames_total")),
            "frames_per_read": round(value(m, "fairvisor_frames_total") / reads, 2)
            if (reads := value(m, "fairvisor_frame_reads_total")) else None,
        },
    }


def _duration(seconds: int) -> str:
    h, rest = divmod(int(seconds), 3600)
    return f"{h}h {rest // 60:02d}m {rest % 60:02d}s"


def render(s: dict) -> str:
    h = s["health"]
    state = h.get("status", "?")
    lines = [f"{click.style('Fairvisor', bold=True)}  {paint(state)}  via {s['source']}"]
    if s["ready"]:
        lines.append(f"policy     version {h.get('policy_version')}  hash {h.get('policy_hash')}")
        lines.append(f"uptime     {_duration(h.get('uptime_s', 0))}")
        lines += [f"refused    {e}" for e in h.get("last_reload_errors", ())]
    else:
        lines.append(f"reason     {h.get('reason', '')}" + (f" ({h['cause']})" if h.get("cause") else ""))
        if h.get("detail"):
            lines.append(f"detail     {h['detail']}")
        lines += [f"error      {e}" for e in h.get("errors", ())]
    lat = s["latency_ms"]
    lines.append(f"latency    {lat['median']:.3f} ms median, {lat['max']:.3f} ms max "
                 f"({lat['samples']} health round trips)")
    if s["decision_mean_us"] is not None:
        lines.append(f"decide     {s['decision_mean_us']:.1f} us mean engine time per decision")
    c = s["counters"]
    lines.append(f"counters   reloads {c['reloads_ok']} ok / {c['reloads_refused']} refused, kill switches "
                 f"{c['kill_switches_active']}, would-reject {c['would_reject']}, engine unavailable "
                 f"{c['engine_unavailable']}, log dropped {c['decision_log_dropped']}, state keys {c['state_keys']}")
    if s["engine_unreachable"]:
        lines.append("nginx      could not reach the engine: " + ", ".join(
            f"{reason} {n}" for reason, n in sorted(s["engine_unreachable"].items())) + " fail-mode answers")
    sh = s["shim"]
    per_read = f", {sh['frames_per_read']:.2f} frames per read" if sh["frames_per_read"] is not None else ""
    lines.append(f"shim       {sh['connections']} connections, {sh['frames']} frames{per_read}")
    if s["decisions"]:
        lines += ["", table(["ACTION", "REASON", "POLICY", "COUNT"],
                            [[d["action"], d["reason"] or "-", d["policy"] or "-", d["count"]] for d in s["decisions"]],
                            colour_column=0)]
    top = h.get("top_rejected_keys") or []
    if top:
        lines += ["", table(["POLICY", "TOP REJECTED KEY", "REJECTIONS"],
                            [[t["policy"], t["key"], t["rejections"]] for t in top])]
    return "\n".join(lines)


@click.command("status")
@click.option("--url", default=None, envvar="FAIRVISOR_URL", show_envvar=True,
              help="Ask the edge over HTTP (/readyz, /metrics), e.g. http://127.0.0.1:8080.")
@click.option("--socket", "socket_path", default=None, envvar="FAIRVISOR_ENGINE_SOCKET", show_envvar=True,
              help="Ask the engine directly on its Unix socket [default: <state dir>/engine.sock].")
@click.option("--state-dir", default=None, envvar="FAIRVISOR_STATE_DIR", show_envvar=True,
              help="Where the default engine socket lives.")
@click.option("--timeout-s", default=2.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Per-call timeout, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON, for scripts.")
def status(url, socket_path, state_dir, timeout_s, as_json) -> None:
    """Show health, the policy version and hash, uptime, decisions by action and reason,
    top rejected keys and the engine round-trip latency.

    Exit status: 0 ready, 1 not ready (no valid policy), 4 ready but the policy file on disk
    was refused (the last good bundle is in force), 3 unreachable, 2 usage.
    """
    try:
        if url:
            s = summarize(url, *fetch_url(url, timeout_s))
        else:
            if socket_path is None:
                from pyengine.config import from_env

                socket_path = from_env({"FAIRVISOR_STATE_DIR": state_dir or ""}).engine_socket
            s = summarize(f"socket {os.path.abspath(socket_path)}", *fetch_socket(socket_path, timeout_s))
    except Unreachable as exc:
        if as_json:
            echo_json({"ready": False, "health": {"status": "unreachable"}, "error": str(exc)})
        click.echo(f"fairvisor status: unreachable: {exc}", err=True)
        raise SystemExit(EXIT_UNREACHABLE)
    if as_json:
        echo_json(s)
    else:
        click.echo(render(s))
    if not s["ready"]:
        raise SystemExit(EXIT_NOT_READY)
    raise SystemExit(EXIT_FILE_REFUSED if s["health"].get("last_reload_errors") else 0)
