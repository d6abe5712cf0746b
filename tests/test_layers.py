"""The package layout is the architecture: every import inside pyengine points down its layers.

Layers, top to bottom (README "Layout"): the root (process, wiring, tooling) with console/,
overlay/ and fleet/ (one layer: they wire each other; fleet/ shares the store and the overlay
between engines); policy/; guards/;
decision/; llm/ and algorithms/; state/ and protocol/. A module may import its own package and any layer below it; from the
root, only the process's leaves.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent / "pyengine"
RANK = {"<root>": 0, "console": 0, "overlay": 0, "devtools": 0, "policy": 1, "fleet": 0, "guards": 2,
        "decision": 3, "llm": 4, "algorithms": 4, "state": 5, "protocol": 5}
# Root modules every layer may import: they depend on nothing of the engine's.
LEAVES = {"pyengine.errors", "pyengine.config", "pyengine.signing", "pyengine"}


def _imports():
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                yield ".".join(parts), target
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyengine"):
                yield ".".join(parts), node.module


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / parts[1]).is_dir()):
        return parts[1]
    return "<root>"


def test_every_import_points_down():
    upward = []
    for src, dst in _imports():
        a, b = _layer(src), _layer(dst)
        if a == b or dst in LEAVES:
            continue
        if RANK[b] < RANK[a] or (RANK[b] == RANK[a] and RANK[a] > 0):  # the top may import itself
            upward.append(f"{src} -> {dst}")
    assert upward == []


def test_the_decision_layer_never_reads_policy_guards_or_the_root():
    for src, dst in _imports():
        if _layer(src) == "decision":
            assert _layer(dst) not in ("policy", "guards", "<root>") or dst in LEAVES, f"{src} -> {dst}"
