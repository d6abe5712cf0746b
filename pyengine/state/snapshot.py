"""Durable state: the store persisted to FAIRVISOR_STATE_DIR as atomically renamed msgpack files.

Layout of `<state_dir>/state/`:
  * ``base.msgpack``: every entry as of sequence number `seq` (expired ones are dropped at restore);
  * ``delta-<seq>.msgpack``: the entries written, deleted or swept since the previous file
    (a deleted one is stored as nil).
Every file is written to ``<name>.tmp``, fsynced and renamed, so a reader sees a whole file
or none. Restore = base, then the deltas with a higher seq in order. A new base is written
every COMPACT_EVERY_S (and after any failed write, which may have lost a delta); it then
deletes the files it covers. Restore never fails on what it finds: a file that does not
decode, or a name flush would not write, is renamed ``<name>.corrupt-<ts>``; an entry of no
valid value shape is skipped; each is logged and counted, and the engine starts with the rest.
A failed write removes its ``.tmp``; leftover ones (a crash mid-write) are deleted at start.

Threads: encoding runs on the event loop (it must see one consistent store); writing and
fsync run on one background thread, one file at a time. A flush while the previous write is
still running is skipped: the dirty keys stay in the store for the next one.
"""

import concurrent.futures
import errno
import fcntl
import logging
import math
import os
import re
import time
from typing import Any

import msgspec

log = logging.getLogger("fairvisor.state")

FORMAT_VERSION = 1
BASE_NAME = "base.msgpack"
DELTA_PREFIX = "delta-"
COMPACT_EVERY_S = 60.0
MAX_DELTAS = 300  # a base is due earlier when this many deltas pile up
# A delta's name: exactly what flush writes (int() alone would take "1_0", " 1" or other digits).
_DELTA_RE = re.compile(r"delta-([0-9]{1,19})\.msgpack")
_ASIDE_MARK = ".corrupt-"


class SnapshotFile(msgspec.Struct, forbid_unknown_fields=True):
    v: int  # FORMAT_VERSION
    kind: str  # "base" | "delta"
    seq: int  # strictly increasing per state dir
    written_at_s: float  # UTC epoch seconds (engine clock) when encoded
    # state key -> value (pyengine.state.store: a float, or a tuple as an array; nil = deleted).
    # Read as Any and checked one by one (_checked), so one bad entry costs only itself.
    entries: dict[str, Any]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SnapshotFile)
_BAD = object()  # _checked's answer for a value of no valid shape


def _checked(value):
    """A stored value as the store holds it, None for a deletion, or _BAD.

    Valid: a finite number (the expiry), or a non-empty array of finite numbers whose item 0
    is the expiry. Anything else (an empty array: a crash on value[0]; a string, a map, a bool,
    NaN, an infinite expiry) never reaches the store."""
    if value is None:
        return None
    c = value.__class__
    if c is float or c is int:
        return float(value) if math.isfinite(value) else _BAD
    if c is not list or not value:
        return _BAD
    for x in value:
        if (x.__class__ is not float and x.__class__ is not int) or not math.isfinite(x):
            return _BAD
    return tuple(value)


def _live(value, now_s: float) -> bool:
    return value is not None and (value if value.__class__ is float else value[0]) > now_s


def delta_seq(name: str) -> int | None:
    """The seq of a delta file name, or None when `name` is not one."""
    m = _DELTA_RE.fullmatch(name)
    return int(m.group(1)) if m else None


RECORD_ERRORS = (OSError, msgspec.DecodeError, msgspec.ValidationError)  # what read_record raises


def read_record(path: str, decoder, format_version: int):
    """The record `write_atomic` left at `path`, decoded; None when there is none. Raises one of
    RECORD_ERRORS when it cannot be read or carries another format version (field `v`)."""
    try:
        with open(path, "rb") as f:
            rec = decoder.decode(f.read())
    except FileNotFoundError:
        return None
    if rec.v != format_version:
        raise msgspec.ValidationError(f"unsupported format v={rec.v}")
    return rec


def write_atomic(path: str, data: bytes) -> None:
    """Write `path` as a whole or not at all (tmp, fsync, rename; 0600). A failed write removes
    its tmp file before raising: a full disk must not fill up further with half files."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Snapshots:
    """Persists a MemoryStore(track_dirty=True). All methods are called from the event loop."""

    def __init__(self, state_dir: str, store, metrics=None):
        self.dir = os.path.join(state_dir, "state")
        self.store = store
        self.metrics = metrics
        self.seq = 0
        self.enabled = True
        self._base_due_s = 0.0  # 0: a base is due at the next flush
        self._deltas = 0
        self._job: concurrent.futures.Future | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairvisor-state")
        self._failing = False
        self._lock_fd: int | None = None
        os.makedirs(self.dir, exist_ok=True)
        self._lock()

    def _lock(self) -> None:
        # Two engines on one state dir would overwrite each other's files: the second one runs
        # without durable state, loudly. The lock dies with the process, kill -9 included.
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.enabled = False
            log.error("state dir %s is locked by another engine: durable state is OFF for this one", self.dir)
            return
        self._lock_fd = fd

    # -- restore -------------------------------------------------------------------------

    def _set_aside(self, path: str, why: str) -> None:
        aside = f"{path}{_ASIDE_MARK}{int(time.time())}"
        try:
            os.replace(path, aside)
        except OSError as exc:
            aside = f"(not renamed: {exc.strerror})"
        log.error("state snapshot %s is corrupt (%s): set aside as %s; starting without it",
                  path, why, os.path.basename(aside))

    def _read(self, name: str) -> SnapshotFile | None:
        path = os.path.join(self.dir, name)
        try:
            with open(path, "rb") as f:
                snap = _decoder.decode(f.read())
            if snap.v != FORMAT_VERSION or snap.kind not in ("base", "delta"):
                raise msgspec.ValidationError(f"unsupported format v={snap.v} kind={snap.kind!r}")
            return snap
        except (msgspec.DecodeError, msgspec.ValidationError, OSError) as exc:
            self._set_aside(path, str(exc))
            self._count("corrupt")
            return None

    def _skipped(self, reason: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.state_restore_skipped.inc((reason,), n)

    def _scan(self) -> tuple[bool, list[tuple[int, str]]]:
        """(base present, [(seq, delta name)] in seq order); removes leftover *.tmp files and
        sets aside files that look like ours but are not named as flush names them."""
        base, deltas = False, []
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if name.endswith(".tmp"):  # a write cut short by a crash; never renamed, never read
                try:
                    os.unlink(path)
                except OSError as exc:
                    log.error("cannot remove the leftover %s: %s", path, exc.strerror)
                continue
            if name == BASE_NAME:
                base = True
                continue
            seq = delta_seq(name)
            if seq is not None:
                deltas.append((seq, name))
            elif _ASIDE_MARK not in name and (name.startswith(DELTA_PREFIX) or name.endswith(".msgpack")):
                self._set_aside(path, "not a name the engine writes")
                self._skipped("stray_name")
        deltas.sort()
        return base, deltas

    def restore(self, now_s: float) -> int:
        """Load base + newer deltas into the store; returns the live entries restored. What
        cannot be read is skipped, set aside and counted, never fatal: a crash here would be a
        restart loop (and fail-open) for as long as the file stays."""
        if not self.enabled:
            return 0
        has_base, deltas = self._scan()
        data: dict = {}
        bad = 0
        base_seq = -1
        files = [(None, BASE_NAME)] if has_base else []
        for seq, name in files + deltas:
            if seq is not None and seq <= base_seq:
                continue
            snap = self._read(name)
            if snap is None:
                continue
            if seq is None:
                base_seq = snap.seq
            for key, value in snap.entries.items():
                value = _checked(value)
                if value is _BAD:
                    bad += 1
                else:
                    data[key] = value
        if bad:
            log.error("state restore from %s skipped %d entries of no valid shape", self.dir, bad)
            self._skipped("bad_value", bad)
        self.seq = max([base_seq] + [s for s, _ in deltas]) + 1
        put = self.store.put
        restored = 0
        for key, value in data.items():
            if _live(value, now_s):
                put(key, value)
                restored += 1
        self.store.sweep(now_s, 0)  # index the bulk-loaded keys (see pyengine.state.store)
        self.store.take_dirty()  # already on disk
        self._base_due_s = 0.0  # compact what was read into one base at the first flush
        log.info("state restored from %s: %d live entries (base seq %d, %d deltas)",
                 self.dir, restored, base_seq, sum(1 for s, _ in deltas if s > base_seq))
        return restored

    # -- write ---------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        if self.metrics is not None:
            self.metrics.state_snapshot_errors.inc((what,))

    def _collect(self) -> bool:
        """Look at the finished write, if any. False while one is still running."""
        job = self._job
        if job is None:
            return True
        if not job.done():
            return False
        self._job = None
        exc = job.exception()
        if exc is None:
            if self._failing:
                log.warning("state snapshots are written again to %s", self.dir)
            self._failing = False
            return True
        code = errno.errorcode.get(getattr(exc, "errno", None) or 0, type(exc).__name__)
        self._count(code)
        if not self._failing:  # one line per outage, not one per second
            log.error("state snapshot write to %s FAILED (%s): counters are only in memory until it "
                      "works again; a kill now loses them", self.dir, exc)
        self._failing = True
        self._base_due_s = 0.0  # the lost file may have held the only copy of some keys
        return True

    def flush(self, now_s: float) -> bool:
        """Write what changed since the last flush (or a full base when due). Never blocks on
        I/O; returns False when skipped because the previous write is still running."""
        if not self.enabled or not self._collect():
            return False
        store = self.store
        dirty = store.take_dirty()
        if self._base_due_s <= now_s or self._deltas >= MAX_DELTAS:
            # The whole dict, encoded in C without a Python-level pass (expired ones included).
            snap = SnapshotFile(FORMAT_VERSION, "base", self.seq, now_s, store.as_dict())
            self._job = self._pool.submit(self._write_base, _encoder.encode(snap), self.seq)
            self._base_due_s = now_s + COMPACT_EVERY_S
            self._deltas = 0
        elif dirty:
            get = store.get
            entries = {}
            for k in dirty:
                v = get(k)
                entries[k] = v if _live(v, now_s) else None
            snap = SnapshotFile(FORMAT_VERSION, "delta", self.seq, now_s, entries)
            self._job = self._pool.submit(write_atomic, os.path.join(self.dir, f"{DELTA_PREFIX}{self.seq:012d}.msgpack"),
                                          _encoder.encode(snap))
            self._deltas += 1
        else:
            return True
        self.seq += 1
        return True

    def _write_base(self, data: bytes, seq: int) -> None:
        write_atomic(os.path.join(self.dir, BASE_NAME), data)
        for name in os.listdir(self.dir):  # deltas the base covers
            covered = delta_seq(name)
            if covered is not None and covered <= seq:
                os.unlink(os.path.join(self.dir, name))

    def wait(self) -> None:
        """Block until the running write (if any) finished, and account for it."""
        if self._job is not None:
            concurrent.futures.wait([self._job])
        self._collect()

    def close(self, now_s: float) -> None:
        """At shutdown: wait for the running write, then write a final base."""
        if not self.enabled:
            return
        self.wait()
        self._base_due_s = 0.0
        self.flush(now_s)
        self.wait()
        self._pool.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.enabled = False
