"""`--env-file FILE`: FAIRVISOR_* settings as KEY=VALUE lines, below the environment and the flags.

Precedence, highest first: a flag, the process environment, the env file. The format is the
common subset of shell and systemd EnvironmentFile: `KEY=VALUE` per line, `#` comments and
blank lines skipped, an optional `export `, and one pair of matching quotes around VALUE
removed. Anything else (a line without `=`, a variable not named FAIRVISOR_*) is refused with
its line number, so a typo cannot pass unnoticed.
"""

import os
import re

import click

PREFIX = "FAIRVISOR_"
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")


def read_env_file(path: str) -> dict[str, str]:
    """The variables of `path`; click.BadParameter names the file and line of a bad one."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path}: {getattr(exc, 'strerror', None) or exc}",
                                 param_hint="--env-file") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        where = f"{path}:{number}"
        if not sep or not _KEY.match(key):
            raise click.BadParameter(f"{where}: expected KEY=VALUE, got {raw!r}", param_hint="--env-file")
        if not key.startswith(PREFIX):
            raise click.BadParameter(f"{where}: only {PREFIX}* variables are read, got {key}",
                                     param_hint="--env-file")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def environment(env_file: str | None) -> dict[str, str]:
    """The process environment over the env file's variables (the flags go on top later)."""
    if env_file is None:
        return dict(os.environ)
    return {**read_env_file(env_file), **os.environ}
