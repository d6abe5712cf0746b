"""`fairvisor validate`: load a bundle exactly as the engine would, and report the outcome."""

import time

import click

from pyengine.errors import PolicyError
from pyengine.policy.loader import count_rules, load_bundle_file

from .output import echo_json, plural


def run_validate(path: str, now_s: float | None = None, as_json: bool = False) -> int:
    """Validate the bundle at `path` ("-" = stdin); return the exit status (0 valid, 1 not).

    Expiry is judged against `now_s` (default: the wall clock), as a reload would judge it.
    """
    try:
        bundle = load_bundle_file(path, time.time() if now_s is None else now_s)
    except PolicyError as e:
        if as_json:
            located = e.located or [("$", line) for line in e.errors]
            echo_json({"valid": False, "policies": 0, "rules": 0,
                       "errors": [{"path": p, "message": m} for p, m in located]})
        else:
            for line in e.errors:
                click.echo(line, err=True)
        return 1
    policies, rules = len(bundle.policies), count_rules(bundle)
    if as_json:
        echo_json({"valid": True, "policies": policies, "rules": rules, "errors": []})
    else:
        click.echo(f"Valid: {plural(policies, 'policy', 'policies')}, {plural(rules, 'rule')}")
    return 0
