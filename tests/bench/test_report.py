"""bench/report.py: the generated block of docs/performance.md is replaced, the rest kept byte for byte."""

import datetime
import json
import pathlib

import pytest

from .. import bench_scripts

report = bench_scripts.load("report")
BEGIN, END = report.BEGIN, report.END

HEAD = "# Performance\n\nHand-written analysis, kept as is.\n\n## Latest `make bench` run\n\nOne sentence.\n\n"
TAIL = "\n\n## After the block\n\nMore hand-written text.\n"
DOC = HEAD + f"{BEGIN}\nold generated text\n{END}" + TAIL

RUN_BENCH = """wrk -t2 -c50 -d10s --latency, loopback, 2 CPUs, 1-min load average before the run 0.50

| path | RPS | ratio | p50 ms | p90 ms | p99 ms | non-2xx | nginx in-flight |
|---|---:|---:|---:|---:|---:|---:|---:|
| nginx `return 204` (baseline) | 100,000 | 1.00 | 0.40 | 0.50 | 0.70 | 0% | 0.4 |
| /v1/decision, real engine, five_rules.json | 6,000 | 0.06 | 7.40 | 11.56 | 51.47 | 83% | 47.8 |
"""
PROXY = """| path | RPS | ratio | p50 ms | p90 ms | p99 ms | non-2xx |
|---|---:|---:|---:|---:|---:|---:|
| plain nginx `proxy_pass` (baseline) | 30,000 | 1.00 | 1.30 | 2.90 | 5.50 | 0% |
| reverse proxy, real engine, 1 rule (token bucket per client address) | 7,500 | 0.25 | 6.00 | 10.60 | 15.80 | 0% |
"""
ENGINES = "| engines | RPS |\n|---:|---:|\n| 1 | 9,447 |\n| 2 | 11,291 |\n"
FLEET = "| limiter | consistency | admitted edge 1 + edge 2 | overshoot |\n|---|---|---:|---:|\n| token_bucket | strict | 900 + 1100 | +0 (0.0%) |\n"
LLM = "| path | streams/s |\n|---|---|\n| plain | 160.0 |\n| edge | 130.0 |\n"
ENGINE = {"benchmarks": [
    {"name": "test_bench_frame_round_trip", "stats": {"median": 85.3e-6, "min": 80.0e-6, "rounds": 1200}},
    {"name": "test_bench_token_bucket_acquire", "stats": {"median": 2.1e-6, "min": 2.0e-6, "rounds": 31192}},
    {"name": "test_bench_something_new", "stats": {"median": 0.5e-6, "min": 0.4e-6, "rounds": 10}},
]}
MEMORY = ('{"tenant_keys": 1000000, "rss_total_mb": 177.0, "rss_growth_mb": 152.0, '
          '"bytes_per_key": 159, "decide_us_mean": 30.5}\n')
MACHINE = {"cpus": 2, "cpu_model": "Test CPU", "load_avg": (1.5, 0.75, 0.25), "python": "CPython 3.11.7",
           "nginx": "nginx/1.22.1"}
WHEN = datetime.datetime(2026, 3, 4, 5, 6, tzinfo=datetime.UTC)


def _block(**parts) -> str:
    return report.render_block(when=WHEN, machine=MACHINE, **parts)


def test_replace_block_keeps_everything_outside_the_markers():
    out = report.replace_block(DOC, "new block\n")
    assert out == HEAD + f"{BEGIN}\nnew block\n{END}" + TAIL
    # A second run replaces the first run's block instead of adding to it.
    again = report.replace_block(out, "newer block")
    assert again == HEAD + f"{BEGIN}\nnewer block\n{END}" + TAIL
    assert "new block" not in again


@pytest.mark.parametrize("doc, found", [
    (HEAD + "old\n" + END + TAIL, "found 0 and 1"),
    (HEAD + BEGIN + "\nold\n" + TAIL, "found 1 and 0"),
    (HEAD + TAIL, "found 0 and 0"),
    (DOC + BEGIN + "\n" + END + "\n", "found 2 and 2"),
])
def test_missing_or_repeated_marker_is_a_clear_error(doc, found):
    with pytest.raises(report.ReportError) as err:
        report.replace_block(doc, "block", "docs/performance.md")
    assert str(err.value) == (f"docs/performance.md: expected exactly one `{BEGIN}` and one `{END}` marker, "
                              f"{found}; add them around the generated section")


def test_markers_in_the_wrong_order_are_an_error():
    with pytest.raises(report.ReportError, match="comes before"):
        report.replace_block(HEAD + END + "\nold\n" + BEGIN + TAIL, "block", "doc.md")


def test_block_holds_every_part_with_date_machine_and_engine_medians_in_us():
    block = _block(run_bench=RUN_BENCH, proxy=PROXY, llm=LLM, fleet=FLEET, engines=ENGINES, engine=ENGINE,
                   memory=report.memory_result(MEMORY))
    assert "Run finished 2026-03-04 05:06 UTC. Machine: 2 CPUs (Test CPU), load average 1.50 / 0.75 / 0.25" in block
    for table in (RUN_BENCH, PROXY, LLM, FLEET, ENGINES):
        assert table.strip() in block
    # Fastest first; seconds turned into µs; known names get their label, unknown ones stay as is.
    lines = block.splitlines()
    start = lines.index("| benchmark | median µs | min µs | rounds |") + 2
    rows = lines[start:lines.index("", start)]
    assert rows == ["| `test_bench_something_new` | 0.5 | 0.4 | 10 |",
                    "| `TokenBucket.acquire` (warm key) | 2.1 | 2.0 | 31,192 |",
                    "| frame → decide → frame, 5 rules | 85.3 | 80.0 | 1,200 |"]
    assert "1,000,000 tenant keys" in block and "159 bytes per key" in block
    assert "_not run_" not in block
    assert BEGIN not in block and END not in block


def test_parts_not_given_are_marked_not_run():
    block = _block(run_bench=RUN_BENCH)
    assert block.count("_not run_") == 6
    assert RUN_BENCH.strip() in block


def test_engine_json_without_benchmarks_is_an_error():
    with pytest.raises(report.ReportError, match="no benchmarks"):
        _block(engine={"benchmarks": []})
    with pytest.raises(report.ReportError, match="missing 'stats'"):
        _block(engine={"benchmarks": [{"name": "test_x"}]})


def test_memory_output_without_a_json_line_is_an_error():
    assert report.memory_result("warming up\n" + MEMORY)["bytes_per_key"] == 159
    with pytest.raises(report.ReportError, match="no JSON line"):
        report.memory_result("Traceback (most recent call last):\n")


def _inputs(tmp_path: pathlib.Path) -> list[str]:
    files = {"run_bench.md": RUN_BENCH, "proxy.md": PROXY, "llm.md": LLM, "engine.json": json.dumps(ENGINE),
             "memory.json": MEMORY}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return ["--run-bench", str(tmp_path / "run_bench.md"), "--proxy", str(tmp_path / "proxy.md"),
            "--llm", str(tmp_path / "llm.md"), "--engine-json", str(tmp_path / "engine.json"),
            "--memory", str(tmp_path / "memory.json")]


def test_main_rewrites_only_the_block_of_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "machine_info", lambda: MACHINE)
    doc = tmp_path / "performance.md"
    doc.write_text(DOC)
    assert report.main(["--doc", str(doc), *_inputs(tmp_path)]) == 0
    text = doc.read_text()
    assert text.startswith(HEAD + BEGIN + "\n") and text.endswith(END + TAIL)
    assert "old generated text" not in text
    assert PROXY.strip() in text and "| `TokenBucket.acquire` (warm key) | 2.1 |" in text
    assert capsys.readouterr().out == f"report: wrote the generated block of {doc}\n"


def test_main_leaves_a_file_without_markers_untouched_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "machine_info", lambda: MACHINE)
    doc = tmp_path / "performance.md"
    doc.write_text(HEAD + TAIL)
    assert report.main(["--doc", str(doc), *_inputs(tmp_path)]) == 2
    assert doc.read_text() == HEAD + TAIL
    assert f"expected exactly one `{BEGIN}`" in capsys.readouterr().err


def test_main_names_a_missing_input_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "machine_info", lambda: MACHINE)
    doc = tmp_path / "performance.md"
    doc.write_text(DOC)
    missing = tmp_path / "nowhere.md"
    assert report.main(["--doc", str(doc), "--proxy", str(missing)]) == 2
    assert doc.read_text() == DOC
    assert capsys.readouterr().err == f"report: proxy table: cannot read {missing}: No such file or directory\n"


def test_the_repository_document_has_one_generated_block():
    # Checked here so that a doc edit dropping a marker fails now, not at the end of `make bench`.
    doc = (bench_scripts.BENCH_DIR.parent / "docs" / "performance.md").read_text()
    out = report.replace_block(doc, "block", "docs/performance.md")
    assert out.split(BEGIN)[0] == doc.split(BEGIN)[0] and out.split(END)[1] == doc.split(END)[1]
