"""`fairvisor init`: every template passes `validate`, files are never overwritten without --force."""

import json

import pytest
from click.testing import CliRunner

from pyengine.cli.main import main
from pyengine.cli.templates import TEMPLATES


@pytest.mark.parametrize("template, summary", [("api", "1 policy, 2 rules"), ("llm", "1 policy, 3 rules"),
                                               ("agent-guard", "1 policy, 2 rules")])
def test_template_passes_validate(tmp_path, template, summary):
    runner = CliRunner()
    out = tmp_path / "policy.json"
    result = runner.invoke(main, ["init", f"--template={template}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Wrote {out} ({template} template)" in result.stdout
    check = runner.invoke(main, ["validate", str(out)])
    assert (check.exit_code, check.stdout) == (0, f"Valid: {summary}\n")
    env = (tmp_path / "policy.env.example").read_text()
    assert f"FAIRVISOR_CONFIG_FILE={out}\n" in env
    assert "FAIRVISOR_DECISION_LOG=" in env and "FAIRVISOR_LOG_KEYS=hashed" in env
    # It points only to what an installed fairvisor has: its own --help, no repository docs.
    assert "fairvisor run --help" in env and "docs/" not in env and "contract" not in env


def test_a_second_template_in_the_same_folder_gets_its_own_env_example(tmp_path):
    runner = CliRunner()
    for template, name in (("api", "api.json"), ("llm", "llm.json")):
        result = runner.invoke(main, ["init", f"--template={template}", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-1] == (f"Settings: edit {tmp_path / name[:-5]}.env.example, "
                                                  f"then fairvisor run --env-file {tmp_path / name[:-5]}.env.example")
    assert "FAIRVISOR_MODE=decision_service" in (tmp_path / "api.env.example").read_text()
    assert "FAIRVISOR_MODE=reverse_proxy" in (tmp_path / "llm.env.example").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "api.env.example", "api.json", "llm.env.example", "llm.json"]


def test_the_env_example_is_a_valid_env_file(tmp_path):
    from pyengine.cli.env_file import read_env_file

    CliRunner().invoke(main, ["init", "--template=llm", "--out", str(tmp_path / "p.json")])
    values = read_env_file(str(tmp_path / "p.env.example"))
    assert values["FAIRVISOR_CONFIG_FILE"] == str(tmp_path / "p.json")
    assert values["FAIRVISOR_LLM_FORMAT"] == "auto"


def test_refuses_to_overwrite_without_force(tmp_path):
    runner = CliRunner()
    out = tmp_path / "policy.json"
    out.write_text("keep me")
    result = runner.invoke(main, ["init", "--template=api", "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f"fairvisor init: {out} already exists; use --force to overwrite\n"
    assert out.read_text() == "keep me"
    assert not (tmp_path / "policy.env.example").exists()
    forced = runner.invoke(main, ["init", "--template=llm", "--out", str(out), "--force"])
    assert forced.exit_code == 0
    assert json.loads(out.read_text())["policies"][0]["id"] == "llm"


def test_stdout_and_usage_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["init", "--template=api", "--out", "-"])
    assert result.exit_code == 0 and json.loads(result.stdout)["policies"][0]["id"] == "api"
    assert runner.invoke(main, ["init", "--template=nope"]).exit_code == 2
    assert runner.invoke(main, ["init"]).exit_code == 2


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_rule_a_client_can_leave_unkeyed_says_what_happens(name):
    """ip:address is always known; any other key may be missing, and the default would skip the rule."""
    for p in TEMPLATES[name]["policies"]:
        spec = p["spec"]
        for rule in spec["rules"] + ([spec["fallback_limit"]] if "fallback_limit" in spec else []):
            if rule["limit_keys"] != ["ip:address"]:
                assert rule.get("on_missing_key") in ("skip", "reject", "shared"), (name, rule["name"])
