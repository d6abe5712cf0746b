"""Package layout (the rest is in pyproject.toml): the repo's top-level folders go under `pyengine`.

`cli/` installs as `pyengine.cli`; `nginx/` and `lua-shim/` as data trees under `pyengine/_data/`,
so the wheel has one top-level package and runs from any directory (pyengine/resources.py finds
the data in either layout). Packages and data folders are found by walking, never listed by hand.
"""

import os

from setuptools import find_packages, setup

DATA_TREES = {"nginx": "pyengine._data.nginx", "lua-shim": "pyengine._data.lua-shim"}


def data_packages() -> dict[str, str]:
    """Every folder with files under a data tree, as a package name -> its folder."""
    out = {}
    for folder, package in DATA_TREES.items():
        for dirpath, _dirs, filenames in os.walk(folder):
            if filenames:
                rel = os.path.relpath(dirpath, folder)
                out[package if rel == "." else f"{package}.{rel.replace(os.sep, '.')}"] = dirpath
    return out


DATA = data_packages()
setup(
    packages=find_packages(include=["pyengine", "pyengine.*"]) + ["pyengine.cli", *DATA],
    package_dir={"pyengine.cli": "cli", **DATA},
    package_data={"pyengine": ["default_policy.json"], "pyengine.llm": ["prices.json"], "pyengine.console": ["status.html"], **{name: ["*"] for name in DATA}},
)
