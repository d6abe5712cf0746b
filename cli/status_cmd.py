"""`fairvisor status`: health, policy in force, uptime, decision counters, top rejected keys, latency."""

import json
import os
import re
import time

import click

from .admin_client import DEFAULT_ADMIN_URL, auth_headers
from .output import echo_json, paint, table

PINGS = 5  # Health round trips timed for the latency figure
EXIT_NOT_READY = 1
EXIT_FILE_REFUSED = 4  # ready on the last good bundle, but the policy file on disk was refused
EXIT_UNREACHABLE = 3
ENGINE_DOWN_MARK = "# fairvisor engine unavailable"  # the first line of the shim's /metrics when it cannot ask
EXIT_UNAUTHORIZED = 5  # the admin listener wants FAIRVISOR_ADMIN_TOKEN (absent or wrong)
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Unreachable(Exception):
    """Neither the engine socket nor the edge URL answered."""


class Unauthorized(Exception):
    """The admin listener answered 401: FAIRVISOR_ADMIN_TOKEN is missing or wrong."""


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
    from pyengine.protocol.messages import Admin, Health

    auth = auth_headers().get("Authorization", "").encode() or None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            rtts_ms = []
            for _ in range(PINGS):  # the public probe: the plain round trip
                start = time.perf_counter()
                _call(sock, Health())
                rtts_ms.append((time.perf_counter() - start) * 1000)
            # The socket is the admin listener's own way in: the same endpoints, the same token.
            health = _call(sock, Admin(uri=b"/readyz", method=b"GET", authorization=auth))
            metrics = _call(sock, Admin(uri=b"/metrics", method=b"GET", authorization=auth))
    except (OSError, ProtocolError) as exc:
        raise Unreachable(f"engine socket {path}: {exc}") from None
    if 401 in (health.status, metrics.status):
        raise Unauthorized(f"engine socket {path}")
    return health.status, json.loads(health.body), metrics.body, rtts_ms


def fetch_url(url: str, timeout_s: float) -> tuple[int, dict, str, list[float]]:
    """The same through the admin listener: GET /readyz (timed) and GET /metrics."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    headers = auth_headers()
    try:
        conn = conn_cls(parts.netloc, timeout=timeout_s)
        rtts_ms = []
        for _ in range(PINGS):
            start = time.perf_counter()
            conn.request("GET", parts.path.rstrip("/") + "/readyz", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            rtts_ms.append((time.perf_counter() - start) * 1000)
        conn.request("GET", parts.path.rstrip("/") + "/metrics", headers=headers)
        scrape = conn.getresponse()
        metrics = scrape.read().decode()
        conn.close()
        if 401 in (resp.status, scrape.status):
            raise Unauthorized(url)
        # 503 with the shim's own body: the admin listener, with the engine unreachable from nginx
        # (its cause is in /readyz and fairvisor_engine_unreachable_total): not-ready, not the wrong URL.
        shim_down = scrape.status == 503 and metrics.startswith(ENGINE_DOWN_MARK)
        if scrape.status != 200 and not shim_down:
            raise Unreachable(f"{url}: GET /metrics answered {scrape.status}: is this the admin listener "
                              "(FAIRVISOR_ADMIN_LISTEN), not the public one?")
        health = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise Unreachable(f"{url}: {exc}") from None
    return resp.status, health, metrics, rtts_ms


def summarize(source: str, status: int, health: dict, metrics_text: str, rtts_ms: list[float]) -> dict:
    import statistics

    m = parse_metrics(metrics_text)
    # With FAIRVISOR_ENGINES > 1 each engine has its own series (label `engine`): summed here.
    counts: dict[tuple, float] = {}
    for lab, v in m.get("fairvisor_decisions_total", ()):
        row = (lab.get("action", ""), lab.get("reason", ""), lab.get("policy", ""))
        counts[row] = counts.get(row, 0) + v
    decisions = sorted(({"action": a, "reason": r, "policy": p, "count": int(v)}
                        for (a, r, p), v in counts.items() if v),
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
            # Every engine holds the same switches: the most any engine reports, not their sum.
            "kill_switches_active": int(max((v for _, v in m.get("fairvisor_kill_switch_active", ())), default=0)),
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
@click.option("--admin-url", default=None, envvar="FAIRVISOR_ADMIN_URL", show_envvar=True,
              help=f"The edge's admin listener (/readyz, /metrics) [default: {DEFAULT_ADMIN_URL}]. "
                   "Sends FAIRVISOR_ADMIN_TOKEN as a Bearer token when it is set.")
@click.option("--url", default=None, hidden=True, help="Older name of --admin-url.")
@click.option("--socket", "socket_path", default=None, envvar="FAIRVISOR_ENGINE_SOCKET", show_envvar=True,
              help="Ask the engine directly on its Unix socket instead (the same endpoints and token).")
@click.option("--state-dir", default=None,  # no envvar: FAIRVISOR_STATE_DIR alone keeps the admin URL
              help="Ask on <state dir>/engine.sock instead.")
@click.option("--timeout-s", default=2.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Per-call timeout, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON, for scripts.")
def status(admin_url, url, socket_path, state_dir, timeout_s, as_json) -> None:
    """Show health, the policy version and hash, uptime, decisions by action and reason,
    top rejected keys and the engine round-trip latency, from the admin listener.

    Exit status: 0 ready, 1 not ready (no valid policy), 4 ready but the policy file on disk
    was refused (the last good bundle is in force), 3 unreachable, 5 the admin listener
    refused FAIRVISOR_ADMIN_TOKEN (absent or wrong), 2 usage.
    """
    admin_url = admin_url or url
    try:
        if admin_url or (socket_path is None and state_dir is None):
            admin_url = admin_url or DEFAULT_ADMIN_URL
            s = summarize(admin_url, *fetch_url(admin_url, timeout_s))
        else:
            if socket_path is None:
                from pyengine.config import from_env

                socket_path = from_env({"FAIRVISOR_STATE_DIR": state_dir or ""}).engine_socket
            s = summarize(f"socket {os.path.abspath(socket_path)}", *fetch_socket(socket_path, timeout_s))
    except Unauthorized as exc:
        if as_json:
            echo_json({"ready": False, "health": {"status": "unauthorized"}, "error": str(exc)})
        click.echo(f"fairvisor status: {exc}: 401, the admin listener needs FAIRVISOR_ADMIN_TOKEN "
                   "(absent or wrong)", err=True)
        raise SystemExit(EXIT_UNAUTHORIZED)
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
