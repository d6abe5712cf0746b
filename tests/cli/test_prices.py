"""`fairvisor prices`: the bundled catalogue with its date and sources, a bundle's prices over it."""

import json

from click.testing import CliRunner

from pyengine.cli.main import main
from pyengine.llm.pricing import CATALOGUE_DATE


def test_prices_prints_the_dated_catalogue():
    out = CliRunner().invoke(main, ["prices"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert CATALOGUE_DATE in lines[0]
    assert sum(1 for ln in lines if ln.startswith("  source ")) == 3
    row = next(ln.split() for ln in lines if ln.startswith("claude-sonnet-4 "))
    assert row == ["claude-sonnet-4", "anthropic", "3", "0.3", "3.75", "15", "catalogue"]


def test_a_bundle_entry_shows_over_the_catalogue(tmp_path):
    bundle = tmp_path / "p.json"
    bundle.write_text(json.dumps({"bundle_version": 1, "policies": [], "pricing": {
        "gpt-4o": {"input_usd_per_mtok": 2, "output_usd_per_mtok": 9}, "my-llama": {"input_usd_per_mtok": 0,
                                                                                     "output_usd_per_mtok": 0}}}))
    out = CliRunner().invoke(main, ["prices", "--config", str(bundle), "--json"])
    doc = json.loads(out.stdout)
    rows = {r["model"]: r for r in doc["models"]}
    assert doc["date"] == CATALOGUE_DATE
    assert (rows["gpt-4o"]["source"], rows["gpt-4o"]["output_usd_per_mtok"], rows["gpt-4o"]["provider"]) == \
        ("bundle", 9, "openai")
    assert rows["my-llama"]["source"] == "bundle" and rows["gpt-4o-mini"]["source"] == "catalogue"
