#!/usr/bin/env bash
# Builds the image on a machine with no image registry: local Debian base (once), then docker/Dockerfile.
#   docker/build-local.sh [TAG]     (default fairvisor:local; base local/debian:bookworm)
# Idempotent: the base is made only when missing; docker's layer cache makes a rebuild quick.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-fairvisor:local}"
base="${FAIRVISOR_BASE_IMAGE:-local/debian:bookworm}"
docker/base-image.sh "$base"
# A TLS-intercepting proxy's CA on this host must be trusted inside the build too (pip).
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$crt" ] && cp -f "$crt" docker/extra-ca/
done
# --network host: the daemon here has no bridge, so apt and pip in the build use the host network.
docker build --network host --build-arg BASE="$base" -f docker/Dockerfile -t "$tag" .
