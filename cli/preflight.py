"""`fairvisor run`'s policy check before it starts anything (the listen addresses: cli/listen_check.py)."""

from __future__ import annotations

import os
import time

import click

from pyengine.errors import PolicyError
from pyengine.policy.loader import load_bundle_bytes
from pyengine.signing import verify


class Refused(click.ClickException):
    """What cannot work, said before anything started (exit 1)."""


def check_policy(settings) -> None:
    """--config must load exactly as the engine would load it (signature included): else exit 1.

    Why here and not in the engine: an engine started on a bad file serves 503 no_policy_loaded
    to everything (behind auth_request, a full outage); the engine keeps that behaviour for a
    file that breaks later, where its last good bundle goes on enforcing.
    """
    path = settings.config_file
    if path is None:
        return
    source = os.path.basename(path) or path
    try:
        with open(path, "rb") as f:
            data = f.read()
        load_bundle_bytes(verify(data, path, settings.bundle_key, source), source, time.time())
    except OSError as exc:
        raise Refused(f"refusing to start: --config {path}: cannot read: {exc.strerror}") from None
    except PolicyError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        n = len(exc.errors)
        raise Refused(f"refusing to start: --config {path} is not a valid policy bundle "
                      f"({n} error{'s' if n != 1 else ''} above; `fairvisor validate {path}`)") from None
