"""The package layout in the checkout: cli/ is imported only as pyengine.cli, resources resolve here."""

import ast
import pathlib
import subprocess

from pyengine import resources

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_nothing_imports_a_top_level_cli():
    """The checkout's cli/ folder is importable as `cli` from the repo root, but the wheel has no
    such package (it is pyengine.cli): an import of `cli` would pass here and fail installed."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in names:
        tree = ast.parse((REPO / name).read_text(), name)
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{name}:{node.lineno}" for m in modules if m == "cli" or m.startswith("cli.")]
    assert offenders == []


def test_resources_are_the_repository_folders_in_the_checkout():
    assert resources.DATA_DIR == REPO
    assert (resources.NGINX_DIR / "nginx.conf.tmpl").is_file() and resources.PROTECT_CONF.is_file()
    assert (resources.LUA_SHIM_DIR / "fairvisor" / "shim.lua").is_file()
    assert resources.DEFAULT_POLICY == REPO / "pyengine" / "default_policy.json"
