"""examples/fleet for real: two edges and Redis brought up with docker-compose, driven over HTTP (`make test-docker`).

The example's compose file, policy and redis.conf are used as they are; only
tests/docker/fleet-compose.override.yml swaps the images for the ones built here from the local
Debian base (no image registry on this machine) and puts every service on the host network on
free loopback ports (no bridge networks either).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import subprocess
import time
import uuid

import pytest

from tests.docker.conftest import REPO
from tests.integration.conftest import free_port, wait_until

pytestmark = pytest.mark.docker

EXAMPLE = REPO / "examples" / "fleet"
OVERRIDE = REPO / "tests" / "docker" / "fleet-compose.override.yml"
REDIS_IMAGE = "fairvisor-test/redis:local"
BASE = os.environ.get("FAIRVISOR_BASE_IMAGE", "local/debian:bookworm")  # docker/build-local.sh's base
COMPOSE_TIMEOUT_S = 180.0
# docs/fleet.md, "Overshoot bound": on one key the fleet admits at most limit + R x (T + L), R the
# fleet's request rate on the key, T the sync interval, L one round's latency. L is taken as one
# more interval: a loaded CI machine's round, not a LAN's millisecond.
ROUND_LATENCY_INTERVALS = 1


@pytest.fixture(scope="module")
def redis_image(image):
    """Debian's redis-server on the base the `image` fixture made (docker/base-image.sh)."""
    build = subprocess.run(["docker", "build", "--network", "host", "--build-arg", f"BASE={BASE}",
                            "-f", str(REPO / "tests" / "docker" / "redis.Dockerfile"), "-t", REDIS_IMAGE,
                            str(REPO / "tests" / "docker")], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return REDIS_IMAGE


class Fleet:
    """One docker-compose project of the example; every command names it by its project name."""

    def __init__(self, edge_image: str, redis_image: str):
        self.project = f"fvfleet{uuid.uuid4().hex[:8]}"
        self.token = f"fleet-test-{uuid.uuid4().hex[:12]}"
        self.redis_port = free_port()
        self.ports = {"edge-a": (free_port(), free_port()), "edge-b": (free_port(), free_port())}
        self.env = {**os.environ, "FV_EDGE_IMAGE": edge_image, "FV_REDIS_IMAGE": redis_image,
                    "FV_REDIS_PORT": str(self.redis_port), "FAIRVISOR_ADMIN_TOKEN": self.token,
                    "FV_EDGE_A_PORT": str(self.ports["edge-a"][0]), "FV_ADMIN_A_PORT": str(self.ports["edge-a"][1]),
                    "FV_EDGE_B_PORT": str(self.ports["edge-b"][0]), "FV_ADMIN_B_PORT": str(self.ports["edge-b"][1])}

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["docker-compose", "-p", self.project, "-f", str(EXAMPLE / "docker-compose.yml"), "-f", str(OVERRIDE),
               *args]
        done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=COMPOSE_TIMEOUT_S)
        assert not check or done.returncode == 0, f"{' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done

    def _request(self, port: int, method: str, path: str, headers: dict):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def decide(self, edge: str, tenant: str):
        """One decision-service request (contract §2) for `tenant`: (status, headers)."""
        status, headers, _ = self._request(self.ports[edge][0], "POST", "/v1/decision", {
            "X-Original-Method": "GET", "X-Original-URI": "/api/items", "X-Tenant": tenant})
        return status, headers

    def admin(self, edge: str, path: str):
        return self._request(self.ports[edge][1], "GET", path, {"Authorization": f"Bearer {self.token}"})

    def readyz(self, edge: str) -> dict | None:
        try:
            status, _, body = self.admin(edge, "/readyz")
        except OSError:
            return None
        return json.loads(body) if status == 200 else None

    def state_is(self, status: str) -> bool:
        states = [self.readyz(e) for e in self.ports]
        return all(r is not None and r["state"]["status"] == status and r["status"] == status for r in states)

    def redis_cli(self, *args: str) -> str:
        return self.compose("exec", "-T", "redis", "redis-cli", "-p", str(self.redis_port), *args).stdout


@pytest.fixture(scope="module")
def fleet(image, redis_image):
    assert shutil.which("docker-compose"), "docker-compose is missing: scripts/bootstrap installs it (test packages)"
    f = Fleet(image, redis_image)
    failed = True
    try:
        f.compose("up", "-d", "--no-build")
        wait_until(lambda: f.state_is("ok"), 90.0, "both edges' admin /readyz with the store ok", interval_s=0.2)
        yield f
        failed = False
    finally:
        if failed:
            print(f.compose("logs", "--no-color", "--tail", "60", check=False).stdout[-6000:])
        f.compose("down", "-v", "--timeout", "30", check=False)


def _bucket() -> tuple[int, float]:
    """(burst, tokens per second) of the example policy's shared per-tenant token bucket."""
    policy = json.loads((EXAMPLE / "policy.json").read_text())
    rule = next(r for p in policy["policies"] for r in p["spec"]["rules"] if r["algorithm"] == "token_bucket")
    config = rule["algorithm_config"]
    return config["burst"], config.get("tokens_per_second", config.get("rps"))


def _never_open(status: int, headers) -> None:
    assert status in (200, 429), status
    assert headers.get("X-Fairvisor-Degraded") is None  # the engine decided, nothing failed open
    if status == 429:
        assert headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"


def test_two_edges_share_one_limit(fleet):
    burst, rate_per_s = _bucket()
    ready = fleet.readyz("edge-a")
    assert ready["state"]["backend"] == "redis" and ready["state"]["url"].startswith("redis://127.0.0.1:")
    interval_s = ready["state"]["sync_interval_ms"] / 1000
    assert fleet.readyz("edge-b")["state"]["sync_interval_ms"] == ready["state"]["sync_interval_ms"]

    # Sequential and alternating, one request per sync interval: the fleet's rate on the key is
    # known (R = 1 / pace_s), so the documented overshoot is a couple of requests, not a burst.
    tenant = f"acme-{uuid.uuid4().hex[:8]}"
    pace_s = interval_s
    admitted = {"edge-a": 0, "edge-b": 0}
    rejected = {"edge-a": 0, "edge-b": 0}
    started = time.monotonic()
    for i in range(3 * burst):
        delay_s = started + i * pace_s - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)
        edge = ("edge-a", "edge-b")[i % 2]
        status, headers = fleet.decide(edge, tenant)
        _never_open(status, headers)
        (admitted if status == 200 else rejected)[edge] += 1
    elapsed_s = time.monotonic() - started

    # The bucket's own limit over the run (the burst and what it refilled), plus what the fleet
    # can admit before the edges learn of each other (every request here is eligible).
    total = sum(admitted.values())
    refill = math.ceil(rate_per_s * elapsed_s)
    overshoot = math.ceil(round((1 / pace_s) * (1 + ROUND_LATENCY_INTERVALS) * interval_s, 6))
    bound = burst + refill + overshoot
    print(f"\nshared limit: {total} admitted of {3 * burst} in {elapsed_s:.2f} s ({admitted}); "
          f"bound {bound} = burst {burst} + refill {refill} + overshoot {overshoot}; unshared {2 * burst}")
    assert burst <= total <= bound
    assert bound < 2 * burst  # the test tells a shared limit from two separate ones
    assert all(admitted.values()) and all(rejected.values()), (admitted, rejected)


def test_store_outage_degrades_and_limits_still_hold(fleet):
    burst, rate_per_s = _bucket()
    assert "appendonly\nyes" in fleet.redis_cli("CONFIG", "GET", "appendonly")
    assert "appendfsync\neverysec" in fleet.redis_cli("CONFIG", "GET", "appendfsync")
    assert "maxmemory-policy\nnoeviction" in fleet.redis_cli("CONFIG", "GET", "maxmemory-policy")
    keys_before = set(fleet.redis_cli("--scan").splitlines())
    assert keys_before  # the first test's counters are in the store

    fleet.compose("stop", "--timeout", "10", "redis")
    try:
        wait_until(lambda: fleet.state_is("degraded"), 30.0, "both edges' /readyz to say degraded", interval_s=0.2)
        _, _, metrics = fleet.admin("edge-a", "/metrics")
        assert b"\nfairvisor_state_degraded 1" in metrics

        # Each edge alone now: a fresh tenant gets one burst per edge, then 429, never open.
        tenant = f"outage-{uuid.uuid4().hex[:8]}"
        for edge in ("edge-a", "edge-b"):
            started = time.monotonic()
            statuses = []
            for _ in range(burst + 5):
                status, headers = fleet.decide(edge, tenant)
                _never_open(status, headers)
                statuses.append(status)
            admitted = statuses.count(200)
            assert burst <= admitted <= burst + math.ceil(rate_per_s * (time.monotonic() - started)), statuses
            assert statuses[-1] == 429, statuses
        assert fleet.readyz("edge-a")["state"]["backlog_keys"] > 0  # waiting for the store, not dropped
    finally:
        fleet.compose("start", "redis")

    wait_until(lambda: fleet.state_is("ok"), 60.0, "both edges' /readyz ok again", interval_s=0.2)
    wait_until(lambda: all(fleet.readyz(e)["state"]["backlog_keys"] == 0 for e in fleet.ports), 30.0,
               "both edges to push what they counted during the outage", interval_s=0.2)
    # The append-only file brought the store back with its counters; the outage's were added.
    assert "aof_enabled:1" in fleet.redis_cli("INFO", "persistence")
    keys_after = set(fleet.redis_cli("--scan").splitlines())
    assert keys_before < keys_after
