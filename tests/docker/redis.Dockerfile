# A Redis image for tests/docker/test_fleet_compose.py, from the same local Debian base as the
# project's image (docker/base-image.sh): this machine reaches Debian's mirror, not Docker Hub.
# Users of examples/fleet get redis:7; this one only stands in for it (same command, same /data).
ARG BASE=local/debian:bookworm
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
CMD ["redis-server"]
