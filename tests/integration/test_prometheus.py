"""Debian's Prometheus scrapes the admin listener's /metrics with the bearer token, and every
panel of docs/grafana-dashboard.json queries series it holds (issue 18)."""

import json
import pathlib
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from .conftest import free_port, token_bucket_policy, wait_until

pytestmark = pytest.mark.integration

TOKEN = "adm-prom-2c7d"
DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def prometheus(tmp_path):
    """start(admin_port) -> base URL of a Prometheus scraping it every second, with and without the token."""
    procs = []

    def start(admin_port: int) -> str:
        assert PROMETHEUS, "prometheus is not installed: scripts/bootstrap installs it (apt-get install prometheus)"
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: fairvisor
    authorization: {{type: Bearer, credentials: {TOKEN}}}
    static_configs: [{{targets: ["127.0.0.1:{admin_port}"]}}]
  - job_name: no_token
    static_configs: [{{targets: ["127.0.0.1:{admin_port}"]}}]
""")
        log = open(tmp_path / "prometheus.log", "wb")
        procs.append((subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                        f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT),
                      log))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc, log in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
    except OSError:
        return []
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_with_the_token_and_the_dashboard_queries_exist(start_edge, prometheus):
    policy = token_bucket_policy("header:x-tenant", tps=1, burst=2, policy_id="per-tenant")
    # A shadow policy too, so the would-reject panel has series to show.
    shadow = json.loads(json.dumps(policy["policies"][0]))
    shadow["id"] = "candidate"
    shadow["spec"]["mode"] = "shadow"
    shadow["spec"]["rules"][0]["algorithm_config"]["burst"] = 1
    policy["policies"].append(shadow)
    edge = start_edge(policy, flags=["--admin-token", TOKEN])
    base = prometheus(edge.admin_port)
    for _ in range(5):
        edge.decide(headers={"X-Tenant": "acme"})

    def scraped():
        series = query(base, 'fairvisor_decisions_total{action="reject"}')
        return any(s["metric"].get("policy") == "per-tenant" and float(s["value"][1]) >= 1 for s in series)

    wait_until(scraped, 60, "Prometheus to hold fairvisor_decisions_total from the admin listener")
    def up() -> dict:
        return {s["metric"]["job"]: s["value"][1] for s in query(base, "up")}
    wait_until(lambda: len(up()) == 2, 30, "both scrape jobs to run")
    assert up() == {"fairvisor": "1", "no_token": "0"}  # the token is what makes the scrape work

    # Every panel's query is valid PromQL over series this edge exports (rates need two scrapes).
    for _ in range(5):
        edge.decide(headers={"X-Tenant": "beta"})
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) >= 8

    missing = {}

    def all_answer():
        missing["now"] = [e for e in exprs if not query(base, e)]
        return not missing["now"]

    try:
        wait_until(all_answer, 30, "every dashboard panel to return series")
    except BaseException:
        raise AssertionError(f"panels without series: {missing['now']}") from None
