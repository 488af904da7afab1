"""PKD against the best baseline of a grid cell (``benchmarks/pkd_grid.py``), on hand-made cells."""

import json

import pytest


def _cell(pkd, **baselines):
    def row(acc):
        mean = sum(acc) / len(acc)
        return {"acc": acc, "mean": mean, "std": (sum((a - mean) ** 2 for a in acc) / len(acc)) ** 0.5}

    methods = {name: row(acc) for name, acc in baselines.items()}
    methods["pkd"] = row(pkd)
    methods["pkd_oracle_teacher"] = row([0.99] * len(pkd))  # a diagnostic, never the best baseline
    methods["pkd_no_denoise"] = row([0.98] * len(pkd))  # a PKD variant, not a baseline
    return {"dataset": "cora", "protocol": "strict", "shots": 3, "methods": methods, "per_seed": [
        {"pkd": {"expansion": {"denoise_gate": {"chosen": c}}}} for c in ("raw", "denoised", "denoised")]}


def test_vs_best_baseline_hand_cases(load_benchmark_script):
    grid = load_benchmark_script("pkd_grid")
    # PKD 0.60, 0.62, 0.64 against the best baseline 0.70, 0.70, 0.70: paired difference -8 ± 1.63 points
    v = grid.vs_best_baseline(_cell([0.60, 0.62, 0.64], llm_only=[0.70, 0.70, 0.70], gcn=[0.5, 0.9, 0.1]))
    assert v["best"] == "llm_only"  # highest mean (0.70 > 0.50); PKD rows and the oracle are not baselines
    assert v["diff"][0] == pytest.approx(-8.0) and v["diff"][1] == pytest.approx((8 / 3) ** 0.5)
    assert v["below"] and v["below_baseline_sd"]
    # within one paired sd: -1 ± 2 points
    v = grid.vs_best_baseline(_cell([0.68, 0.72, 0.67], llm_only=[0.70, 0.70, 0.70]))
    assert v["diff"][0] == pytest.approx(-1.0) and not v["below"]
    assert v["below_baseline_sd"]  # but the baseline's own sd is 0: the stricter reading flags it
    # above
    v = grid.vs_best_baseline(_cell([0.8, 0.8, 0.8], llm_only=[0.70, 0.71, 0.72]))
    assert not v["below"] and not v["below_baseline_sd"] and v["diff"][0] == pytest.approx(9.0)


def test_vs_best_baseline_table_reads_the_cells(tmp_path, load_benchmark_script):
    grid = load_benchmark_script("pkd_grid")
    cell = _cell([0.60, 0.62, 0.64], llm_only=[0.70, 0.70, 0.70])
    (tmp_path / "pkd_cora_strict_3.json").write_text(json.dumps(cell))
    table = grid.vs_best_baseline_table(tmp_path, "strict").splitlines()
    assert len(table) == 3  # header, rule, one cell
    assert table[2] == ("| cora | 3 | 62.00 ± 1.63 | llm_only | 70.00 ± 0.00 | -8.00 ± 1.63 | **yes** | "
                        "**yes** | 2 / 3 |")
