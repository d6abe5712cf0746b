"""docs/grafana-dashboard.json queries only metric names the engine exports (the live check is
tests/integration/test_prometheus.py, against Debian's Prometheus)."""

import json
import pathlib
import re

from pyengine.metrics import EngineMetrics

DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def test_every_panel_queries_exported_metrics():
    exported = set()
    for metric in EngineMetrics().registry._metrics:
        exported.add(metric.name)
        if metric.kind == "histogram":
            exported.update(metric.name + s for s in ("_bucket", "_sum", "_count"))
    panels = json.loads(DASHBOARD.read_text())["panels"]
    names = {n for p in panels for t in p["targets"] for n in re.findall(r"fairvisor_[a-z_]+", t["expr"])}
    assert names and names <= exported, names - exported
    assert len({p["id"] for p in panels}) == len(panels)
