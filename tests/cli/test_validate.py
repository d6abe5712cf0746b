"""`fairvisor validate` and `fairvisor version` through click's CliRunner."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pyengine import __version__
from pyengine.cli.main import main

RULE = {"name": "r", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 1, "burst": 2}}

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")


def fixture(*parts: str) -> str:
    return os.path.join(FIXTURES, *parts)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("name, summary", [
    ("minimal_api.json", "Valid: 1 policy, 1 rule\n"),
    ("five_rules.json", "Valid: 1 policy, 5 rules\n"),
    ("full_features.json", "Valid: 2 policies, 4 rules\n"),
])
def test_valid_file(runner, name, summary):
    result = runner.invoke(main, ["validate", fixture("policies", name)])
    assert result.exit_code == 0
    assert result.stdout == summary
    assert result.stderr == ""


def test_invalid_file_prints_every_error_on_stderr(runner):
    path = fixture("policy_errors", "semantic_errors_collected.json")
    result = runner.invoke(main, ["validate", path])
    assert result.exit_code == 1
    assert result.stdout == ""
    keys = "(expected jwt:<claim>, header:<name>, query:<name>, ip:address, ip:country, ip:asn, ip:type, ip:tor, ua:bot, ua:bot_category or llm:model)"
    p0 = "semantic_errors_collected.json: $.policies[0].spec"
    assert result.stderr.splitlines() == [
        f'{p0}.selector.pathPrefix: must start with "/"',
        f"{p0}.rules[0].algorithm_config.burst: must be >= tokens_per_second (5)",
        f'{p0}.rules[1].name: duplicate rule name "per-ip"',
        f'{p0}.rules[1].limit_keys[0]: invalid limit key "ip:adress" {keys}',
        'semantic_errors_collected.json: $.policies[1].id: duplicate policy id "api"',
        "semantic_errors_collected.json: $.policies[1].spec.rules[0].algorithm_config"
        ".staged_actions: a reject action at threshold_percent 100 is required",
        "semantic_errors_collected.json: $.kill_switches[0].scope_key:"
        f' invalid limit key "ip" {keys}',
    ]


def test_stdin(runner):
    with open(fixture("policies", "five_rules.json"), "rb") as f:
        data = f.read()
    result = runner.invoke(main, ["validate", "-"], input=data)
    assert (result.exit_code, result.stdout) == (0, "Valid: 1 policy, 5 rules\n")


def test_stdin_errors_are_named_stdin(runner):
    result = runner.invoke(main, ["validate", "-"], input=b'{"bundle_version": 0, "policies": []}')
    assert result.exit_code == 1
    assert result.stderr == "<stdin>: $.bundle_version: must be an integer > 0 (got 0)\n"


def test_missing_file_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(main, ["validate", str(tmp_path / "absent.json")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert result.stdout == ""


def test_directory_and_missing_argument_are_usage_errors(runner, tmp_path):
    assert runner.invoke(main, ["validate", str(tmp_path)]).exit_code == 2
    assert runner.invoke(main, ["validate"]).exit_code == 2


def test_expired_bundle_is_judged_against_the_wall_clock(runner, tmp_path):
    path = tmp_path / "old.json"
    path.write_text('{"bundle_version": 1, "policies": [], "expires_at": "2001-01-01T00:00:00Z"}')
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr == "old.json: $.expires_at: bundle expired at 2001-01-01T00:00:00Z\n"


def test_version(runner):
    result = runner.invoke(main, ["version"])
    assert (result.exit_code, result.stdout) == (0, f"fairvisor {__version__}\n")


def test_version_flag_prints_what_version_prints(runner):
    result = runner.invoke(main, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"fairvisor {__version__}\n")


@pytest.mark.parametrize("bundle, summary", [
    ('{"bundle_version": 1, "policies": []}', "Valid: 0 policies, 0 rules\n"),
    (json.dumps({"bundle_version": 1, "policies": [
        {"id": "a", "spec": {"selector": {"pathPrefix": "/"}, "rules": [RULE]}},
        {"id": "b", "spec": {"selector": {"pathPrefix": "/b"}, "rules": [RULE, {**RULE, "name": "r2"}]}}]}),
     "Valid: 2 policies, 3 rules\n"),
])
def test_summary_plurals(runner, bundle, summary):
    assert runner.invoke(main, ["validate", "-"], input=bundle).stdout == summary


def test_json_output_when_valid(runner):
    result = runner.invoke(main, ["validate", "--json", fixture("policies", "five_rules.json")])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"valid": True, "policies": 1, "rules": 5, "errors": []}


def test_json_output_lists_every_error_with_its_path(runner):
    bad = json.dumps({"bundle_version": 1, "policies": [
        {"id": "a", "spec": {"selector": {"pathPrefix": "api"}, "rules": [{**RULE, "limit_keys": ["ip"]}]}}]})
    result = runner.invoke(main, ["validate", "--json", "-"], input=bad)
    assert (result.exit_code, result.stderr) == (1, "")
    out = json.loads(result.stdout)
    assert (out["valid"], out["policies"], out["rules"]) == (False, 0, 0)
    assert out["errors"] == [
        {"path": "$.policies[0].spec.selector.pathPrefix", "message": 'must start with "/"'},
        {"path": "$.policies[0].spec.rules[0].limit_keys[0]",
         "message": 'invalid limit key "ip" (expected jwt:<claim>, header:<name>, query:<name>,'
                    ' ip:address, ip:country, ip:asn, ip:type, ip:tor, ua:bot, ua:bot_category or llm:model)'},
    ]


def test_json_output_for_unparsable_input(runner):
    result = runner.invoke(main, ["validate", "--json", "-"], input=b"{")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["errors"] == [{"path": "$", "message": "invalid JSON at line 1, column 2"}]


def test_help_lists_commands(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "validate" in result.stdout and "version" in result.stdout


def test_group_import_stays_light():
    """`fairvisor --help` must not pay for the engine: commands import it lazily."""
    code = ("import sys, pyengine.cli.main; print(sorted(m for m in sys.modules"
            " if m.startswith('pyengine') and not m.startswith('pyengine.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # pyengine.env_vars is the variables' name table, which the flags are built from: it imports nothing.
    assert out.stdout.strip() == "['pyengine', 'pyengine.env_vars']"
    import ast
    import pyengine.env_vars
    from pathlib import Path
    tree = ast.parse(Path(pyengine.env_vars.__file__).read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
