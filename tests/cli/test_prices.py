"""`fairvisor prices`: the bundled catalogue with its date and sources, a bundle's prices over it."""

import json

from click.testing import CliRunner

import datetime

import pytest

from pyengine.cli import prices_cmd
from pyengine.cli.main import main
from pyengine.llm.pricing import CATALOGUE_DATE

CATALOGUE_DAY = datetime.date.fromisoformat(CATALOGUE_DATE)


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


@pytest.mark.parametrize("days, warned", [(0, False), (prices_cmd.STALE_AFTER_DAYS, False),
                                          (prices_cmd.STALE_AFTER_DAYS + 1, True)])
def test_an_old_catalogue_is_said_to_be_old(monkeypatch, days, warned):
    monkeypatch.setattr(prices_cmd, "today", lambda: CATALOGUE_DAY + datetime.timedelta(days=days))
    out = CliRunner().invoke(main, ["prices", "--json"])
    assert out.exit_code == 0
    assert json.loads(out.stdout)["age_days"] == days
    assert (f"the price catalogue is {days} days old" in out.stderr) is warned


def test_a_bundle_that_is_not_json_is_refused_with_its_position(tmp_path):
    bundle = tmp_path / "p.json"
    bundle.write_text('{"pricing": {"gpt-4o": }}')
    out = CliRunner().invoke(main, ["prices", "--config", str(bundle)])
    assert out.exit_code == 1
    assert out.stderr == f"{bundle}: $: invalid JSON at line 1, column 24\n"
