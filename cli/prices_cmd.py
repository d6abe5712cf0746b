"""`fairvisor prices`: the bundled, dated LLM price catalogue (and a bundle's own prices over it)."""

import datetime
import json

import click

STALE_AFTER_DAYS = 180  # list prices move a few times a year: past this, say the catalogue is old
_COLUMNS = ("input_usd_per_mtok", "cached_input_usd_per_mtok", "cache_write_usd_per_mtok", "output_usd_per_mtok")


def _usd(value) -> str:
    return "-" if value is None else f"{value:g}"


def catalogue_rows(bundle_pricing: dict | None = None) -> list[dict]:
    """One row per model: the catalogue's entries, with a bundle's `pricing` entries over them."""
    from pyengine.llm.pricing import load_catalogue

    rows = {name: {"model": name, "provider": e["provider"], "source": "catalogue",
                   **{c: e.get(c) for c in _COLUMNS}} for name, e in load_catalogue()["models"].items()}
    for name, e in (bundle_pricing or {}).items():
        rows[name] = {"model": name, "provider": rows.get(name, {}).get("provider", "-"), "source": "bundle",
                      **{c: e.get(c) for c in _COLUMNS}}
    return list(rows.values())


def today() -> datetime.date:
    return datetime.date.today()


def age_days(catalogue_date: str, on: datetime.date) -> int:
    """Days from the catalogue's date (YYYY-MM-DD) to `on`."""
    return (on - datetime.date.fromisoformat(catalogue_date)).days


def _bundle_pricing(path: str) -> dict | None:
    """The bundle's `pricing` object; a file that is not JSON exits 1 with the loader's words."""
    from pyengine.policy.loader import parse_json

    with open(path, "rb") as f:
        errors: list = []
        doc = parse_json(f.read(), errors)
    if errors:
        for where, message in errors:
            click.echo(f"{path}: {where}: {message}", err=True)
        raise SystemExit(1)
    own = doc.get("pricing") if isinstance(doc, dict) else None
    return own if isinstance(own, dict) else None


@click.command("prices")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a policy bundle: show its `pricing` entries over the catalogue's")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
def prices(config, as_json) -> None:
    """Print the bundled LLM price catalogue, with its date and sources (USD per million tokens).

    A bundle's `pricing` entry for a model wins over the catalogue; a model in neither falls back
    to the bundle's "*" entry, else `llm_usd` rules refuse it (unknown_model_price)."""
    from pyengine.llm.pricing import load_catalogue

    cat = load_catalogue()
    rows = catalogue_rows(_bundle_pricing(config) if config else None)
    age = age_days(cat["date"], today())
    if age > STALE_AFTER_DAYS:
        click.echo(f"warning: the price catalogue is {age} days old; check it against the sources below and "
                   "give the models you use a `pricing` entry in the bundle (it wins over the catalogue)", err=True)
    if as_json:
        click.echo(json.dumps({"date": cat["date"], "age_days": age, "source": cat["source"], "models": rows},
                              indent=2))
        return
    click.echo(f"LLM price catalogue of {cat['date']}, USD per million tokens "
               f"(cached input and cache writes cost the input price where not shown).")
    for provider, url in cat["source"].items():
        click.echo(f"  source {provider}: {url}")
    header = ("model", "provider", "input", "cached in", "cache write", "output", "from")
    table = [header] + [(r["model"], r["provider"], *(_usd(r[c]) for c in _COLUMNS), r["source"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
