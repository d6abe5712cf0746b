"""FAIRVISOR_ENGINES=N on one edge (contract §9): real nginx + shim + engines + a real redis-server.

Which engine answered is read from each engine's own counters, over its own socket.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from pyengine.cli.nginx_conf import render
from pyengine.cli.run_cmd import engine_answers
from pyengine.cli.status_cmd import parse_metrics
from pyengine.config import from_env
from pyengine.engine_paths import engine_sockets
from pyengine.protocol.client import call
from pyengine.protocol.messages import PROTOCOL_VERSION, Admin, Decide, Hello, Metrics
from pyengine.resources import ADMIN_CONF, LUA_SHIM_DIR
from tests.support.redis_servers import redis_server  # noqa: F401 - a fixture

from .conftest import FAIRVISOR, _alive, token_bucket_policy, wait_until
from .test_llm_proxy import llm_policy, llm_request, mock_llm  # noqa: F401 - mock_llm: a fixture

pytestmark = pytest.mark.integration

GOLDEN = pathlib.Path(__file__).parent.parent / "cli" / "golden"
WORKERS = 4  # workers 0 and 2 talk to engine 0, workers 1 and 3 to engine 1
TIMEOUT = ["--engine-timeout-ms", "3000"]
POLICY = token_bucket_policy("header:x-tenant", tps=10_000, burst=10_000)


def engine_reply(sock_path: str, msg):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(sock_path)
        return call(sock, msg)


def decisions(sock_path: str) -> float:
    """Decisions this one engine made since it started (its own /metrics, over its own socket)."""
    samples = parse_metrics(engine_reply(sock_path, Metrics()).body)
    return sum(v for _, v in samples.get("fairvisor_decisions_total", []))


def engine_admin(sock_path: str, uri: str) -> dict:
    return json.loads(engine_reply(sock_path, Admin(uri=uri.encode(), method=b"GET")).body)


def sockets(edge) -> list[str]:
    return [str(edge.state_dir.resolve() / "engine.sock"), str(edge.state_dir.resolve() / "engine-1.sock")]


def engine_pids(edge) -> list[int | None]:
    return [edge.pid_of("engine.pid"), edge.pid_of("engine-1.pid")]


def traffic(edge, n: int, tenant: str | None = None) -> list:
    """n decision requests from 16 concurrent clients, each on a new connection (so that several
    nginx workers, and through them both engines, take them)."""
    def one(i):
        return edge.request("POST", "/v1/decision", fresh=True, headers={
            "X-Forwarded-For": "10.0.0.1", "X-Original-Method": "GET", "X-Original-URI": "/api/items",
            "X-Tenant": tenant or f"t{i % 5}"})

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture
def two_engines(start_edge, redis_server):  # noqa: F811 - the fixture
    env = {"FAIRVISOR_ENGINES": "2", "FAIRVISOR_STATE_URL": redis_server.url}
    edge = start_edge(POLICY, flags=TIMEOUT, env=env, workers=WORKERS)
    yield edge
    for pid in engine_pids(edge)[1:]:  # the conftest's stop() knows engine 0's pid file only
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_both_engines_answer_requests(two_engines):
    edge = two_engines
    socks = sockets(edge)
    assert all(engine_answers(s) for s in socks)
    answered = []

    def both_used():
        answered.extend(traffic(edge, 64))
        return all(decisions(s) > 0 for s in socks)

    wait_until(both_used, 20.0, "requests decided by both engines", interval_s=0)
    assert {r.status for r in answered} == {200}
    assert not any(r.headers.get("X-Fairvisor-Degraded") for r in answered)
    # The admin /metrics is one exposition with every engine's samples, labelled.
    per_engine = [decisions(s) for s in socks]
    merged = parse_metrics(edge.admin("/metrics").body.decode())
    by_engine = {}
    for labels, value in merged["fairvisor_decisions_total"]:
        by_engine[labels["engine"]] = by_engine.get(labels["engine"], 0) + value
    assert by_engine["0"] >= per_engine[0] and by_engine["1"] >= per_engine[1]
    assert sorted((lb["engine"], v) for lb, v in merged["fairvisor_engine_up"]) == [("0", 1.0), ("1", 1.0)]
    body = edge.admin("/metrics").body.decode()
    assert body.count("# TYPE fairvisor_decisions_total counter") == 1
    # One valid exposition: Prometheus's own checker accepts it (families whole, HELP/TYPE once).
    lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # /readyz on both listeners: every engine is ready.
    assert edge.get("/readyz", fresh=True).status == 200 and edge.admin("/readyz").status == 200
    # `fairvisor status` over the admin listener sums the engines.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
    out = subprocess.run([*FAIRVISOR, "status", "--admin-url", f"http://127.0.0.1:{edge.admin_port}", "--json"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    status = json.loads(out.stdout)
    allowed = [d for d in status["decisions"] if d["action"] == "allow"]
    assert len(allowed) == 1 and allowed[0]["count"] >= sum(per_engine)
    assert status["counters"]["kill_switches_active"] == 0


def test_kill_9_of_one_engine_restarts_it_alone_and_requests_keep_being_answered(two_engines):
    edge = two_engines
    socks = sockets(edge)
    before = engine_pids(edge)
    os.kill(before[1], signal.SIGKILL)
    answered = traffic(edge, 64)  # meanwhile workers of engine 1 apply the fail mode (open)
    assert {r.status for r in answered} == {200}
    wait_until(lambda: edge.pid_of("engine-1.pid") not in (None, before[1]) and engine_answers(socks[1]), 10.0,
               "the supervisor to restart engine 1")
    assert engine_pids(edge)[0] == before[0], "engine 0 was left running"
    assert "engine 1 exited with status -9; restarting" in edge.log()

    def restarted_one_decides():
        rs = traffic(edge, 32)
        assert {r.status for r in rs} == {200}
        return decisions(socks[1]) > 0

    wait_until(restarted_one_decides, 20.0, "the restarted engine 1 to decide requests again", interval_s=0)


def test_sigterm_stops_nginx_and_every_engine(start_edge, redis_server):  # noqa: F811
    env = {"FAIRVISOR_ENGINES": "2", "FAIRVISOR_STATE_URL": redis_server.url}
    edge = start_edge(POLICY, flags=TIMEOUT, env=env, workers=WORKERS)
    pids = [*engine_pids(edge), edge.pid_of("nginx.pid")]
    assert all(pids) and all(_alive(p) for p in pids)
    assert edge.stop() == 0
    assert not any(_alive(p) for p in pids), edge.log()
    assert not any(os.path.exists(s) for s in sockets(edge))
    log = edge.log()
    assert log.index("nginx stopped (status 0)") < log.index("engine 0 stopped (status 0)")
    assert "engine 1 stopped (status 0)" in log


def test_admin_writes_reach_every_engine_under_one_id(two_engines):
    edge = two_engines
    socks = sockets(edge)
    added = edge.admin("/v1/admin/kill-switches", "POST", headers={"Content-Type": "application/json"},
                       body=json.dumps({"scope_key": "header:x-tenant", "scope_value": "acme"}).encode())
    assert added.status == 201, added.body
    switch_id = added.json()["kill_switch"]["id"]
    assert "Fairvisor-Peers" not in added.headers  # between engine 0 and the shim only
    held = [[s["id"] for s in engine_admin(p, "/v1/admin/kill-switches")["kill_switches"]] for p in socks]
    assert held == [[switch_id], [switch_id]]
    metrics = parse_metrics(edge.admin("/metrics").body.decode())
    assert sorted((lb["engine"], v) for lb, v in metrics["fairvisor_kill_switch_active"]) == [("0", 1.0), ("1", 1.0)]
    rejected = traffic(edge, 32, tenant="acme")
    assert {r.status for r in rejected} == {429}
    removed = edge.admin(f"/v1/admin/kill-switches/{switch_id}", "DELETE")
    assert removed.status == 200, removed.body
    assert [engine_admin(p, "/v1/admin/kill-switches")["kill_switches"] for p in socks] == [[], []]


def test_a_selftest_run_is_known_to_every_engine(two_engines):
    edge = two_engines
    started = edge.admin("/v1/admin/selftest", "POST")
    assert started.status == 200, started.body
    assert "Fairvisor-Peers" not in started.headers
    run = started.json()["run"]
    # Engine 1 holds the run engine 0 started (same id; the secret too, or its requests would not count).
    ended = engine_reply(sockets(edge)[1], Admin(uri=b"/v1/admin/selftest/end", method=b"POST",
                                                 body=json.dumps({"run": run}).encode()))
    assert (ended.status, json.loads(ended.body)) == (200, {"run": run, "ended": True})
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
    out = subprocess.run([*FAIRVISOR, "selftest", "--url", f"http://127.0.0.1:{edge.port}",
                          "--admin-url", f"http://127.0.0.1:{edge.admin_port}"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_readyz_is_not_ready_while_one_engine_is_down(two_engines):
    edge = two_engines
    pid = edge.pid_of("engine-1.pid")
    os.kill(pid, signal.SIGSTOP)  # alive but silent: the supervisor leaves it; nginx times out
    try:
        assert edge.get("/readyz", fresh=True).status == 503
        metrics = parse_metrics(edge.admin("/metrics").body.decode())
        assert sorted((lb["engine"], v) for lb, v in metrics["fairvisor_engine_up"]) == [("0", 1.0), ("1", 0.0)]
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: edge.get("/readyz", fresh=True).status == 200, 10.0, "readiness once engine 1 answers")


def test_a_silent_engine_gets_its_workers_the_fail_mode_and_the_others_keep_deciding(start_edge,
                                                                                     redis_server):  # noqa: F811
    env = {"FAIRVISOR_ENGINES": "2", "FAIRVISOR_STATE_URL": redis_server.url}
    # The timeout is the subject here: short, so that engine 1's workers give up quickly.
    edge = start_edge(POLICY, flags=["--fail-mode", "closed", "--engine-timeout-ms", "300"], env=env,
                      workers=WORKERS)
    pid = edge.pid_of("engine-1.pid")
    os.kill(pid, signal.SIGSTOP)  # alive (the supervisor leaves it) but answering nothing
    seen = {}
    try:
        def both_kinds():
            for r in traffic(edge, 32):
                seen.setdefault(r.status, r)
            return 200 in seen and 503 in seen

        wait_until(both_kinds, 30.0, "answers from engine 0's workers and the fail mode from engine 1's",
                   interval_s=0)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert set(seen) == {200, 503}
    assert seen[503].headers["X-Fairvisor-Reason"] == "engine_unavailable"  # fail closed, as with one engine
    assert seen[200].headers.get("X-Fairvisor-Degraded") is None


def decide_on(sock_path: str, tenant: str) -> int:
    """One Decide straight to this engine's socket (as its nginx workers send them): 0 = allowed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(sock_path)
        hello = call(sock, Hello(protocol_version=PROTOCOL_VERSION))
        values = {"x-tenant": tenant.encode(), "x-forwarded-for": b"10.0.0.1", "x-original-method": b"GET",
                  "x-original-uri": b"/api/items"}
        verdict = call(sock, Decide(generation=hello.generation, surface=0, method=b"POST", uri=b"/v1/decision",
                                    host=b"edge", remote_addr=b"127.0.0.1",
                                    headers=[values.get(h) for h in hello.headers]))
        return verdict.status


def synced(sock_path: str) -> bool:
    """The store confirmed every change this engine made (fairvisor_state_sync_backlog_keys 0)."""
    samples = parse_metrics(engine_reply(sock_path, Metrics()).body)
    return [v for _, v in samples.get("fairvisor_state_sync_backlog_keys", [])] == [0.0]


def test_a_rate_limit_holds_across_the_two_engines_within_one_request_per_other_engine(start_edge,
                                                                                   redis_server):  # noqa: F811
    """docs/fleet.md, "Engines per edge": taking turns, each engine decides on the fleet's count as
    of its own last sync, so the burst is exceeded by at most one request per other engine."""
    burst = 10
    policy = token_bucket_policy("header:x-tenant", tps=0.001, burst=burst)  # no refill to speak of
    env = {"FAIRVISOR_ENGINES": "2", "FAIRVISOR_STATE_URL": redis_server.url}
    edge = start_edge(policy, flags=TIMEOUT, env=env, workers=WORKERS)
    socks = sockets(edge)
    statuses = []
    for n in range(2 * burst + 4):
        sock = socks[n % 2]
        statuses.append(decide_on(sock, "shared"))
        wait_until(lambda: synced(sock), 10.0, "the sync to confirm the decision")
    allowed = statuses.count(0)
    assert burst <= allowed <= burst + 1, statuses  # one engine alone would admit 2 x burst between them
    assert statuses[-4:] == [429] * 4
    # Through nginx too, on both engines' workers: the tenant stays refused.
    assert {r.status for r in traffic(edge, 32, tenant="shared")} == {429}


def settlements(sock_path: str) -> dict[str, float]:
    samples = parse_metrics(engine_reply(sock_path, Metrics()).body)
    return {lb["result"]: v for lb, v in samples.get("fairvisor_llm_settlements_total", [])}


def test_each_settlement_reaches_the_engine_that_made_its_reservation(start_edge, redis_server,  # noqa: F811
                                                                      mock_llm):  # noqa: F811
    env = {"FAIRVISOR_ENGINES": "2", "FAIRVISOR_STATE_URL": redis_server.url}
    edge = start_edge(llm_policy(), env=env, workers=WORKERS, flags=[
        *TIMEOUT, "--mode", "reverse_proxy", "--backend-url", mock_llm.url, "--llm-format", "openai"])
    socks = sockets(edge)

    def chat(i):
        path, body = llm_request("openai", stream=i % 2 == 0, max_tokens=20)
        return edge.request("POST", path, body=body, fresh=True,
                            headers={"Content-Type": "application/json", "X-Tenant": f"t{i % 4}"})

    sent = []

    def both_settled():
        with ThreadPoolExecutor(8) as pool:
            sent.extend(pool.map(chat, range(16)))
        return all(sum(settlements(s).values()) > 0 for s in socks)

    wait_until(both_settled, 30.0, "LLM responses settled on both engines", interval_s=0)
    assert {r.status for r in sent} == {200}
    wait_until(lambda: sum(sum(settlements(s).values()) for s in socks) >= len(sent), 10.0,
               "every response to be settled")
    # A Settle that reached another engine would find no reservation there: counted as lost.
    assert [settlements(s).get("lost", 0) for s in socks] == [0, 0]
    results = [settlements(s) for s in socks]
    assert sum(sum(r.values()) for r in results) == len(sent), results  # each response settled once
    assert all(set(r) <= {"exact", "cut"} for r in results), results  # on its provider usage, or the allowance


def test_more_than_one_engine_without_a_state_url_is_refused(tmp_path):
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRVISOR_")}
    env["FAIRVISOR_ENGINES"] = "2"
    proc = subprocess.run([*FAIRVISOR, "run", "--state-dir", str(state), "--listen", "127.0.0.1:1"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "FAIRVISOR_ENGINES" in proc.stderr and "FAIRVISOR_STATE_URL" in proc.stderr, proc.stderr
    assert not (state / "nginx" / "engine.pid").exists()


def _normal(text: str) -> str:
    text = text.replace(str(LUA_SHIM_DIR), "@LUA_SHIM_DIR@").replace(str(ADMIN_CONF), "@ADMIN_CONF@")
    return re.sub(r"(?m)^user .*;$", "", text)


@pytest.mark.parametrize("name, env", [
    ("decision_service", {}),
    ("reverse_proxy", {"FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_BACKEND_URL": "https://api.openai.com",
                       "FAIRVISOR_ENGINE_SOCKET": "/run/fairvisor/engine.sock"}),
])
def test_one_engine_renders_the_nginx_config_of_before(name, env):
    """tests/cli/golden/ holds the configs rendered before FAIRVISOR_ENGINES existed."""
    settings = from_env({"FAIRVISOR_STATE_DIR": "/var/lib/fairvisor-golden", **env})
    assert settings.engines == 1
    rendered = _normal(render(settings, "/var/lib/fairvisor-golden/nginx"))
    assert rendered == (GOLDEN / f"nginx-n1-{name}.conf").read_text()


def test_n_engines_give_the_shim_every_socket_engine_0_first():
    settings = from_env({"FAIRVISOR_STATE_DIR": "/var/lib/fv", "FAIRVISOR_ENGINES": "3",
                         "FAIRVISOR_STATE_URL": "redis://127.0.0.1:6379/0"})
    conf = render(settings, "/var/lib/fv/nginx")
    assert engine_sockets(settings) == ["/var/lib/fv/engine.sock", "/var/lib/fv/engine-1.sock",
                                        "/var/lib/fv/engine-2.sock"]
    assert 'socket = { "/var/lib/fv/engine.sock", "/var/lib/fv/engine-1.sock", "/var/lib/fv/engine-2.sock" },' in conf
