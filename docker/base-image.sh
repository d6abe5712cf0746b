#!/usr/bin/env bash
# Makes the local Debian base image (default local/debian:bookworm) with debootstrap; skips it when present.
# For machines that reach Debian's mirror but no image registry (see docs/integrations.md, "Docker").
#   docker/base-image.sh [IMAGE]
set -euo pipefail
image="${1:-local/debian:bookworm}"
suite="${FAIRVISOR_BASE_SUITE:-bookworm}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base-image: $image already present"
  exit 0
fi
command -v debootstrap >/dev/null || {
  echo "base-image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

# The mirror apt already uses on this machine: never a hard-coded host.
mirror="${FAIRVISOR_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror="$(awk '$1 == "deb" && $3 == "'"$suite"'" {print $2; exit}' /etc/apt/sources.list)"
fi
[ -n "$mirror" ] || { echo "base-image: no Debian mirror found; set FAIRVISOR_DEBIAN_MIRROR" >&2; exit 1; }

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/fairvisor-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
echo "base-image: debootstrap $suite from $mirror (a few minutes)"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
# The same sources the slim image has, so `apt-get update` inside the build works.
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" >"$rootfs/etc/apt/sources.list"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
echo "base-image: imported $image"
