"""The `fairvisor` command line: a thin click group; commands import engine code lazily."""

import click

from pyengine import __version__  # pyengine/__init__.py holds only the version: a cheap import

from .lazy import LazyGroup

# Commands in their own modules, imported only when run (see cli/lazy.py).
_LAZY = {
    "init": ".init_cmd:init",
    "test": ".test_cmd:test",
    "explain": ".test_cmd:explain",
    "status": ".status_cmd:status",
    "logs": ".logs_cmd:logs",
    "nginx-include": ".include_cmd:nginx_include",
    "coverage": ".coverage_cmd:coverage",
    "shadow-report": ".shadow_report_cmd:shadow_report",
    "selftest": ".selftest_cmd:selftest",
    "kill-switch": ".kill_switch_cmd:kill_switch",
    "override": ".override_cmd:override",
    "prices": ".prices_cmd:prices",
}


@click.group(cls=LazyGroup, lazy=_LAZY, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fairvisor", message="%(prog)s %(version)s",
                      help="Print the Fairvisor version and exit.")
def main() -> None:
    """Fairvisor: policy and spend control for API and LLM traffic at the edge.

    nginx enforces, a Lua shim forwards each request's description, and the Python engine
    decides. Policies are one JSON bundle; see `fairvisor validate --help` and docs/policy.md.
    """


@main.command()
def version() -> None:
    """Print the Fairvisor version (also: fairvisor --version)."""
    click.echo(f"fairvisor {__version__}")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True,
              help='Print {"valid", "policies", "rules", "errors": [{"path", "message"}]} on stdout.')
@click.option("--against", "admin_url", default=None, metavar="ADMIN_URL",
              help="Also compare with the bundle in force at this admin listener and replay its recent "
                   "traffic under both (sends FAIRVISOR_ADMIN_TOKEN); exit 1 when a reload would refuse it.")
def validate(file: str, as_json: bool, admin_url: str | None) -> None:
    """Check a policy bundle file (or - for stdin).

    Prints "Valid: N policies, M rules" and exits 0, or prints every error as
    "<file>: <json path>: <message>" on stderr and exits 1. With --json, both go to stdout
    as one JSON object, with the same exit status.
    """
    if admin_url:
        from .validate_against import run_against

        raise SystemExit(run_against(file, admin_url, as_json))
    from .validate_cmd import run_validate

    raise SystemExit(run_validate(file, as_json=as_json))


# run, engine, nginx-conf (cli/run_cmd.py imports only stdlib and click at load time).
from .run_cmd import COMMANDS as _RUN_COMMANDS  # noqa: E402

for _command in _RUN_COMMANDS:
    main.add_command(_command)
