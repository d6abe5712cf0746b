"""The runtime kill switches and overrides in force, bounded, kept in the state dir across restarts.

File: ``<state_dir>/admin/overlay.msgpack`` (0600), rewritten whole and atomically
(pyengine.state.snapshot.write_atomic) before a change is answered, so an answered change
survives a crash. A change whose write fails is refused and not applied. An unreadable file is
renamed aside and logged; the engine starts with none (the bundle still applies).
Expired entries are dropped at load and by `expire` (the engine's upkeep, every second).
"""

import logging
import os
import time

import msgspec

from ..state.snapshot import RECORD_ERRORS, read_record, write_atomic
from .model import OverrideRecord, SwitchRecord
from .switches import SwitchIndex

log = logging.getLogger("fairvisor.admin")

FORMAT_VERSION = 1
DIR_NAME = "admin"
FILE_NAME = "overlay.msgpack"
MAX_SWITCHES = 10_000
MAX_OVERRIDES = 10_000
# Distinct scope keys among runtime switches: each is one lookup per request and may add a
# header the shim sends, so they stay few however many switches there are.
MAX_SWITCH_SCOPE_KEYS = 32


class OverlayFile(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    kill_switches: list[SwitchRecord] = []
    overrides: list[OverrideRecord] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(OverlayFile)


SWITCHES, OVERRIDES = "switches", "overrides"  # the two record kinds (fleet: one store hash each)


class Full(Exception):
    """The bound on runtime switches or overrides is reached."""


class Overlay:
    """Records by id, plus the kill-switch index the pipeline reads."""

    def __init__(self, trusted_proxies, memo=None):
        self.switches: dict[str, SwitchRecord] = {}
        self.overrides: dict[str, OverrideRecord] = {}
        self.index = SwitchIndex(trusted_proxies, memo)
        self.path: str | None = None  # None: in memory only (no durable state dir)
        # fn(kind, record, removed) after each answered add/remove: fleet mode publishes it
        # (pyengine.fleet.overlay_sync); kind is "switches" or "overrides".
        self.on_change = None

    # -- persistence ------------------------------------------------------------------

    def enable(self, state_dir: str, now_s: float) -> int:
        """Read the file (once, at start) and keep it written from now on; returns entries kept."""
        self.path = os.path.join(state_dir, DIR_NAME, FILE_NAME)
        try:
            data = read_record(self.path, _decoder, FORMAT_VERSION)
        except RECORD_ERRORS as exc:
            aside = f"{self.path}.corrupt-{int(time.time())}"
            log.error("runtime kill switches and overrides in %s are unreadable (%s): starting without "
                      "them; the file is kept as %s", self.path, exc, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return 0
        if data is None:
            return 0
        for rec in data.kill_switches:
            if rec.expires_at_s is None or rec.expires_at_s > now_s:
                self._put_switch(rec)
        for rec in data.overrides:
            if rec.expires_at_s > now_s:
                self.overrides[rec.id] = rec
        return len(self.switches) + len(self.overrides)

    def _save(self, switches, overrides) -> None:
        """Write the would-be state; OSError when it cannot be kept (the change is then refused)."""
        if self.path is None:
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        write_atomic(self.path, _encoder.encode(OverlayFile(FORMAT_VERSION, list(switches), list(overrides))))

    # -- changes ----------------------------------------------------------------------

    def _put_switch(self, rec: SwitchRecord) -> None:
        self.switches[rec.id] = rec
        self.index.add(rec)

    def add_switch(self, rec: SwitchRecord) -> None:
        if len(self.switches) >= MAX_SWITCHES:
            raise Full(f"at most {MAX_SWITCHES} runtime kill switches; remove some first")
        if rec.scope_key not in self.index.by_key and len(self.index.by_key) >= MAX_SWITCH_SCOPE_KEYS:
            raise Full(f"runtime kill switches use at most {MAX_SWITCH_SCOPE_KEYS} distinct scope keys; "
                       f"{rec.scope_key} would be one more")
        self._save([*self.switches.values(), rec], self.overrides.values())
        self._put_switch(rec)
        if self.on_change is not None:
            self.on_change(SWITCHES, rec, False)

    def remove_switch(self, switch_id: str) -> SwitchRecord | None:
        rec = self.switches.get(switch_id)
        if rec is None:
            return None
        self._save([r for r in self.switches.values() if r.id != switch_id], self.overrides.values())
        del self.switches[switch_id]
        self.index.remove(rec)
        if self.on_change is not None:
            self.on_change(SWITCHES, rec, True)
        return rec

    def add_override(self, rec: OverrideRecord) -> None:
        if len(self.overrides) >= MAX_OVERRIDES:
            raise Full(f"at most {MAX_OVERRIDES} limit overrides; remove some first")
        self._save(self.switches.values(), [*self.overrides.values(), rec])
        self.overrides[rec.id] = rec
        if self.on_change is not None:
            self.on_change(OVERRIDES, rec, False)

    def remove_override(self, override_id: str) -> OverrideRecord | None:
        rec = self.overrides.get(override_id)
        if rec is None:
            return None
        self._save(self.switches.values(), [r for r in self.overrides.values() if r.id != override_id])
        del self.overrides[override_id]
        if self.on_change is not None:
            self.on_change(OVERRIDES, rec, True)
        return rec

    def expire(self, now_s: float) -> tuple[list[SwitchRecord], list[OverrideRecord]]:
        """Drop what has expired (it stopped acting at its expiry already); returns what went."""
        gone_s = [r for r in self.switches.values() if r.expires_at_s is not None and r.expires_at_s <= now_s]
        gone_o = [r for r in self.overrides.values() if r.expires_at_s <= now_s]
        if not gone_s and not gone_o:
            return [], []
        for rec in gone_s:
            del self.switches[rec.id]
            self.index.remove(rec)
        for rec in gone_o:
            del self.overrides[rec.id]
        try:
            self._save(self.switches.values(), self.overrides.values())
        except OSError as exc:  # they are expired either way; a restart drops them at load
            log.error("cannot rewrite %s after expiry: %s", self.path, exc)
        return gone_s, gone_o

    def replace(self, switches: list[SwitchRecord], overrides: list[OverrideRecord]) -> bool:
        """Make the records exactly these (another engine's changes, read from the shared store),
        bounds aside: they were checked where they were made. True when anything changed."""
        if {r.id: r for r in switches} == self.switches and {r.id: r for r in overrides} == self.overrides:
            return False
        self._save(switches, overrides)
        for rec in list(self.switches.values()):
            self.index.remove(rec)
        self.switches = {}
        for rec in switches:
            self._put_switch(rec)
        self.overrides = {r.id: r for r in overrides}
        return True

    def active_switches(self, now_s: float) -> int:
        return sum(1 for r in self.switches.values() if r.expires_at_s is None or r.expires_at_s > now_s)
