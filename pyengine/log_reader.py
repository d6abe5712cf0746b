"""Reading the decision log back: its rotated files, whole or only their recent tail."""

import json
import os

from .decision_log import BACKUPS

TAIL_MAX_BYTES = 4 << 20  # what an admin request may read of the log (the engine's loop waits for it)


def log_files(path: str) -> list[str]:
    """The rotated files, oldest first, then the live one; only those that exist."""
    names = [f"{path}.{i}" for i in range(BACKUPS, 0, -1)] + [path]
    return [p for p in names if os.path.exists(p)]


def parse_line(line: str) -> dict | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None  # a line cut short by a crash mid-write: skip it
    return rec if isinstance(rec, dict) else None


def read_records(path: str, live_bytes: int | None = None):
    """Every record, oldest first; of the live file only its first `live_bytes` when given."""
    for name in log_files(path):
        with open(name, "rb") as f:
            data = f.read(live_bytes if name == path and live_bytes is not None else -1)
        for line in data.decode("utf-8", "replace").splitlines():
            rec = parse_line(line)
            if rec is not None:
                yield rec


def _tail(name: str, budget_bytes: int) -> tuple[bytes, bool]:
    """The last `budget_bytes` of a file, from a line start; and whether it is the whole file."""
    with open(name, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - budget_bytes)
        f.seek(start)
        data = f.read(size - start)
    if start:
        data = data[data.find(b"\n") + 1:] if b"\n" in data else b""
    return data, start == 0


def recent_records(path: str, since_ts: str = "", events: tuple = (), max_bytes: int = TAIL_MAX_BYTES) -> list:
    """Records with `ts` >= `since_ts` (RFC 3339 as logged: text order is time order) of the
    kinds in `events` (all when empty), oldest first, reading at most `max_bytes` from the
    newest end; the records past the budget are left out (the caller may say so)."""
    wanted = tuple(b'"%s"' % e.encode() for e in events)  # a cheap pre-filter; the event is checked once parsed
    out: list = []
    budget = max_bytes
    for name in reversed(log_files(path)):
        if budget <= 0:
            break
        try:
            data, whole = _tail(name, budget)
        except OSError:
            continue  # rotated away while we read: the next file holds its records
        budget -= len(data)
        lines = [line for line in data.split(b"\n") if line]
        first = parse_line(lines[0].decode("utf-8", "replace")) if lines else None
        oldest = str(first.get("ts", "")) if first is not None else ""
        batch = []
        for line in lines:
            if wanted and not any(w in line for w in wanted):
                continue  # most lines are not asked for: no JSON parse for them
            rec = parse_line(line.decode("utf-8", "replace"))
            if rec is not None and str(rec.get("ts", "")) >= since_ts and (not events or rec.get("event") in events):
                batch.append(rec)
        out[:0] = batch
        if not whole or oldest < since_ts:
            break  # older files only hold older records
    return out
