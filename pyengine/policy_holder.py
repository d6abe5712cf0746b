"""The policy in force: loading, verifying and watching the file, the version floor, and the last good bundle.

One owner for "which compiled bundle decides now": `bundle`, its `generation` (what the shim
caches its header list under) and the `hello_reply` that tells the shim what to send. Every
change (a file accepted, the last good bundle at start, runtime switches that read new
headers, the strict backend attached) recompiles here. A refused file never replaces the
bundle in force; the refusal is kept in `last_errors`, counted and logged.
"""

import logging
import os

from .errors import PolicyError
from .overlay.overrides import install as install_overrides
from .policy.compiler import CompiledBundle
from .policy.loader import load_bundle_bytes, policy_hash
from .protocol.messages import PROTOCOL_VERSION, HelloReply
from .decision.request import described_headers
from .signing import sig_path, verify
from .state.last_good import LastGoodFile, describe

log = logging.getLogger("fairvisor.engine")

MAX_BODY_BYTES = 1024 * 1024  # what the shim may send of a request body (bytes)


def _stat_of(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PolicyHolder:
    def __init__(self, settings, clock, store, metrics, decision_log, overlay, memo, tripped, in_force=None):
        self.settings = settings
        self.clock = clock
        self.store = store
        self.metrics = metrics
        self.decision_log = decision_log
        self.overlay = overlay  # runtime switches add headers; overrides go into each compile
        self.memo = memo
        self.tripped = tripped  # breaker keys not closed -> policy id; survives reloads
        self.in_force = in_force  # fn(), after each bundle put in force (the engine's gauges)
        self.strict = None  # pyengine.decision.strict.Strict in fleet mode (use_strict)
        self.bundle: CompiledBundle | None = None
        self.bundle_bytes: bytes | None = None  # the bundle in force as loaded (GET /v1/admin/bundle)
        # Random start: a restarted engine never reuses a generation a shim has cached.
        self.generation = int.from_bytes(os.urandom(3), "big") << 8
        self.last_errors: list[str] = []
        self.loaded_at_s: float | None = None
        self.last_reload: tuple[str | None, float | None] = (None, None)  # (result, when) for the status page
        self.last_good: LastGoodFile | None = None  # the last accepted bundle on disk (keep_last_good)
        self.policy_source: str | None = None  # "file", or "last_good" when the file was refused at start
        self._path: str | None = None
        self._stat = None
        self._reload_requested = False
        self.hello_reply = self._make_hello()

    def _make_hello(self) -> HelloReply:
        if self.bundle is not None:
            headers, needs_body = list(self.bundle.header_names), self.bundle.needs_body
        else:
            described = self.settings.mode == "decision_service"
            headers = list(described_headers(self.settings.request_headers)) if described else []
            needs_body = False
        return HelloReply(protocol_version=PROTOCOL_VERSION, generation=self.generation, headers=headers,
                          needs_body=needs_body, max_body_bytes=MAX_BODY_BYTES)

    def compile(self, source, hash_: str, new_generation: bool) -> None:
        """(Re)compile `source` as the bundle in force, runtime overrides installed."""
        generation = self.generation + 1 if new_generation else self.generation
        compiled = CompiledBundle(source, hash_, generation, self.store, self.settings, self.tripped,
                                  self.overlay.index.headers(), self.memo, self.strict)
        install_overrides(compiled, self.overlay.overrides.values(), self.store)
        self.bundle, self.generation = compiled, generation
        if new_generation:
            self.hello_reply = self._make_hello()

    def use_strict(self, strict) -> None:
        """Strict rules are decided by `strict` from now on; the bundle in force is recompiled."""
        self.strict = strict
        if self.bundle is not None:
            self.compile(self.bundle.source, self.bundle.hash, new_generation=False)

    # -- loading -------------------------------------------------------------------------

    def load_bytes(self, data: bytes, source: str) -> None:
        """Put a bundle in force, or raise PolicyError and keep the one in force."""
        try:
            bundle = load_bundle_bytes(data, source, self.clock.now_s())
            if self.bundle is not None and bundle.bundle_version <= self.bundle.version:
                raise PolicyError([f"{source}: $.bundle_version: must be greater than the version in force "
                                   f"({self.bundle.version}), got {bundle.bundle_version}"])
            self._check_floor(bundle.bundle_version, source)
        except PolicyError as exc:
            self._refused(exc.errors)
            raise
        self._put_in_force(bundle, data)
        self.policy_source = "file"
        if self.last_good is not None and (self.last_good.record is None
                                           or self.last_good.record.hash != self.bundle.hash):
            self.last_good.save(data, self.bundle.version, self.bundle.hash, self.clock.now_s())

    def _check_floor(self, version: int, source: str) -> None:
        """At start (nothing in force yet) the version floor is the last version accepted before
        the restart: an equal one is what a plain restart reads, an older one is refused as a
        reload would refuse it (docs/operations.md: rollback)."""
        rec = self.last_good.record if self.bundle is None and self.last_good is not None else None
        if rec is not None and version < rec.bundle_version:
            raise PolicyError([f"{source}: $.bundle_version: must be at least the last accepted version "
                               f"({rec.bundle_version}, recorded in {self.last_good.path}), got {version}"])

    def _put_in_force(self, bundle, data: bytes, result: str = "ok") -> None:
        self.compile(bundle, policy_hash(data), new_generation=True)
        compiled = self.bundle
        self.last_errors = []
        self.bundle_bytes = data
        self.metrics.reloads.inc((result,))
        self.loaded_at_s = self.clock.now_s()
        self.last_reload = (result, self.loaded_at_s)
        self.metrics.policy_info.values.clear()
        self.metrics.last_outcome.clear()  # rules of the old bundle
        self.metrics.policy_info.set((str(compiled.version), compiled.hash), 1)
        if self.in_force is not None:
            self.in_force()
        self.decision_log.reload(self.clock.now_s(), result, compiled.version, compiled.hash)
        log.info("policy in force: version=%s hash=%s policies=%d", compiled.version, compiled.hash,
                 len(compiled.policies))

    def load_file(self, path: str) -> None:
        self._path = path
        try:
            st = _stat_of(path)
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            errors = [f"{os.path.basename(path)}: $: cannot read: {exc.strerror}"]
            self._refused(errors)
            raise PolicyError(errors) from None
        # With a key, the .sig file is watched too: a new signature alone triggers a reload.
        self._stat = (st, _stat_of(sig_path(path)) if self.settings.bundle_key else None)
        try:
            data = verify(data, path, self.settings.bundle_key, os.path.basename(path))
        except PolicyError as exc:
            self._refused(exc.errors)
            raise
        if self.bundle is not None and policy_hash(data) == self.bundle.hash:
            # The bundle in force again (a SIGHUP or touch without an edit, or an edit undone):
            # nothing to reload and nothing refused, so the file on disk is no longer in error
            # (and, after a start on the last good bundle, the file is what is in force).
            self.last_errors = []
            self.policy_source = "file"
            log.info("policy unchanged: version=%s hash=%s", self.bundle.version, self.bundle.hash)
            return
        self.load_bytes(data, os.path.basename(path))

    def _refused(self, errors: list[str]) -> None:
        """A bundle was refused: the one in force stays; the refusal is counted and logged."""
        self.last_errors = errors
        self.metrics.reloads.inc(("refused",))
        self.last_reload = ("refused", self.clock.now_s())
        self.decision_log.reload(self.clock.now_s(), "refused", errors=errors)

    # -- watching --------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: re-read the file at the next watch."""
        self._reload_requested = True

    def _changed(self) -> bool:
        st = _stat_of(self._path)
        if st is None:
            return False  # a deleted file keeps the last good bundle in force
        return (st, _stat_of(sig_path(self._path)) if self.settings.bundle_key else None) != self._stat

    def watch(self) -> None:
        """Reload the file when it (or its signature) changed or a reload was requested."""
        if self._path and (self._reload_requested or self._changed()):
            self._reload_requested = False
            try:
                self.load_file(self._path)
            except PolicyError as exc:
                for line in exc.errors:
                    log.error("policy reload refused, keeping version %s: %s",
                              self.bundle.version if self.bundle else None, line)

    # -- the last good bundle --------------------------------------------------------------

    def keep_last_good(self, state_dir: str, config_path: str) -> None:
        """Keep the last bundle accepted from `config_path` in `state_dir` (pyengine.state.last_good)."""
        self.last_good = LastGoodFile(state_dir, config_path, self.settings.bundle_key)
        self.last_good.load()

    def start_from_last_good(self, refusal: list[str]) -> bool:
        """The configured file was refused at start: put the last good bundle in force instead,
        loudly (ERROR log, fairvisor_policy_reload_total{result="last_good"}, /readyz). The
        refusal stays in last_errors until a new file is accepted. False when there is none."""
        lg = self.last_good
        if lg is None or lg.record is None:
            return False
        try:
            data = lg.bundle_bytes()
            bundle = load_bundle_bytes(data, "last-good", self.clock.now_s())
        except PolicyError as exc:
            for line in exc.errors:
                log.error("last good policy not usable: %s", line)
            return False
        self._put_in_force(bundle, data, "last_good")
        self.policy_source = "last_good"
        self.last_errors = refusal
        log.error("policy file %s REFUSED at start: running on the last good bundle, %s, from %s; "
                  "fix the file (or see docs/operations.md, rollback)", lg.config_path, describe(lg.record), lg.path)
        return True
