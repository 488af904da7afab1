"""``benchmarks/pkd_grid.py``: tables from recorded cells and writing them between Markdown markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def grid(load_benchmark_script):
    return load_benchmark_script("pkd_grid")


def _cell(results: Path, dataset: str, protocol: str, shots: int, pkd: float) -> None:
    methods = {
        "gcn_fewshot": {"acc": [0.5, 0.7], "mean": 0.6, "std": 0.1},
        "pkd": {"acc": [pkd, pkd], "mean": pkd, "std": 0.0},
    }
    payload = {"dataset": dataset, "protocol": protocol, "shots": shots, "methods": methods, "seeds": [0, 1],
               "annotator": "cached", "llm_model": "m", "wall_time_s": 12.0}
    (results / f"pkd_{dataset}_{protocol}_{shots}.json").write_text(json.dumps(payload))


def test_tables_list_every_cell_by_shots(grid, tmp_path):
    _cell(tmp_path, "cora", "paper", 1, 0.7)
    _cell(tmp_path, "cora", "paper", 5, 0.81)
    _cell(tmp_path, "texas", "strict", 5, 0.4)
    text = grid.tables(tmp_path)
    assert "| method | 1 shot | 5 shots |" in text
    assert "| pkd | 70.00 ± 0.00 | 81.00 ± 0.00 |" in text
    assert "| gcn_fewshot | 60.00 ± 10.00 | 60.00 ± 10.00 |" in text
    assert text.index("**cora**") < text.index("**texas**, strict")
    base = grid.baselines_table(tmp_path)
    assert "| cora | paper | cached (m) | 60.0 ± 10.0 | – | – | – | – | 81.0 ± 0.0 | 12 |" in base
    assert "texas | strict" in base and "cora | strict" not in base


def test_write_between_markers(grid, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- pkd-grid -->\nold\n<!-- /pkd-grid -->\noutro\n")
    grid.write_between_markers(doc, "pkd-grid", "new table")
    assert doc.read_text() == "intro\n<!-- pkd-grid -->\nnew table\n<!-- /pkd-grid -->\noutro\n"
    with pytest.raises(SystemExit, match="no <!-- other -->"):
        grid.write_between_markers(doc, "other", "x")
