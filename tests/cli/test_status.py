"""`fairvisor status` over the engine socket and over the edge's HTTP, with a real Engine behind both."""

import http.server
import json
import socketserver
import threading

import pytest
from click.testing import CliRunner

from pyengine.cli.main import main
from pyengine.cli.status_cmd import parse_metrics, value
from pyengine.protocol.framing import HEADER_BYTES, decode_request, encode_frame
from pyengine.protocol.messages import Admin
from tests.engine.helpers import described, make_engine, one_rule_bundle

RULE = {"name": "per-ip", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 1, "burst": 2}}


def busy_engine():
    engine = make_engine(one_rule_bundle(RULE, version=7), decision_log="off")
    for _ in range(5):
        described(engine, xff="10.0.0.1")  # 2 allowed, 3 rejected
    described(engine, xff="10.0.0.2")
    engine.upkeep()  # refreshes the state-keys gauge
    return engine


@pytest.fixture
def engine_socket(tmp_path):
    """serve(engine) -> socket path: the engine's frames answered on a real Unix socket."""
    servers = []

    def serve(engine):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                while True:
                    head = self.request.recv(HEADER_BYTES, socketserver.socket.MSG_WAITALL)
                    if len(head) < HEADER_BYTES:
                        return
                    body = self.request.recv(int.from_bytes(head, "big"), socketserver.socket.MSG_WAITALL)
                    self.request.sendall(encode_frame(engine.handle(decode_request(body))))

        path = str(tmp_path / "engine.sock")
        server = socketserver.ThreadingUnixStreamServer(path, Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return path

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_status_json_over_the_socket(engine_socket):
    engine = busy_engine()
    path = engine_socket(engine)
    result = CliRunner().invoke(main, ["status", "--socket", path, "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["ready"] is True
    assert (s["health"]["policy_version"], len(s["health"]["policy_hash"])) == (7, 16)
    assert s["decisions"] == [
        {"action": "allow", "reason": "", "policy": "p1", "count": 3},
        {"action": "reject", "reason": "rate_limit_exceeded", "policy": "p1", "count": 3},
    ]
    assert s["health"]["top_rejected_keys"] == [{"policy": "p1", "key": engine.decision_log.hasher.digest("10.0.0.1"), "rejections": 3}]
    assert s["latency_ms"]["samples"] == 5 and 0 < s["latency_ms"]["median"] <= s["latency_ms"]["max"]
    assert s["counters"]["reloads_ok"] == 1 and s["counters"]["state_keys"] == 2


def test_status_table_via_env_socket(engine_socket):
    engine = busy_engine()
    path = engine_socket(engine)
    result = CliRunner().invoke(main, ["status"], env={"FAIRVISOR_ENGINE_SOCKET": path})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Fairvisor  ok  via socket ")
    assert lines[1].startswith("policy     version 7  hash ")
    assert ["reject", "rate_limit_exceeded", "p1", "3"] in [line.split() for line in lines]
    assert ["p1", engine.decision_log.hasher.digest("10.0.0.1"), "3"] in [line.split() for line in lines]
    assert "\x1b[" not in result.stdout


def test_status_shows_the_shim_pipe_batching(engine_socket):
    """The engine server's counts (set when /metrics is scraped): connections, frames per read."""
    engine = busy_engine()

    def server_counts(metrics):  # what EngineServer._report_transport sets
        metrics.shim_connections.set((), 3)
        metrics.frames.values[()] = 1200
        metrics.frame_reads.values[()] = 96

    engine.scrape_hooks.append(server_counts)
    path = engine_socket(engine)
    s = json.loads(CliRunner().invoke(main, ["status", "--socket", path, "--json"]).stdout)
    assert s["shim"] == {"connections": 3, "frames": 1200, "frames_per_read": 12.5}
    out = CliRunner().invoke(main, ["status", "--socket", path]).stdout
    assert "shim       3 connections, 1200 frames, 12.50 frames per read" in out.splitlines()


def test_status_without_frames_says_no_ratio(engine_socket):
    s = json.loads(CliRunner().invoke(main, ["status", "--socket", engine_socket(busy_engine()), "--json"]).stdout)
    assert s["shim"] == {"connections": 0, "frames": 0, "frames_per_read": None}


def test_not_ready_exits_1(engine_socket, tmp_path):
    from pyengine.config import from_env
    from pyengine.engine import Engine

    path = engine_socket(Engine(from_env({}, decision_log="off")))
    result = CliRunner().invoke(main, ["status", "--socket", path])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[:2] == [f"Fairvisor  not_ready  via socket {path}", "reason     no_policy_loaded"]


def test_a_refused_file_on_disk_exits_4_until_the_file_is_good_again(engine_socket, tmp_path):
    from pyengine.config import from_env
    from pyengine.engine import Engine

    policy = tmp_path / "policy.json"
    good = json.dumps(one_rule_bundle(RULE, version=3))
    policy.write_text(good)
    engine = Engine(from_env({}, decision_log="off"))
    engine.load_file(str(policy))
    path = engine_socket(engine)
    policy.write_text(good.replace('"burst": 2', '"burst": 0'))
    engine.request_reload()
    engine.watch()
    result = CliRunner().invoke(main, ["status", "--socket", path])
    assert result.exit_code == 4
    assert ("refused    policy.json: $.policies[0].spec.rules[0].algorithm_config.burst:"
            " must be a number > 0 (got 0)") in result.stdout.splitlines()
    policy.write_text(good)  # the edit undone: the bundle in force is the file again
    engine.request_reload()
    engine.watch()
    assert CliRunner().invoke(main, ["status", "--socket", path]).exit_code == 0


def test_unreachable_exits_3(tmp_path):
    result = CliRunner().invoke(main, ["status", "--socket", str(tmp_path / "none.sock"), "--json"])
    assert result.exit_code == 3
    assert json.loads(result.stdout)["health"] == {"status": "unreachable"}
    assert "unreachable: engine socket" in result.stderr


def _admin_server(engine):
    """An HTTP server answering like the admin listener: every request through engine.handle(Admin)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            auth = self.headers.get("Authorization")
            reply = engine.handle(Admin(uri=self.path.encode(), method=b"GET",
                                        authorization=auth.encode() if auth else None))
            status, body = reply.status, reply.body
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("flag", ["--admin-url", "--url"])  # --url: the older name, kept
def test_status_over_the_admin_url(flag):
    engine = busy_engine()
    server = _admin_server(engine)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(main, ["status", flag, url, "--json"])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["source"] == url and s["health"]["policy_version"] == 7
    assert s["health"]["top_rejected_keys"][0]["rejections"] == 3
    assert sum(d["count"] for d in s["decisions"]) == 6


def test_status_sends_fairvisor_admin_token_over_http_and_the_socket(engine_socket):
    engine = make_engine(one_rule_bundle(RULE, version=7), decision_log="off", admin_token="tk-1")
    server = _admin_server(engine)
    path = engine_socket(engine)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for where in (["--admin-url", url], ["--socket", path]):
            assert CliRunner().invoke(main, ["status", *where], env={"FAIRVISOR_ADMIN_TOKEN": "tk-1"}).exit_code == 0
            for env in ({"FAIRVISOR_ADMIN_TOKEN": None}, {"FAIRVISOR_ADMIN_TOKEN": "tk-2"}):
                refused = CliRunner().invoke(main, ["status", *where, "--json"], env=env)
                assert refused.exit_code == 5, where
                assert json.loads(refused.stdout)["health"] == {"status": "unauthorized"}
                assert "FAIRVISOR_ADMIN_TOKEN" in refused.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_status_defaults_to_the_admin_listener_on_9090(monkeypatch):
    from pyengine.cli import status_cmd

    seen = []

    def fake_fetch(url, timeout_s):
        seen.append(url)
        raise status_cmd.Unreachable(f"{url}: refused")

    monkeypatch.setattr(status_cmd, "fetch_url", fake_fetch)
    result = CliRunner().invoke(main, ["status"], env={"FAIRVISOR_ENGINE_SOCKET": None, "FAIRVISOR_STATE_DIR": None,
                                                       "FAIRVISOR_ADMIN_URL": None})
    assert result.exit_code == 3 and seen == ["http://127.0.0.1:9090"]


def test_parse_metrics_handles_labels_and_escapes():
    text = ('# HELP x y\n# TYPE x counter\nx{a="1",b="q\\"uote"} 3\nx{a="2",b=""} 4.5\n'
            'h_bucket{le="+Inf"} 2\nplain 7\n')
    m = parse_metrics(text)
    assert m["x"] == [({"a": "1", "b": 'q"uote'}, 3.0), ({"a": "2", "b": ""}, 4.5)]
    assert (value(m, "x"), value(m, "x", a="2"), value(m, "plain"), value(m, "missing")) == (7.5, 4.5, 7.0, 0)
    assert m["h_bucket"] == [({"le": "+Inf"}, 2.0)]
