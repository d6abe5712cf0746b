"""`fairvisor init`: write a starter policy that passes `validate`, plus its <name>.env.example."""

import json
import os

import click

from .output import fail
from .templates import TEMPLATES, env_example

ENV_EXAMPLE_SUFFIX = ".env.example"


def env_example_path(policy_path: str) -> str:
    """policy.json -> policy.env.example, beside it: one per policy, so two never collide."""
    stem, ext = os.path.splitext(policy_path)
    return (stem if ext == ".json" else policy_path) + ENV_EXAMPLE_SUFFIX


@click.command("init")
@click.option("--template", "template", type=click.Choice(sorted(TEMPLATES)), required=True,
              help="api: per-key and per-IP rates; llm: tokens per minute/day and a USD budget per org; "
                   "agent-guard: per-agent tokens, budget, loop detection and a spend breaker.")
@click.option("--out", "out", default="policy.json", show_default=True, type=click.Path(dir_okay=False),
              help="Policy file to write ('-' prints it to stdout, without the env example). "
                   "Its settings go next to it, e.g. policy.json -> policy.env.example.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(template: str, out: str, force: bool) -> None:
    """Scaffold a policy bundle from a template.

    Exit status: 0 written, 1 a file exists (use --force).
    """
    text = json.dumps(TEMPLATES[template], indent=2) + "\n"
    if out == "-":
        click.echo(text, nl=False)
        return
    env_path = env_example_path(out)
    existing = [p for p in (out, env_path) if os.path.exists(p)]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        fail(f"fairvisor init: {', '.join(existing)} already {verb}; use --force to overwrite", 1)
    with open(out, "w") as f:
        f.write(text)
    with open(env_path, "w") as f:
        f.write(env_example(template, os.path.abspath(out)))
    click.echo(f"Wrote {out} ({template} template) and {env_path}.")
    click.echo(f"Next: fairvisor validate {out} && fairvisor run --config {out}")
    click.echo(f"Settings: edit {env_path}, then fairvisor run --env-file {env_path}")
