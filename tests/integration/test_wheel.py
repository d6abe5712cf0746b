"""The wheel as a user gets it: built from this tree, installed in a fresh venv, run from elsewhere.

The wheel is built from a copy of the files a commit would hold (tracked plus new, not ignored),
so a stale build/ or an untracked file in the checkout cannot make it pass. Its dependencies
come from requirements.lock, as `make run` installs them.
"""

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from .conftest import Edge, reachable_dir

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA_TREES = ("nginx", "lua-shim")  # installed under pyengine/_data/ (setup.py)


def _commit_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (REPO / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in _commit_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    # The lock's setuptools is in this venv: no unpinned build backend is fetched.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(src)], check=True, cwd=tmp)
    (built,) = (tmp / "dist").glob("fairvisor-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_bin(wheel) -> pathlib.Path:
    venv = reachable_dir("fv-wheel-venv-")  # nginx's workers read the installed shim from it
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--require-hashes", "-r", str(REPO / "requirements.lock")], check=True)
    subprocess.run(pip + ["--no-deps", str(wheel)], check=True)
    return venv / "bin"


@pytest.fixture
def elsewhere(tmp_path) -> pathlib.Path:
    """A working directory with nothing of the checkout in it."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return cwd


def test_wheel_holds_one_top_level_package_and_every_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names if not n.startswith("fairvisor-")}
    assert top == {"pyengine"}  # no top-level `cli` (contract §5)
    tracked = _commit_files()
    for tree in DATA_TREES:
        files = [n for n in tracked if n.startswith(f"{tree}/")]
        assert files, tree
        assert {f"pyengine/_data/{n}" for n in files} <= names
    sources = {n for n in tracked if n.endswith(".py") and n.split("/")[0] in ("pyengine", "cli")}
    assert {f"pyengine/{n}" if n.startswith("cli/") else n for n in sources} <= names
    assert "pyengine/default_policy.json" in names


def test_no_cli_module_and_the_config_names_only_installed_files(venv_bin, elsewhere):
    probe = subprocess.run([str(venv_bin / "python"), "-c", "import cli"], cwd=elsewhere,
                           capture_output=True, text=True)
    assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr
    site = subprocess.run([str(venv_bin / "python"), "-c", "import pyengine, os; print("
                           "os.path.dirname(pyengine.__file__))"], cwd=elsewhere,
                          capture_output=True, text=True, check=True).stdout.strip()
    shim_dir = pathlib.Path(site) / "_data" / "lua-shim"
    assert (shim_dir / "fairvisor" / "shim.lua").is_file()
    outputs = {}
    for command in ("nginx-conf", "nginx-include"):
        out = subprocess.run([str(venv_bin / "fairvisor"), command, "--state-dir", str(elsewhere / "s")],
                             cwd=elsewhere, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert f'lua_package_path "{shim_dir}/?.lua;' in out.stdout
        assert str(REPO) not in out.stdout
        outputs[command] = out.stdout
    protect = pathlib.Path(site) / "_data" / "nginx" / "fairvisor-protect.conf"
    assert f"include {protect};" in outputs["nginx-include"] and protect.is_file()


def test_run_on_the_bundled_policy_limits_through_real_nginx(venv_bin, elsewhere, tmp_path):
    edge = Edge(tmp_path, [], command=[str(venv_bin / "fairvisor")], cwd=elsewhere)
    try:
        edge.wait_ready()
        assert edge.decide(xff="198.51.100.9").status == 200
        # The default policy: burst 10 per client IP, refilled at 5/s; 30 quick calls must run dry.
        statuses = [edge.decide(xff="198.51.100.9").status for _ in range(30)]
        assert 429 in statuses and set(statuses) <= {200, 429}
        assert edge.decide(xff="198.51.100.10").status == 200  # another client has its own bucket
    finally:
        assert edge.stop() == 0, edge.log()
