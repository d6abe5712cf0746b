"""How a limit-key value is shown to people: raw, or a keyed hash with a per-install secret.

FAIRVISOR_LOG_KEYS=hashed (the default) shows HASH_HEX_CHARS of blake2b keyed with a secret of
this install, so the shown value follows one tenant over days (stable across restarts) but
cannot be recomputed from a guess: a plain sha256 of an IPv4 address or a tenant id is
brute-forced in seconds. The secret lives in ``<state_dir>/key-hash.secret`` (32 random bytes,
mode 0600, created on first use). Everything that shows a key (engine log lines, the decision
log, /readyz top_rejected_keys) goes through `KeyHasher.show`; `shown` is the process-wide one
the engine installs, for log lines written far from the engine object.
"""

import hashlib
import logging
import os

from .memo import table

log = logging.getLogger("fairvisor.keys")

SECRET_FILE = "key-hash.secret"
SECRET_BYTES = 32
HASH_HEX_CHARS = 16  # 64 bits: collisions negligible for display
# Hashes by raw key (the "key_hash" memo table, pyengine.memo): a reject flood repeats few keys.
# Long keys are not kept.
_CACHED_KEY_MAX_CHARS = 256


def load_secret(state_dir: str) -> bytes:
    """The install's secret, created (0600, never overwritten) when absent."""
    path = os.path.join(state_dir, SECRET_FILE)
    try:
        os.makedirs(state_dir, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(SECRET_BYTES))
            f.flush()
            os.fsync(f.fileno())
    with open(path, "rb") as f:
        secret = f.read()
    if len(secret) < SECRET_BYTES:  # a write cut short by a crash, or an empty file put there
        raise OSError(f"{path}: shorter than {SECRET_BYTES} bytes; remove it to make a new one")
    return secret


class KeyHasher:
    """show(raw) -> the text people see for a key value. The secret is read at the first hash."""

    def __init__(self, state_dir: str | None, hashed: bool = True, memo=None):
        self.state_dir = state_dir
        self.hashed = hashed
        self._secret: bytes | None = None
        self._cache = table("key_hash") if memo is None else memo  # the engine's memo table

    def secret(self) -> bytes:
        if self._secret is None:
            try:
                if self.state_dir is None:
                    raise OSError("no state dir")
                self._secret = load_secret(self.state_dir)
            except OSError as exc:
                # Still keyed, so still not guessable; only not stable across restarts.
                log.error("key hash secret unavailable (%s): hashed keys change at every restart", exc)
                self._secret = os.urandom(SECRET_BYTES)
        return self._secret

    def digest(self, raw: str) -> str:
        h = self._cache.get(raw)
        if h is None:
            h = hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), key=self.secret(),
                                digest_size=HASH_HEX_CHARS // 2).hexdigest()
            if len(raw) <= _CACHED_KEY_MAX_CHARS:
                self._cache.remember(raw, h)
        return h

    def show(self, raw: str) -> str:
        return self.digest(raw) if self.hashed and raw else raw


_installed = KeyHasher(None)  # until an engine installs its own: hashed, with a per-process secret


def install(hasher: KeyHasher) -> None:
    global _installed
    _installed = hasher


def shown(raw: str) -> str:
    """A key value as log lines show it, with the installed engine's mode and secret."""
    return _installed.show(raw)
