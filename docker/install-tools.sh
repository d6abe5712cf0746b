#!/usr/bin/env bash
# Installs what building the image locally needs and is missing: a docker daemon (docker.io) and debootstrap.
# Idempotent; used by `make test-docker`. Starting the daemon is left to the caller (see tests/docker).
set -euo pipefail
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-tools: installing ${missing[*]}"
sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
