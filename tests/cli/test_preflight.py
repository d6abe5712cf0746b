"""cli/preflight.py: `fairvisor run` loads --config exactly as the engine would before it starts anything."""

from __future__ import annotations

import json

import click
import pytest

from pyengine.cli.preflight import check_policy
from pyengine.config import from_env
from pyengine.signing import sig_path, sign
from tests.integration.conftest import token_bucket_policy

def _settings(tmp_path, **env):
    return from_env({"FAIRVISOR_STATE_DIR": str(tmp_path), **env})


def test_no_config_and_a_valid_one_pass(tmp_path, capsys):
    check_policy(_settings(tmp_path))
    good = tmp_path / "policy.json"
    good.write_text(json.dumps(_valid()))
    check_policy(_settings(tmp_path, FAIRVISOR_CONFIG_FILE=str(good)))
    assert capsys.readouterr().err == ""


def _valid() -> dict:
    return token_bucket_policy("ip:address", tps=5, burst=10)


def test_an_unsigned_bundle_is_refused_when_a_key_is_set_and_a_signed_one_passes(tmp_path, capsys):
    path = tmp_path / "policy.json"
    data = json.dumps(_valid()).encode()
    path.write_bytes(data)
    settings = _settings(tmp_path, FAIRVISOR_CONFIG_FILE=str(path), FAIRVISOR_BUNDLE_KEY="k" * 32)
    with pytest.raises(click.ClickException) as exc:
        check_policy(settings)
    assert exc.value.message == (f"refusing to start: --config {path} is not a valid policy bundle "
                                 f"(1 error above; `fairvisor validate {path}`)")
    assert "unsigned bundle refused" in capsys.readouterr().err
    with open(sig_path(str(path)), "w") as f:
        f.write(sign(data, "k" * 32))
    check_policy(settings)
