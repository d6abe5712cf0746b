"""`fairvisor logs`: read, filter and follow the engine's decision log (JSON lines, rotated to .1 .. .3)."""

import heapq
import json
import os
import queue
import threading
import time

import click

from pyengine.log_reader import log_files, parse_line, read_records  # noqa: F401 - also used by tests

from .output import paint

FOLLOW_POLL_S = 0.2  # how often --follow looks for new lines


def follow_records(path: str, offset: int | None = None, poll_s: float = FOLLOW_POLL_S, sleep=time.sleep,
                   stop=lambda: False):
    """Records appended to `path` after byte `offset` (default: its current end), across
    rotations (like `tail -F`): the old file is read to its end, then the new one from its
    start. Waits for the file to appear when it does not exist yet.
    """
    f, ino, partial = None, None, b""
    try:
        if os.path.exists(path):
            f = open(path, "rb")
            f.seek(0, os.SEEK_END) if offset is None else f.seek(offset)
            ino = os.fstat(f.fileno()).st_ino
        while not stop():
            if f is not None:
                chunk = f.read()
                if chunk:
                    partial += chunk  # bytes: a UTF-8 character may straddle two reads
                    *lines, partial = partial.split(b"\n")
                    for line in lines:
                        rec = parse_line(line.decode("utf-8", "replace"))
                        if rec is not None:
                            yield rec
                    continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and (f is None or st.st_ino != ino or st.st_size < f.tell()):
                if f is not None:
                    f.close()
                f = open(path, "rb")
                ino, partial = os.fstat(f.fileno()).st_ino, b""
                continue
            sleep(poll_s)
    finally:
        if f is not None:
            f.close()


def follow_all(paths: list[str], offsets: list[int]):
    """follow_records of every engine's log (FAIRVISOR_ENGINES), records in the order they are read."""
    if len(paths) == 1:
        yield from follow_records(paths[0], offsets[0])
        return
    found: queue.Queue = queue.Queue()
    for path, offset in zip(paths, offsets):
        threading.Thread(target=lambda p=path, o=offset: [found.put(r) for r in follow_records(p, o)],
                         daemon=True).start()
    while True:
        yield found.get()


def _live_bytes(path: str) -> int:
    try:
        return os.path.getsize(path)  # follow from here: no record shown twice or lost
    except FileNotFoundError:
        return 0


def format_record(rec: dict) -> str:
    event = rec.get("event", "?")
    parts = [rec.get("ts", "-"), paint(f"{event:<12}", event), rec.get("reason", "")]
    if rec.get("policy"):
        parts.append(f"{rec['policy']}/{rec['rule']}" if rec.get("rule") else rec["policy"])
    for field, label in (("key", "key"), ("status", "status"), ("retry_after_s", "retry_s"),
                         ("delay_ms", "delay_ms"), ("tokens", "tokens"), ("cost_micros", "cost_micros"),
                         ("version", "version"), ("hash", "hash"), ("request_id", "id"),
                         ("reservation_id", "reservation"), ("detail", "detail")):
        if rec.get(field):
            parts.append(f"{label}={rec[field]}")
    parts += [f"error={e}" for e in rec.get("errors", ())]
    return "  ".join(p for p in parts if p)


def _wanted(rec: dict, reasons, policies, events) -> bool:
    return ((not reasons or rec.get("reason") in reasons) and (not policies or rec.get("policy") in policies)
            and (not events or rec.get("event") in events))


@click.command("logs")
@click.option("--file", "path", default=None, envvar="FAIRVISOR_DECISION_LOG", show_envvar=True,
              help="Decision log file [default: <state dir>/decisions.jsonl].")
@click.option("--state-dir", default=None, envvar="FAIRVISOR_STATE_DIR", show_envvar=True,
              help="Where the default decision log lives.")
@click.option("--reason", "reasons", multiple=True, help="Only this reason code (repeatable).")
@click.option("--policy", "policies", multiple=True, help="Only this policy id (repeatable).")
@click.option("--event", "events", multiple=True,
              type=click.Choice(["reject", "warn", "throttle", "would_reject", "reload", "cutoff"]),
              help="Only this kind of record (repeatable).")
@click.option("-n", "--lines", "last", type=click.IntRange(min=0), default=None,
              help="Show only the last N matching records [all; 10 with --follow].")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records as the engine writes them.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as stored.")
def logs(path, state_dir, reasons, policies, events, last, follow, as_json) -> None:
    """Show the decision log: rejections, warnings, throttles, shadow would-rejects, reloads
    and stream cutoffs. The engine writes it about every 0.1 s.

    Exit status: 0, or 1 when the log does not exist (without --follow).
    """
    if path is None:
        from pyengine.config import from_env

        path = from_env({"FAIRVISOR_STATE_DIR": state_dir or os.environ.get("FAIRVISOR_STATE_DIR", "")}).decision_log
    if path == "off":
        raise click.UsageError("the decision log is off (FAIRVISOR_DECISION_LOG=off)")
    show = (lambda rec: click.echo(json.dumps(rec, separators=(",", ":")))) if as_json else \
        (lambda rec: click.echo(format_record(rec)))
    # With FAIRVISOR_ENGINES > 1 engines 1.. write logs of their own next to it (decisions-1.jsonl, ...).
    from pyengine.engine_paths import sibling_logs

    paths = [path, *sibling_logs(path)]
    if not follow and not any(log_files(p) for p in paths):
        click.echo(f"fairvisor logs: no decision log at {path}", err=True)
        raise SystemExit(1)
    if last is None and follow:
        last = 10
    offsets = [_live_bytes(p) for p in paths]
    # Each file is in time order ("ts", RFC 3339: text order is time order): merged, they are too.
    records = heapq.merge(*(read_records(p, o) for p, o in zip(paths, offsets)), key=lambda r: str(r.get("ts", "")))
    matching = [r for r in records if _wanted(r, reasons, policies, events)]
    for rec in matching[-last:] if last else ([] if last == 0 else matching):
        show(rec)
    if not follow:
        return
    try:
        for rec in follow_all(paths, offsets):
            if _wanted(rec, reasons, policies, events):
                show(rec)
    except KeyboardInterrupt:
        pass
