"""The Docker image, built for real (docker/build-local.sh) and driven over HTTP on loopback (`make test-docker`)."""

from __future__ import annotations

import http.client
import json
import pathlib
import uuid

import pytest

from tests.docker.conftest import docker as _docker
from tests.integration.conftest import free_port, wait_until

pytestmark = pytest.mark.docker

REPO = pathlib.Path(__file__).resolve().parents[2]

class Container:
    def __init__(self, image: str, args: list[str], env: dict, port: int, volumes: tuple = (),
                 entrypoint: str | None = None):
        self.name = f"fairvisor-test-{uuid.uuid4().hex[:10]}"
        self.port = port
        cmd = ["run", "-d", "--name", self.name, "--network", "host"]
        if entrypoint:
            cmd += ["--entrypoint", entrypoint]
        for k, v in env.items():
            cmd += ["-e", f"{k}={v}"]
        for v in volumes:
            cmd += ["-v", v]
        _docker(*cmd, image, *args)

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None,
                port: int | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body) if body else None, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def answers(self, path: str) -> bool:
        try:
            return self.request("GET", path)[0] == 200
        except OSError:
            return False

    def inspect(self, fmt: str) -> str:
        return _docker("inspect", "--format", fmt, self.name).stdout.strip()

    def logs(self) -> str:
        return _docker("logs", self.name, check=False).stdout[-3000:]

    def remove(self) -> None:
        _docker("rm", "-f", "-v", self.name, check=False)  # -v: the image's VOLUME too


@pytest.fixture
def containers():
    started: list[Container] = []

    def start(*args, **kw) -> Container:
        c = Container(*args, **kw)
        started.append(c)
        return c

    yield start
    for c in started:
        c.remove()


def test_image_runs_non_root_decides_and_turns_healthy(image, containers):
    port = free_port()
    edge = containers(image, [], {"FAIRVISOR_LISTEN": f"127.0.0.1:{port}", "FAIRVISOR_WORKER_PROCESSES": "1",
                                  "FAIRVISOR_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"}, port)
    wait_until(lambda: edge.answers("/readyz"), 60.0, "the container's /readyz")

    assert _docker("exec", edge.name, "id", "-u").stdout.strip() == "10001"
    assert edge.inspect("{{.Config.Entrypoint}}") == "[/usr/bin/tini -- fairvisor]"
    ask = {"X-Original-Method": "GET", "X-Original-URI": "/api/items", "X-Forwarded-For": "203.0.113.7"}
    statuses = [edge.request("POST", "/v1/decision", headers=ask)[0] for _ in range(11)]
    assert statuses[:10] == [200] * 10 and statuses[10] == 429  # the bundled policy: burst 10 per IP
    status, headers, _ = edge.request("POST", "/v1/decision", headers=ask)
    assert status == 429 and headers["X-Fairvisor-Reason"] == "rate_limit_exceeded"
    assert int(headers["Retry-After"]) >= 1

    wait_until(lambda: edge.inspect("{{.State.Health.Status}}") == "healthy", 60.0, "HEALTHCHECK healthy",
               interval_s=0.5)
    # tini hands SIGTERM to `fairvisor run`, which stops nginx and the engine and exits 0.
    _docker("stop", "--time", "30", edge.name, timeout=60)
    assert edge.inspect("{{.State.ExitCode}}") == "0", edge.logs()


def test_quickstart_edge_in_front_of_the_mock_llm(image, containers):
    # examples/quickstart/docker-compose.yml, as two containers on the host network.
    mock_port, port = free_port(), free_port()
    mock = containers(image, ["--", "python3", "-m", "pyengine.devtools.mock_llm",
                              "--listen", f"127.0.0.1:{mock_port}"], {}, mock_port, entrypoint="/usr/bin/tini")
    wait_until(lambda: mock.answers("/_mock/requests"), 30.0, "the mock LLM container")
    policy = REPO / "examples" / "quickstart" / "policy.json"
    edge = containers(image, [], {
        "FAIRVISOR_LISTEN": f"127.0.0.1:{port}", "FAIRVISOR_WORKER_PROCESSES": "1",
        "FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_BACKEND_URL": f"http://127.0.0.1:{mock_port}",
        "FAIRVISOR_LLM_FORMAT": "openai", "FAIRVISOR_CONFIG_FILE": "/etc/fairvisor/policy.json",
        "FAIRVISOR_UPSTREAM_HEADER_Authorization": "Bearer sk-upstream-demo",
        "FAIRVISOR_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
    }, port, volumes=(f"{policy}:/etc/fairvisor/policy.json:ro",))
    wait_until(lambda: edge.answers("/readyz"), 60.0, "the quickstart edge's /readyz")

    def chat(max_tokens: int, output_tokens: int):
        return edge.request("POST", "/v1/chat/completions", body={
            "model": "gpt-4o-mini", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hello"}]},
            headers={"Authorization": "Bearer team-a", "Content-Type": "application/json",
                     "X-Mock-Output-Tokens": str(output_tokens)})

    status, headers, body = chat(50, 10)
    assert status == 200, edge.logs()
    assert json.loads(body)["usage"]["completion_tokens"] == 10
    assert headers["RateLimit"].startswith('"per-key-tpm";')
    chats = [r for r in json.loads(mock.request("GET", "/_mock/requests")[2]) if r["path"] == "/v1/chat/completions"]
    assert chats[-1]["headers"]["authorization"] == "Bearer sk-upstream-demo"  # the client's key stayed out

    status, headers, body = chat(5000, 10)
    assert status == 429 and headers["X-Fairvisor-Reason"] == "max_tokens_per_request_exceeded"
    assert json.loads(body)["error"]["type"] in ("rate_limit_error", "insufficient_quota")

    assert chat(1200, 1200)[0] == 200
    status, headers, _ = chat(1200, 1200)
    assert status == 429 and headers["X-Fairvisor-Reason"] == "tpm_exceeded"


def test_admin_listener_outside_the_container_needs_a_token(image, containers):
    """docs/operations.md: in a container, FAIRVISOR_ADMIN_LISTEN=0.0.0.0:9090 with a token; without
    the token the container refuses to start (exit non-zero) instead of exposing metrics."""
    port, admin_port = free_port(), free_port()
    base = {"FAIRVISOR_LISTEN": f"127.0.0.1:{port}", "FAIRVISOR_WORKER_PROCESSES": "1",
            "FAIRVISOR_ADMIN_LISTEN": f"0.0.0.0:{admin_port}"}
    refused = containers(image, [], base, port)
    wait_until(lambda: refused.inspect("{{.State.Status}}") == "exited", 60.0, "the tokenless container to exit",
               interval_s=0.5)
    assert refused.inspect("{{.State.ExitCode}}") != "0"
    assert "FAIRVISOR_ADMIN_TOKEN" in _docker("logs", refused.name, check=False).stderr

    edge = containers(image, [], {**base, "FAIRVISOR_ADMIN_TOKEN": "docker-adm-1"}, port)
    wait_until(lambda: edge.answers("/readyz"), 60.0, "the container's /readyz")
    assert edge.request("GET", "/metrics", port=admin_port)[0] == 401
    status, _, body = edge.request("GET", "/metrics", port=admin_port,
                                   headers={"Authorization": "Bearer docker-adm-1"})
    assert status == 200 and b"fairvisor_decisions_total" in body
    ready = json.loads(edge.request("GET", "/readyz", port=admin_port,
                                    headers={"Authorization": "Bearer docker-adm-1"})[2])
    assert ready["state"]["backend"] == "memory"
    assert set(json.loads(edge.request("GET", "/readyz")[2])) == {"status", "ready", "policy_version", "policy_hash"}
