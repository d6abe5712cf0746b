"""`--env-file`: the format, its refusals, and the precedence flag > environment > env file."""

import pytest
from click.testing import CliRunner

from pyengine.cli.env_file import read_env_file
from pyengine.cli.main import main


def test_format_comments_export_and_quotes(tmp_path):
    path = tmp_path / "edge.env"
    path.write_text("# a comment\n\nFAIRVISOR_LISTEN=127.0.0.1:9001\nexport FAIRVISOR_FAIL_MODE=closed\n"
                    "FAIRVISOR_LOG_LEVEL='debug'\nFAIRVISOR_TRUSTED_PROXIES=\"10.0.0.0/8, ::1\"\n"
                    "FAIRVISOR_BACKEND_URL=http://x/?a=b\n")
    assert read_env_file(str(path)) == {
        "FAIRVISOR_LISTEN": "127.0.0.1:9001", "FAIRVISOR_FAIL_MODE": "closed", "FAIRVISOR_LOG_LEVEL": "debug",
        "FAIRVISOR_TRUSTED_PROXIES": "10.0.0.0/8, ::1", "FAIRVISOR_BACKEND_URL": "http://x/?a=b",
    }


@pytest.mark.parametrize("line, error", [
    ("PATH=/tmp", "e.env:2: only FAIRVISOR_* variables are read, got PATH"),
    ("FAIRVISOR_LISTEN", "e.env:2: expected KEY=VALUE, got 'FAIRVISOR_LISTEN'"),
    ("fairvisor_listen=1", "e.env:2: expected KEY=VALUE, got 'fairvisor_listen=1'"),
])
def test_bad_lines_are_usage_errors_with_file_and_line(tmp_path, monkeypatch, line, error):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.env").write_text(f"FAIRVISOR_LISTEN=127.0.0.1:9001\n{line}\n")
    result = CliRunner().invoke(main, ["nginx-conf", "--env-file", "e.env"])
    assert result.exit_code == 2
    assert result.stderr.rstrip().endswith(error)  # our message, after click's usage preamble


def test_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["nginx-conf", "--env-file", str(tmp_path / "none.env")])
    assert result.exit_code == 2 and f"{tmp_path / 'none.env'}: " in result.stderr


def _listen(args, env=None) -> str:
    result = CliRunner().invoke(main, ["nginx-conf", *args], env=env)
    assert result.exit_code == 0, result.stderr
    # The public server comes first; the admin listener's server {} follows it.
    public, admin = [ln.strip() for ln in result.stdout.splitlines() if ln.strip().startswith("listen ")]
    assert admin == "listen 127.0.0.1:9090;"
    return public


def test_precedence_flag_over_environment_over_env_file(tmp_path):
    path = tmp_path / "edge.env"
    path.write_text(f"FAIRVISOR_LISTEN=127.0.0.1:9001\nFAIRVISOR_STATE_DIR={tmp_path}\n")
    clean = {"FAIRVISOR_LISTEN": None}
    assert _listen(["--env-file", str(path)], clean) == "listen 127.0.0.1:9001;"
    assert _listen(["--env-file", str(path)], {"FAIRVISOR_LISTEN": "127.0.0.1:9002"}) == "listen 127.0.0.1:9002;"
    assert _listen(["--env-file", str(path), "--listen", "127.0.0.1:9003"],
                   {"FAIRVISOR_LISTEN": "127.0.0.1:9002"}) == "listen 127.0.0.1:9003;"


def test_engine_help_shows_only_what_the_engine_reads():
    engine_help = CliRunner().invoke(main, ["engine", "--help"]).stdout
    run_help = CliRunner().invoke(main, ["run", "--help"]).stdout
    for flag in ("--config", "--engine-socket", "--state-dir", "--bundle-key", "--env-file", "--mode"):
        assert flag in engine_help and flag in run_help
    for flag in ("--listen", "--backend-url", "--fail-mode", "--engine-timeout-ms", "--worker-processes",
                 "--upstream-header", "--strip-request-headers"):
        assert flag not in engine_help and flag in run_help
