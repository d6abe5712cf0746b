"""Chart the latency percentiles per path from bench/run_bench.py's Markdown table (its --out file).

Usage: .venv/bin/python bench/chart.py TABLE.md docs/bench-latency.png
Needs matplotlib: the `bench` extra (`pip install -e '.[bench]'`, done by `make bench`).
"""

from __future__ import annotations

import pathlib
import re
import sys

PERCENTILES = ("p50", "p90", "p99")


def parse_table(text: str) -> tuple[str, list[tuple[str, dict]]]:
    """(the first line: what was run, [(path, {"rps", "p50", "p90", "p99"})]) from run_bench's table."""
    header, rows = text.splitlines()[0] if text else "", []
    cols = None
    for line in text.splitlines():
        if not line.startswith("|"):
            if rows:
                break  # the first table only: the paced table after it has columns of its own
            continue
        if line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cols is None:
            cols = cells
            continue
        row = dict(zip(cols, cells))
        rows.append((row["path"], {"rps": float(row["RPS"].replace(",", "")),
                                   **{p: float(row[f"{p} ms"]) for p in PERCENTILES}}))
    if not rows:
        raise SystemExit("chart: no table rows found (expected bench/run_bench.py --out output)")
    return header, rows


def draw(header: str, rows: list[tuple[str, dict]], out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [re.sub(r"`", "", name) for name, _ in rows]
    fig, ax = plt.subplots(figsize=(10, 0.9 * len(rows) + 1.8), dpi=120)
    height = 0.8 / len(PERCENTILES)
    for i, p in enumerate(PERCENTILES):
        ys = [y + (i - 1) * height for y in range(len(rows))]
        values = [r[p] for _, r in rows]
        bars = ax.barh(ys, values, height=height, label=p)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=2, fontsize=7)
    ax.set_yticks(range(len(rows)), [f"{label}\n{r['rps']:,.0f} RPS" for label, (_, r) in zip(labels, rows)],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("latency, ms (wrk, loopback)")
    ax.set_title("Fairvisor latency percentiles per path", fontsize=10)
    ax.set_xlim(0, 1.12 * max(r[p] for _, r in rows for p in PERCENTILES))  # room for the value labels
    ax.legend(loc="upper right")
    fig.text(0.01, 0.01, header, fontsize=6, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    header, rows = parse_table(pathlib.Path(argv[1]).read_text())
    draw(header, rows, pathlib.Path(argv[2]))
    print(f"chart: wrote {argv[2]} ({len(rows)} paths)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
