"""`fairvisor kill-switch` and `fairvisor override` over HTTP against a stand-in admin listener
that routes to a real engine's admin API (the nginx path is tests/integration/test_admin_console.py)."""

import http.server
import json
import threading

import pytest
from click.testing import CliRunner

from pyengine.clock import FakeClock
from pyengine.cli.main import main

from ..engine.helpers import decide, make_engine, one_rule_bundle

TOKEN = "t0k3n-for-tests"
RULE = {"name": "per-org", "limit_keys": ["header:x-org"], "algorithm": "token_bucket",
        "algorithm_config": {"tokens_per_second": 1, "burst": 2}}


@pytest.fixture
def edge():
    engine = make_engine(one_rule_bundle(RULE), clock=FakeClock())
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self):
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, ctype, body = 401, "application/problem+json", '{"status":401}'
            else:
                n = int(self.headers.get("Content-Length") or 0)
                status, ctype, body = engine.admin_routes.handle(self.command, self.path, self.rfile.read(n) or None,
                                                                 "token:test")
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield engine, f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def run(args, token=TOKEN):
    env = {"FAIRVISOR_ADMIN_TOKEN": token} if token else {}
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_kill_switch_add_list_remove(edge):
    engine, url, seen = edge
    r = run(["kill-switch", "add", "--scope", "header:x-org=evil", "--reason", "fraud", "--ttl", "2h",
             "--admin-url", url])
    assert r.exit_code == 0, r.output
    switch_id = r.output.split()[0]
    assert switch_id.startswith("ks_") and seen[-1] == ("POST", "/v1/admin/kill-switches", f"Bearer {TOKEN}")
    assert decide(engine, headers={"X-Org": "evil"}).status == 429
    listed = run(["kill-switch", "list", "--admin-url", url])
    assert switch_id in listed.output and "fraud" in listed.output and "2026-01-01T02:00:00Z" in listed.output
    as_json = json.loads(run(["kill-switch", "list", "--json", "--admin-url", url]).output)
    assert [s["id"] for s in as_json["kill_switches"]] == [switch_id]
    assert run(["kill-switch", "remove", switch_id, "--admin-url", url]).exit_code == 0
    assert decide(engine, headers={"X-Org": "evil"}).status == 0
    gone = run(["kill-switch", "remove", switch_id, "--admin-url", url])
    assert gone.exit_code == 1 and "not_found" in gone.output


def test_override_add_list_remove(edge):
    engine, url, _ = edge
    r = run(["override", "add", "--scope", "header:x-org=acme", "--multiplier", "3", "--ttl", "30m",
             "--admin-url", url])
    assert r.exit_code == 0, r.output
    assert "applies to p1/per-org" in r.output
    assert sum(decide(engine, headers={"X-Org": "acme"}).status == 0 for _ in range(10)) == 6
    listed = run(["override", "list", "--admin-url", url]).output
    assert "x3" in listed and "header:x-org=acme" in listed
    oid = r.output.split()[0]
    assert run(["override", "remove", oid, "--admin-url", url]).exit_code == 0
    assert run(["override", "list", "--admin-url", url]).output.strip() == "no limit overrides"


def test_absolute_limits_flag(edge):
    _, url, _ = edge
    r = run(["override", "add", "--scope", "header:x-org=acme", "--limit", "burst=10", "--limit",
             "tokens_per_second=5", "--until", "2026-01-02T00:00:00Z", "--json", "--admin-url", url])
    assert json.loads(r.output)["override"]["limits"] == {"burst": 10.0, "tokens_per_second": 5.0}


def test_api_refusal_shows_each_field_path(edge):
    _, url, _ = edge
    r = run(["override", "add", "--scope", "header:x-org=acme", "--multiplier", "2", "--admin-url", url])
    assert r.exit_code == 1 and "$.ttl_s: required" in r.output


def test_missing_token_exits_5_and_unreachable_3(edge):
    _, url, _ = edge
    assert run(["kill-switch", "list", "--admin-url", url], token=None).exit_code == 5
    assert run(["kill-switch", "list", "--admin-url", "http://127.0.0.1:9"]).exit_code == 3


@pytest.mark.parametrize("args, words", [
    (["kill-switch", "add", "--scope", "novalue"], "KEY=VALUE"),
    (["kill-switch", "add", "--scope", "header:x=1", "--ttl", "soon"], "positive duration"),
    (["override", "add", "--scope", "header:x=1", "--limit", "burst"], "FIELD=NUMBER"),
])
def test_bad_flags_are_usage_errors(args, words):
    r = run(args)
    assert r.exit_code == 2 and words in r.output
