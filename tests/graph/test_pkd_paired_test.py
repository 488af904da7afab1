"""``benchmarks/pkd_paired_test.py``: the paired tests of PKD against its rule selectors."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def paired(load_benchmark_script):
    return load_benchmark_script("pkd_paired_test")


def test_sign_flip_is_exact(paired):
    # four positive differences: only the all-plus and all-minus patterns reach |sum| -> p = 2 / 16
    assert paired.sign_flip_p([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 / 16)
    # one negative difference of the smallest size: patterns with |sum| >= 8 of 1+2+3+4 -> 4 of 16
    assert paired.sign_flip_p([-1.0, 2.0, 3.0, 4.0]) == pytest.approx(4 / 16)
    assert paired.sign_flip_p([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="2\\^n"):
        paired.sign_flip_p([])


def _payload(pkd, rules, best, oracle):
    methods = {"pkd": {"acc": pkd}, "best_teacher": {"acc": best}, "pkd_oracle_teacher": {"acc": oracle}}
    names = ("pkd_random_teacher", "pkd_majority_teacher", "pkd_confident_teacher")
    for name, acc in zip(names, rules, strict=True):
        methods[name] = {"acc": acc}
    per_seed = [{"pkd": {"expansion": {"teacher_oracle": {"best_teacher_acc": b + 0.01}}}} for b in best]
    return {"dataset": "d", "shots": 5, "protocol": "paper", "seeds": list(range(len(pkd))),
            "methods": methods, "per_seed": per_seed, "command": "python -m x"}


def test_verdict_tells_a_real_gain_from_noise(paired, tmp_path):
    seeds = 10
    base = [0.70 + 0.01 * s for s in range(seeds)]
    up = [b + 0.02 + 0.001 * s for s, b in enumerate(base)]  # +2.0 to +2.9 points on every seed
    noise = [b + (0.01 if s % 2 else -0.01) for s, b in enumerate(base)]  # +-1 point, mean 0
    oracle = [b + 0.05 for b in up]
    better = [b + 0.005 + (0.01 if s % 2 else -0.01) for s, b in enumerate(base)]  # +0.5 +- 1 point
    out = paired.analyse(_payload(up, [base, base, better], base, oracle))
    c = out["comparisons"]["pkd_random_teacher"]
    assert c["wins"] == seeds and c["mean_diff"] == pytest.approx(2.45)
    assert c["p_sign_flip"] == pytest.approx(2 / 2**seeds) and c["wilcoxon_method"] == "exact"
    assert c["p_wilcoxon"] == pytest.approx(2 / 2**seeds) and c["p_t"] < 1e-6
    assert out["best_rule"] == "pkd_confident_teacher"
    assert out["verdict"]["mean_diff_vs_best_rule"] == pytest.approx(1.95)
    assert out["verdict"]["pkd_beats_best_rule"]
    # PKD equal to a rule up to +-1 point: nothing significant
    flat = paired.analyse(_payload(noise, [base, base, base], base, oracle))
    f = flat["comparisons"]["pkd_random_teacher"]
    assert f["mean_diff"] == pytest.approx(0.0, abs=1e-9) and f["p_sign_flip"] == 1.0
    assert f["p_wilcoxon"] > 0.5
    assert not flat["verdict"]["pkd_beats_best_rule"]
    assert flat["methods"]["best_final_teacher"]["mean"] == pytest.approx(100 * (sum(base) / seeds + 0.01))
    # the script writes the analysis with its command
    src = tmp_path / "in.json"
    src.write_text(json.dumps(_payload(up, [base, base, better], base, oracle)))
    paired.main([str(src), "--output", str(tmp_path / "out.json")])
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["command"].startswith("python benchmarks/pkd_paired_test.py") and written["verdict"]
    with pytest.raises(ValueError, match="lacks the rows"):
        paired.analyse({**_payload(up, [base, base, better], base, oracle), "methods": {"pkd": {"acc": up}}})
