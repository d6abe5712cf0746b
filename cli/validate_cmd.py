"""`fairvisor validate`: load a bundle exactly as the engine would, and report the outcome."""

import time

import click

from pyengine.errors import PolicyError
from pyengine.policy.loader import count_rules, load_bundle_file


def run_validate(path: str, now_s: float | None = None) -> int:
    """Validate the bundle at `path` ("-" = stdin); return the exit status (0 valid, 1 not).

    Expiry is judged against `now_s` (default: the wall clock), as a reload would judge it.
    """
    try:
        bundle = load_bundle_file(path, time.time() if now_s is None else now_s)
    except PolicyError as e:
        for line in e.errors:
            click.echo(line, err=True)
        return 1
    # The wording is fixed by the contract (§5), plural included, so scripts can parse it.
    click.echo(f"Valid: {len(bundle.policies)} policies, {count_rules(bundle)} rules")
    return 0
