"""A CI-sized soak (bench/soak.py, 15 s): mixed traffic and reloads, 0 errors, engine RSS and fds flat.

`make soak` runs the same code for 10 minutes; see docs/reliability.md."""

import pytest

from .. import bench_scripts

pytestmark = pytest.mark.integration


def test_short_soak_has_no_errors_and_flat_engine_memory_and_fds():
    soak = bench_scripts.load("soak")
    report = soak.run(duration_s=15, reload_every_s=4, sample_every_s=1, warmup=0.3, log=lambda _line: None)
    assert soak.verdict(report, max_rss_growth_mb=8, max_fd_spread=4) == [], report["summary"]
    assert report["reloads"] >= 3
    assert report["counts"].get("decision 200", 0) > 1000
    assert report["counts"].get("llm-stream 200", 0) > 100
    for name, s in report["summary"].items():
        assert s["samples"] >= 8, (name, s)
