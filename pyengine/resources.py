"""Where the files the edge runs on live: nginx templates, the Lua shim, the default policy.

One lookup for both layouts. From the checkout (or its editable install) they are the repo's
top-level `nginx/` and `lua-shim/`; from an installed wheel, the same trees under
`pyengine/_data/` (setup.py maps them there). nginx reads the shim and the protect include by
path, so these are real directories on disk, never inside a zip.
"""

import pathlib
from importlib.resources import files

PACKAGE_DIR = pathlib.Path(str(files("pyengine")))
_BUNDLED = PACKAGE_DIR / "_data"  # present only in an installed wheel
DATA_DIR = _BUNDLED if _BUNDLED.is_dir() else PACKAGE_DIR.parent

NGINX_DIR = DATA_DIR / "nginx"  # *.conf.tmpl and fairvisor-protect.conf
PROTECT_CONF = NGINX_DIR / "fairvisor-protect.conf"
ADMIN_CONF = NGINX_DIR / "fairvisor-admin.conf"  # the admin endpoints, one location for the engine to route
LUA_SHIM_DIR = DATA_DIR / "lua-shim"  # the directory nginx's lua_package_path names
DEFAULT_POLICY = PACKAGE_DIR / "default_policy.json"  # what run/engine load without --config
