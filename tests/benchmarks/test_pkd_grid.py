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


def _strict_cell(counts, pkd, raw):
    """A strict cell decided by the veto rule; per seed: (referee-only, annotator-only right) of 15."""
    from graphspike_kd.graph.pkd import referee_decision

    per_seed = []
    for seed, (b, c) in enumerate(counts):
        chosen = "denoised" if referee_decision(b, c, 15, rule="veto") else "raw"
        per_seed.append({"seed": seed, "pkd": {"expansion": {"denoise_gate": {
            "rule": "veto", "chosen": chosen, "referee_only_right": b, "llm_only_right": c, "held_out": 15,
            "confidence": 0.9}}}})
    # the pkd row equals the raw one where the veto kept the raw labels, as a real run records
    pkd = [p if g["pkd"]["expansion"]["denoise_gate"]["chosen"] == "denoised" else r
           for p, r, g in zip(pkd, raw, per_seed, strict=True)]
    methods = {"pkd": {"acc": pkd}, "pkd_no_denoise": {"acc": raw}, "llm_only": {"acc": [0.5] * len(raw)}}
    for m in methods.values():
        m["mean"] = sum(m["acc"]) / len(m["acc"])
        m["std"] = 0.0
    return {"dataset": "cora", "protocol": "strict", "shots": 5, "methods": methods, "per_seed": per_seed}


def test_referee_rule_outcomes(load_benchmark_script):
    """Seed 0: referees win 5 of 5 discordant pairs (both rules denoise); seed 1: 3 vs 3 (only veto);
    seed 2: the annotator wins 5 of 5 (neither)."""
    grid = load_benchmark_script("pkd_grid")
    cell = _strict_cell([(5, 0), (3, 3), (0, 5)], pkd=[0.8, 0.7, 0.6], raw=[0.5, 0.5, 0.5])
    out = grid.referee_rule_outcomes(cell)
    assert out["raw"] == pytest.approx([50, 50, 50])
    assert out["veto"] == pytest.approx([80, 70, 50])
    assert out["cv"] == pytest.approx([80, 50, 50])
    # a cell recorded under another rule cannot give every rule's result
    cell["per_seed"][1]["pkd"]["expansion"]["denoise_gate"]["rule"] = "cv"
    with pytest.raises(ValueError, match="veto"):
        grid.referee_rule_outcomes(cell)
