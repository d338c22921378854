"""bench/sparsify_table.py (issue #19's Results table) runs end to end in its ``--smoke`` variant (pattern-tiny, a
2-layer model, 1 epoch) and writes one row per method with finite metrics and sparsities that are fractions."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "sparsify_table.py"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def load_script(monkeypatch):
    """The script as a module (bench/ is not a package; its dataclasses need it in sys.modules while it loads)."""
    spec = importlib.util.spec_from_file_location("bench_sparsify_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_a_row_per_method(tmp_path, capsys, monkeypatch):
    script = load_script(monkeypatch)
    out = tmp_path / "sparsify_table.json"
    script.main(["--smoke", "--out", str(out), "--work-dir", str(tmp_path / "runs"),
                 "--data-root", str(tmp_path / "data")])
    result = json.loads(out.read_text())
    assert [row["method"] for row in result["rows"]] == list(script.METHODS)
    for row in result["rows"]:
        for side in ("before", "after"):
            measured = row[side]
            assert math.isfinite(measured["metric"]) and 0 <= measured["metric"] <= 100, (row["method"], side)
            assert math.isfinite(measured["flops_executed"]) and measured["flops_executed"] > 0
        assert row["sparsity"], row["method"]
        assert all(0.0 <= value <= 1.0 for value in row["sparsity"].values()), (row["method"], row["sparsity"])
        assert all(math.isfinite(value) and value > 0 for key, value in row["timing"].items() if key.endswith("ms")
                   or "ms_" in key), row["method"]
        assert row["claim"] == script.CLAIMS[row["method"]]
    rows = {row["method"]: row for row in result["rows"]}
    assert math.isfinite(rows["gin"]["control_full_finetune"]["after"]["metric"])
    assert all(math.isfinite(rows["density"][side]["sparse_graph_recall"]) for side in ("before", "after"))
    assert rows["density"]["config"]["data"]["name"] == "pattern-edges-tiny" and result["left_out"] == []
    assert result["machine"]["cpu_count"] and len(result["load_average_start"]) == 3
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| method | task | setting | sparsity reached | FLOPs saved | time saved |")
    assert len(table) == 2 + len(script.METHODS)                          # header, rule, one line a row
