"""`fairvisor init`: every template passes `validate`, files are never overwritten without --force."""

import json

import pytest
from click.testing import CliRunner

from pyengine.cli.main import main


@pytest.mark.parametrize("template, policies, rules", [("api", 1, 2), ("llm", 1, 3), ("agent-guard", 1, 2)])
def test_template_passes_validate(tmp_path, template, policies, rules):
    runner = CliRunner()
    out = tmp_path / "policy.json"
    result = runner.invoke(main, ["init", f"--template={template}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Wrote {out} ({template} template)" in result.stdout
    check = runner.invoke(main, ["validate", str(out)])
    assert (check.exit_code, check.stdout) == (0, f"Valid: {policies} policies, {rules} rules\n")
    env = (tmp_path / "edge.env.example").read_text()
    assert f"FAIRVISOR_CONFIG_FILE={out}\n" in env
    assert "FAIRVISOR_DECISION_LOG=" in env and "FAIRVISOR_LOG_KEYS=hashed" in env


def test_refuses_to_overwrite_without_force(tmp_path):
    runner = CliRunner()
    out = tmp_path / "policy.json"
    out.write_text("keep me")
    result = runner.invoke(main, ["init", "--template=api", "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f"fairvisor init: {out} already exists; use --force to overwrite\n"
    assert out.read_text() == "keep me"
    assert not (tmp_path / "edge.env.example").exists()
    forced = runner.invoke(main, ["init", "--template=llm", "--out", str(out), "--force"])
    assert forced.exit_code == 0
    assert json.loads(out.read_text())["policies"][0]["id"] == "llm"


def test_stdout_and_usage_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["init", "--template=api", "--out", "-"])
    assert result.exit_code == 0 and json.loads(result.stdout)["policies"][0]["id"] == "api"
    assert runner.invoke(main, ["init", "--template=nope"]).exit_code == 2
    assert runner.invoke(main, ["init"]).exit_code == 2
