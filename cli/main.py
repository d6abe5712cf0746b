"""The `fairvisor` command line: a thin click group; commands import engine code lazily."""

import click

from .lazy import LazyGroup

# Commands in their own modules, imported only when run (see cli/lazy.py).
_LAZY = {
    "init": ".init_cmd:init",
    "test": ".test_cmd:test",
    "explain": ".test_cmd:explain",
    "status": ".status_cmd:status",
    "logs": ".logs_cmd:logs",
    "nginx-include": ".include_cmd:nginx_include",
}


@click.group(cls=LazyGroup, lazy=_LAZY, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Fairvisor: policy and spend control for API and LLM traffic at the edge.

    nginx enforces, a Lua shim forwards each request's description, and the Python engine
    decides. Policies are one JSON bundle; see `fairvisor validate --help` and docs/policy.md.
    """


@main.command()
def version() -> None:
    """Print the Fairvisor version."""
    from pyengine import __version__

    click.echo(f"fairvisor {__version__}")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def validate(file: str) -> None:
    """Check a policy bundle file (or - for stdin).

    Prints "Valid: N policies, M rules" and exits 0, or prints every error as
    "<file>: <json path>: <message>" on stderr and exits 1.
    """
    from .validate_cmd import run_validate

    raise SystemExit(run_validate(file))


# run, engine, nginx-conf (cli/run_cmd.py imports only stdlib and click at load time).
from .run_cmd import COMMANDS as _RUN_COMMANDS  # noqa: E402

for _command in _RUN_COMMANDS:
    main.add_command(_command)
