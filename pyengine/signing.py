"""Signed bundles: HMAC-SHA256 over the bundle bytes, in `<file>.sig` or on the file's first line.

Signature text: ``hmac-sha256:<64 hex digits>`` (the prefix is optional, hex is case-insensitive).
First-line form: that text, a newline, then the JSON bundle; the MAC covers the bytes after
the newline. A first line is a signature only when it has exactly that shape, which a JSON
bundle's first line never has. With no key configured a first-line signature is stripped and not checked.
"""

import hashlib
import hmac
import os
import re

from .errors import PolicyError

PREFIX = b"hmac-sha256:"
_SIG_RE = re.compile(rb"^\s*(?:hmac-sha256:)?([0-9a-fA-F]{64})\s*$")


def sign(data: bytes, key: str) -> str:
    """The signature text for `data` (what `<file>.sig` or the first line should hold)."""
    return (PREFIX + hmac.new(key.encode(), data, hashlib.sha256).hexdigest().encode()).decode()


def sig_path(path: str) -> str:
    return path + ".sig"


def split_first_line(data: bytes) -> tuple[bytes | None, bytes]:
    """(signature line or None, bundle bytes)."""
    line, nl, rest = data.lstrip().partition(b"\n")
    if nl and _SIG_RE.match(line):
        return line.strip(), rest
    return None, data


def verify(data: bytes, path: str, key: str | None, source: str) -> bytes:
    """The bundle bytes to parse. With `key`, raise PolicyError unless a valid signature is in
    `<path>.sig` or on the first line. `source` names the file in error messages."""
    line, bundle = split_first_line(data)
    if not key:
        return bundle
    sig = line
    if sig is None:
        try:
            with open(sig_path(path), "rb") as f:
                sig = f.read()
        except FileNotFoundError:
            raise PolicyError([f"{source}: $: unsigned bundle refused: FAIRVISOR_BUNDLE_KEY is set, "
                               f"and neither {os.path.basename(sig_path(path))} nor a first-line "
                               f"signature exists"]) from None
        except OSError as exc:
            raise PolicyError([f"{source}: $: cannot read {os.path.basename(sig_path(path))}: "
                               f"{exc.strerror}"]) from None
    m = _SIG_RE.match(sig)
    if m is None:
        raise PolicyError([f"{source}: $: malformed signature (expected hmac-sha256:<64 hex digits>)"])
    expected = hmac.new(key.encode(), bundle, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m.group(1).decode().lower()):
        raise PolicyError([f"{source}: $: bad signature: the HMAC-SHA256 of the bundle with "
                           f"FAIRVISOR_BUNDLE_KEY does not match"])
    return bundle
