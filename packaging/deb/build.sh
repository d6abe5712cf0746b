#!/usr/bin/env bash
# Builds dist/fairvisor_<version>_<arch>.deb with dpkg-deb: a venv under /usr/lib/fairvisor from requirements.lock.
#   packaging/deb/build.sh [WHEEL]     (default: the newest dist/fairvisor-<version>-py3-none-any.whl; `make deb`)
# Why a venv of its own (docs/install.md): the exact locked versions CI tested, isolated from
# Debian's python3-* packages, and sys.executable (which starts the engine) is that venv.
# The venv links to Debian's /usr/bin/python3.11 and holds compiled wheels (msgspec, uvloop) for
# it, hence one architecture and Depends on python3 (>= 3.11), python3 (<< 3.12).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=packaging/deb
PY=/usr/bin/python3
pyver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
[ "$pyver" = 3.11 ] || { echo "deb: needs Debian 12's python3.11 at $PY (found $pyver)" >&2; exit 1; }
version="$("$PY" -c 'import re; print(re.search(r"__version__ = \"(.+)\"", open("pyengine/__init__.py").read())[1])')"
arch="$(dpkg --print-architecture)"
wheel="${1:-dist/fairvisor-$version-py3-none-any.whl}"
[ -f "$wheel" ] || { echo "deb: $wheel is missing (make wheel)" >&2; exit 1; }
pip="${PIP:-.venv/bin/pip}"

root="build/deb/root"
rm -rf build/deb
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/fairvisor" "$root/etc/default" \
    "$root/usr/share/doc/fairvisor"
lib=/usr/lib/fairvisor
site="$root$lib/lib/python$pyver/site-packages"

# The venv: its python is a link to Debian's, and pyvenv.cfg makes site-packages its own.
"$PY" -m venv --without-pip "$root$lib"
rm -f "$root$lib"/bin/activate* "$root$lib"/bin/Activate.ps1  # they name the build path; the package has no shell to activate
"$pip" install -q --no-compile --no-deps --only-binary=:all: --require-hashes -r requirements.lock --target "$site"
"$pip" install -q --no-compile --no-deps --target "$site" "$wheel"
# Runtime needs none of these: the build backend from the lock, and the console script pip made
# (it names the build path; /usr/bin/fairvisor below is the entry point).
rm -rf "$site"/setuptools* "$site"/pkg_resources "$site"/_distutils_hack "$site"/distutils-precedence.pth \
    "$site/bin"
# Byte-compiled now, named by their installed paths: under ProtectSystem=strict nothing can write them later.
"$PY" -m compileall -q -j 0 -s "$root" -p / "$site"

cat >"$root/usr/bin/fairvisor" <<PYEOF
#!$lib/bin/python3
"""fairvisor: the command of the Debian package (its venv: $lib)."""
import sys

from pyengine.cli.main import main

sys.exit(main())
PYEOF
chmod 755 "$root/usr/bin/fairvisor"

install -m 644 "$here/fairvisor.service" "$root/lib/systemd/system/fairvisor.service"
install -m 644 "$here/default" "$root/etc/default/fairvisor"
install -m 644 pyengine/default_policy.json "$root/etc/fairvisor/policy.json"
install -m 644 docs/install.md docs/running.md "$root/usr/share/doc/fairvisor/"
for f in postinst prerm postrm; do install -m 755 "$here/$f" "$root/DEBIAN/$f"; done
printf '/etc/fairvisor/policy.json\n/etc/default/fairvisor\n' >"$root/DEBIAN/conffiles"
size_kb="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE_KB@/$size_kb/" "$here/control.in" >"$root/DEBIAN/control"

mkdir -p dist
out="dist/fairvisor_${version}_${arch}.deb"
# Root-owned files whoever builds (no fakeroot needed); zstd is not in dpkg before 1.21.18: xz.
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
