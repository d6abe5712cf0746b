"""The last accepted policy bundle and its version, kept in the state dir across restarts.

Why: a configured file refused at start (truncated, half-edited, an unsigned replacement)
would otherwise leave a restarted engine with no policy at all (503 no_policy_loaded for
every request). With this record the engine starts on the bundle it last enforced, and the
version floor it holds keeps ``bundle_version`` monotonic across restarts, so an older signed
bundle put back in place is refused after a restart as it is by a reload.

File: ``<state_dir>/policy/last-good.msgpack`` (0600, written atomically). The record names
the configured file it came from: a different FAIRVISOR_CONFIG_FILE is another deployment
and neither starts from it nor is held to its floor. With FAIRVISOR_BUNDLE_KEY set the record
carries the bundle's HMAC and is used only when it verifies, so write access to the state dir
alone cannot put an unsigned policy in force. Rollback on purpose: docs/operations.md.
"""

import logging
import os
import time

import msgspec

from ..errors import PolicyError
from ..signing import sign, verify
from .snapshot import RECORD_ERRORS, read_record, write_atomic

log = logging.getLogger("fairvisor.policy")

FORMAT_VERSION = 1
DIR_NAME = "policy"
FILE_NAME = "last-good.msgpack"


class LastGood(msgspec.Struct, forbid_unknown_fields=True):
    v: int  # FORMAT_VERSION
    config_path: str  # absolute path of the configured file it was accepted from
    bundle_version: int  # the highest version accepted from that file
    hash: str  # policy_hash of `bundle`
    accepted_at_s: float  # UTC epoch seconds
    bundle: bytes  # the bundle bytes as parsed (a first-line signature stripped)
    signature: str | None = None  # hmac-sha256 of `bundle` with FAIRVISOR_BUNDLE_KEY, when set


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(LastGood)


class LastGoodFile:
    """Reads and writes the record for one configured policy file."""

    def __init__(self, state_dir: str, config_path: str, bundle_key: str | None):
        self.path = os.path.join(state_dir, DIR_NAME, FILE_NAME)
        self.config_path = os.path.abspath(config_path)
        self.bundle_key = bundle_key
        self.record: LastGood | None = None  # what is on disk for this config path

    def load(self) -> LastGood | None:
        """Read the record; None when absent, for another config file, or unreadable (logged)."""
        try:
            rec = read_record(self.path, _decoder, FORMAT_VERSION)
        except RECORD_ERRORS as exc:
            log.error("last good policy record %s is unreadable (%s): no fallback and no version floor "
                      "until the next accepted bundle rewrites it", self.path, exc)
            return None
        if rec is None:
            return None
        if rec.config_path != self.config_path:
            log.warning("last good policy record %s is for %s, not %s: not used", self.path,
                        rec.config_path, self.config_path)
            return None
        self.record = rec
        return rec

    def bundle_bytes(self) -> bytes:
        """The recorded bundle, checked against FAIRVISOR_BUNDLE_KEY when one is set."""
        rec = self.record
        signed = (rec.signature.encode() + b"\n" + rec.bundle) if rec.signature else rec.bundle
        try:
            return verify(signed, self.path, self.bundle_key, FILE_NAME)
        except PolicyError:
            raise PolicyError([f"{FILE_NAME}: $: the last good bundle does not verify with "
                               f"FAIRVISOR_BUNDLE_KEY: not used"]) from None

    def save(self, bundle: bytes, version: int, bundle_hash: str, now_s: float) -> None:
        """Record a newly accepted bundle. A failed write is logged, never raised: the bundle is
        in force either way; only the fallback for the next start is older."""
        rec = LastGood(FORMAT_VERSION, self.config_path, version, bundle_hash, now_s, bundle,
                       sign(bundle, self.bundle_key) if self.bundle_key else None)
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            write_atomic(self.path, _encoder.encode(rec))
        except OSError as exc:
            log.error("cannot record the last good policy in %s (%s): a restart with a refused "
                      "policy file would start from version %s", self.path, exc,
                      self.record.bundle_version if self.record else None)
            return
        self.record = rec


def describe(rec: LastGood) -> str:
    return (f"version {rec.bundle_version} (hash {rec.hash}, accepted "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(rec.accepted_at_s))})")
