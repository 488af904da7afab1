"""Paired significance of PKD's PPO teacher selector against the rule selectors, seed by seed.

    python -m graphspike_kd.benchmarks.pkd --dataset cora --shots 5 --protocol paper --quiet \\
        --seeds 0 1 2 3 4 5 6 7 8 9 --workers 2 --threads 1 \\
        --output benchmarks/results/pkdsel_paired_cora_paper_5.json
    python benchmarks/pkd_paired_test.py benchmarks/results/pkdsel_paired_cora_paper_5.json \\
        --output benchmarks/results/pkdsel_paired_test_cora_paper_5.json

Every PKD row of one seed shares the split, the annotations, the expanded label set and the teachers; only
the teacher selector differs. So the seeds pair the rows, and the test is on the per-seed differences
:math:`d_s = \\mathrm{acc}^{PKD}_s - \\mathrm{acc}^{rule}_s` (:math:`n` seeds), with three tests of
:math:`H_0`: no difference (two-sided):

- the paired t-test, :math:`t = \\bar d / (s_d / \\sqrt n)` on :math:`n - 1` degrees of freedom (Student,
  "The probable error of a mean", Biometrika 1908);
- the Wilcoxon signed-rank test (Wilcoxon, "Individual comparisons by ranking methods", Biometrics
  Bulletin 1945), exact where there are neither zero nor tied differences, else the normal approximation
  with Pratt's treatment of zeros;
- the exact sign-flip permutation test of :math:`\\bar d` (Fisher, "The Design of Experiments", 1935):
  under :math:`H_0` each :math:`d_s` is symmetric about 0, so all :math:`2^n` sign patterns are equally
  likely and :math:`p = \\#\\{\\epsilon : |\\sum_s \\epsilon_s d_s| \\ge |\\sum_s d_s|\\} / 2^n`
  (1024 patterns for 10 seeds: exact, no assumption of normality).

Comparisons: ``pkd`` against ``pkd_random_teacher``, ``pkd_majority_teacher``, ``pkd_confident_teacher``
(the rule selectors on the same teachers) and against ``best_teacher`` (the teacher chosen by validation
accuracy, a baseline trained on random LLM labels; PKD has no validation-chosen selector row). Beside them
the oracle selector's accuracy over PKD's final teachers (``pkd_oracle_teacher``, the bound of any
selector) and the best of those teachers on the test nodes, both read from the test labels after the fit.
The verdict asks whether PKD is at least ``--min-gain`` points above the best rule selector with every
test's p below ``--alpha``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import statistics
import sys
from pathlib import Path

RULES = ("pkd_random_teacher", "pkd_majority_teacher", "pkd_confident_teacher")
COMPARISONS = (*RULES, "best_teacher")


def sign_flip_p(diffs: list[float]) -> float:
    """Exact two-sided sign-flip permutation p-value of the mean of ``diffs`` (all :math:`2^n` patterns).

    Args:
        diffs (list of float): the paired differences, at most 20 (:math:`2^{20}` patterns).
    """
    n = len(diffs)
    if n == 0 or n > 20:
        raise ValueError(f"sign_flip_p enumerates 2^n patterns: needs 1 <= n <= 20 differences, got {n}")
    observed = abs(sum(diffs))
    tol = 1e-12 * max(1.0, observed)
    hits = sum(
        abs(sum(s * d for s, d in zip(signs, diffs, strict=True))) >= observed - tol
        for signs in itertools.product((1.0, -1.0), repeat=n)
    )
    return hits / 2**n


def paired_t(diffs: list[float]) -> tuple[float, float]:
    """Paired t statistic and its two-sided p-value on ``n - 1`` degrees of freedom (``nan`` when the
    differences have no spread)."""
    from scipy import stats

    n = len(diffs)
    sd = statistics.stdev(diffs) if n > 1 else 0.0
    if sd == 0.0:
        return math.nan, math.nan
    t = statistics.fmean(diffs) / (sd / math.sqrt(n))
    return t, float(2 * stats.t.sf(abs(t), n - 1))


def wilcoxon(diffs: list[float]) -> tuple[float, float, str]:
    """Wilcoxon signed-rank statistic, two-sided p-value and the method used (``exact`` without zero or
    tied absolute differences, else ``approx`` with Pratt's zeros)."""
    from scipy import stats

    rounded = [round(d, 6) for d in diffs]
    if not any(rounded):
        return math.nan, 1.0, "all differences are zero"
    absolute = [abs(d) for d in rounded if d]
    exact = len(absolute) == len(rounded) and len(set(absolute)) == len(absolute)
    method = "exact" if exact else "approx"
    res = stats.wilcoxon(rounded, zero_method="wilcox" if exact else "pratt", method=method)
    return float(res.statistic), float(res.pvalue), method


def compare(a: list[float], b: list[float]) -> dict:
    """The three paired tests of ``a - b`` (accuracies in [0, 1], reported in points)."""
    # rounded to 1e-6 points: accuracies stored from float32 counts differ in the last bits
    diffs = [round(100 * (x - y), 6) for x, y in zip(a, b, strict=True)]
    t, p_t = paired_t(diffs)
    w, p_w, w_method = wilcoxon(diffs)
    return {
        "diffs": diffs,
        "mean_diff": statistics.fmean(diffs),
        "std_diff": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
        "wins": sum(d > 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
        "t": t,
        "p_t": p_t,
        "wilcoxon_w": w,
        "p_wilcoxon": p_w,
        "wilcoxon_method": w_method,
        "p_sign_flip": sign_flip_p(diffs),
    }


def analyse(payload: dict, min_gain: float = 1.0, alpha: float = 0.05) -> dict:
    """Every comparison of ``pkd`` in a benchmark payload, the oracle bound and the verdict."""
    methods = payload["methods"]
    missing = [m for m in ("pkd", *COMPARISONS, "pkd_oracle_teacher") if m not in methods]
    if missing:
        raise ValueError(f"the results file lacks the rows {missing}; run the benchmark with every PKD row")
    if len(payload["seeds"]) < 2:
        raise ValueError(f"a paired test needs at least 2 seeds, got {payload['seeds']}")
    pkd = methods["pkd"]["acc"]
    comparisons = {m: compare(pkd, methods[m]["acc"]) for m in COMPARISONS}
    best_final = [s["pkd"]["expansion"]["teacher_oracle"]["best_teacher_acc"] for s in payload["per_seed"]]
    summary = {
        m: {"acc": methods[m]["acc"], "mean": 100 * statistics.fmean(methods[m]["acc"]),
            "std": 100 * statistics.pstdev(methods[m]["acc"])}
        for m in ("pkd", *COMPARISONS, "pkd_oracle_teacher")
    }
    summary["best_final_teacher"] = {"acc": best_final, "mean": 100 * statistics.fmean(best_final),
                                     "std": 100 * statistics.pstdev(best_final)}
    best_rule = max(RULES, key=lambda m: summary[m]["mean"])
    c = comparisons[best_rule]
    significant = max(c["p_t"], c["p_wilcoxon"], c["p_sign_flip"]) < alpha
    return {
        "dataset": payload["dataset"], "shots": payload["shots"], "protocol": payload["protocol"],
        "seeds": payload["seeds"], "annotator": payload.get("annotator"),
        "llm_model": payload.get("llm_model"),
        "source_command": payload.get("command"),
        "methods": summary,
        "comparisons": comparisons,
        "best_rule": best_rule,
        "verdict": {
            "min_gain": min_gain, "alpha": alpha,
            "pkd_beats_best_rule": bool(c["mean_diff"] >= min_gain and significant),
            "mean_diff_vs_best_rule": c["mean_diff"],
            "oracle_gap_to_pkd": summary["pkd_oracle_teacher"]["mean"] - summary["pkd"]["mean"],
        },
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a results JSON of python -m graphspike_kd.benchmarks.pkd")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--min-gain", type=float, default=1.0, help="points PKD must gain (default: 1.0)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    args = p.parse_args(argv)
    if args.output.is_dir():
        p.error(f"--output {args.output}: is a folder")
    out = analyse(json.loads(args.results.read_text()), args.min_gain, args.alpha)
    out["command"] = "python benchmarks/pkd_paired_test.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    for m, c in out["comparisons"].items():
        print(f"pkd - {m}: {c['mean_diff']:+.2f} ± {c['std_diff']:.2f} points "
              f"({c['wins']}/{c['ties']}/{c['losses']} W/T/L), p: t {c['p_t']:.3g}, "
              f"Wilcoxon {c['p_wilcoxon']:.3g} ({c['wilcoxon_method']}), sign-flip {c['p_sign_flip']:.3g}")
    print(f"verdict: {out['verdict']}")
    return out


if __name__ == "__main__":
    main()
