"""The one owner of Redis key names: every key Fairvisor reads or writes in the shared store.

A state key (pyengine.state.keys) becomes ``fv:{<tag>}<state key>``. The tag is 16 hex digits
of blake2b over the state key without its modifiers (``~`` shadow, ``D`` day), so that:

* every key is slot-safe in Redis Cluster: only the part in braces is hashed, and it is ours,
  whatever the client-supplied part of the state key contains (braces included);
* the keys one limiter must update together share a slot: an LLM rule's TPM bucket and its
  TPD counter (``D`` + key), and a key's shadow twin;
* different state keys spread over all slots (the tag is a hash, not a policy id), so one
  tenant's hot counter never makes a whole policy hot.

The tag cannot make two state keys equal: the full state key follows it verbatim.
Overlay records (kill switches, overrides) live under one fixed tag: they are few, read
together, and must change together.
"""

from hashlib import blake2b

from pyengine.state import keys

PREFIX = b"fv:"
# Kill-switch and override records of the runtime overlay (pyengine.overlay), one hash each.
OVERLAY_TAG = b"fv:{overlay}"


def tag_of(state_key: str) -> bytes:
    """The hash tag (without braces) shared by a state key, its day twin and its shadow twin."""
    base = keys.unmodified(state_key).encode("utf-8", "surrogatepass")
    return blake2b(base, digest_size=8).hexdigest().encode()


def remote_key(state_key: str) -> bytes:
    """The Redis key holding `state_key`'s shared value (a HASH: see pyengine.fleet.kinds)."""
    return b"%s{%s}%s" % (PREFIX, tag_of(state_key), state_key.encode("utf-8", "surrogatepass"))


def overlay_key(kind: str) -> bytes:
    """The HASH of the runtime overlay's records of one kind ("switches" or "overrides")."""
    return OVERLAY_TAG + b":" + kind.encode()


def overlay_version_key() -> bytes:
    """A counter bumped on every overlay write, which engines poll to notice a change."""
    return OVERLAY_TAG + b":version"
