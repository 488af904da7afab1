"""Render the Markdown tables of README.md and docs/ from the results files in ``benchmarks/results/``.

    python benchmarks/render_tables.py            # rewrite every table between its markers
    python benchmarks/render_tables.py --check    # exit 1 if a table differs from what its files give
    python benchmarks/render_tables.py --list     # the table names and the files each one reads

A table lives in a Markdown file between ``<!-- name -->`` and ``<!-- /name -->``; ``name`` must be one of
the renderers registered below with :func:`table`. Each renderer reads only results files and returns the
Markdown, so no figure in a rendered table is typed by hand. ``--check`` also fails on a marker whose name
has no renderer, so a table cannot silently stop being rendered.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(r"<!-- ([a-z0-9][a-z0-9-]*) -->\n(.*?)<!-- /\1 -->", re.S)

RENDERERS: dict[str, tuple[Callable[[Path], str], tuple[str, ...]]] = {}


def table(name: str, *files: str):
    """Register a renderer for the markers called ``name``; ``files`` are the results files it reads."""

    def register(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        RENDERERS[name] = (fn, files)
        return fn

    return register


def load(results: Path, name: str) -> dict:
    path = results / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: results file missing (rerun the command recorded beside its table)")
    return json.loads(path.read_text(encoding="utf-8"))


def rows(header: list[str], body: list[list[str]], align: str = "---") -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([align] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def pm(values: list[float], scale: float = 1.0, digits: int = 2, ddof: int = 0) -> str:
    """``mean ± std`` of ``values`` times ``scale`` (``ddof=1``: sample std, as the SNN benchmark records)."""
    v = [scale * x for x in values]
    sd = statistics.stdev(v) if ddof else statistics.pstdev(v)
    return f"{statistics.fmean(v):.{digits}f} ± {sd:.{digits}f}"


# ---------------------------------------------------------------------------------------------- graphs


def _pkd_grid():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pkd_grid

    return pkd_grid


@table("pkd-grid", "pkd_<dataset>_<protocol>_<shots>.json")
def _pkd_grid_tables(results: Path) -> str:
    return _pkd_grid().tables(results)


@table("pkd-baselines", "pkd_<dataset>_<protocol>_5.json")
def _pkd_baselines(results: Path) -> str:
    return _pkd_grid().baselines_table(results)


@table("pkd-strict-vs-baseline", "pkd_<dataset>_strict_<shots>.json")
def _pkd_strict_vs_baseline(results: Path) -> str:
    return _pkd_grid().vs_best_baseline_table(results, "strict")


@table("pkd-referee-rules", "pkd_<dataset>_strict_<3|5>.json")
def _pkd_referee_rules(results: Path) -> str:
    return _pkd_grid().referee_rules_table(results)


PKD_LABELS = {
    "gcn_fewshot": "GCN on the shots",
    "llm_only": "LLM alone (zero-shot)",
    "gcn_llm_labels": "GCN on shots + random LLM labels",
    "teacher_majority_vote": "teacher majority vote",
    "best_teacher": "best teacher",
    "pkd_no_denoise": "PKD without label denoising",
    "pkd": "**PKD** (GNS + posterior denoising + PPO teacher selection + student)",
}


@table("pkd-cora", "pkd_cora_paper_5.json")
def _pkd_cora(results: Path) -> str:
    methods = load(results, "pkd_cora_paper_5.json")["methods"]
    body = [[label, pm(methods[m]["acc"], 100)] for m, label in PKD_LABELS.items()]
    rules = " / ".join(
        pm(methods[f"pkd_{r}_teacher"]["acc"], 100) for r in ("random", "majority", "confident")
    )
    body.insert(-1, ["PKD with a rule teacher selector (random / majority / most confident)", rules])
    return rows(["method", "test accuracy (%)"], body)


PAIRED_LABELS = {
    "pkd_random_teacher": "random teacher",
    "pkd_majority_teacher": "majority-agreeing teacher",
    "pkd_confident_teacher": "most confident teacher",
    "best_teacher": "best teacher by validation (baseline)",
}


@table("pkd-paired-test", "pkdsel_paired_test_cora_paper_5.json")
def _pkd_paired_test(results: Path) -> str:
    out = load(results, "pkdsel_paired_test_cora_paper_5.json")
    m, seeds = out["methods"], len(out["seeds"])

    def acc(name: str) -> str:
        return f"{m[name]['mean']:.2f} ± {m[name]['std']:.2f}"

    def pval(p: float) -> str:
        return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"

    body = [["**PKD** (PPO teacher selection)", acc("pkd"), "", "", "", "", ""]]
    for name, label in PAIRED_LABELS.items():
        c = out["comparisons"][name]
        body.append([label, acc(name), f"{c['mean_diff']:+.2f} ± {c['std_diff']:.2f}",
                     f"{c['wins']} / {c['ties']} / {c['losses']}", pval(c["p_t"]), pval(c["p_wilcoxon"]),
                     pval(c["p_sign_flip"])])
    body.append(["best of PKD's final teachers (test labels)", acc("best_final_teacher"), "", "", "", "", ""])
    body.append(["oracle teacher selector (test labels)", acc("pkd_oracle_teacher"), "", "", "", "", ""])
    header = ["selector", f"test accuracy (%), {seeds} seeds", "PKD − it (points, paired)",
              "PKD wins / ties / losses", "p, paired t", "p, Wilcoxon", "p, sign-flip (exact)"]
    return rows(header, body)


def _annotator_rows(results: Path, name: str, key: str) -> list[list[str]]:
    out = []
    for r in load(results, name)["results"]:
        t = r.get("load_s", 0.0) + r.get("annotate_s", 0.0)
        out.append(
            [
                r[key],
                f"{r['nodes']:,}",
                f"{r['accuracy']:.3f}",
                f"{r['majority_class_rate']:.3f}",
                f"{r['mean_confidence']:.2f}",
                f"{r['ece']:.3f}",
                f"{t:,.0f}",
            ]
        )
    return out


@table("annotators-embedding", "annotator_accuracy_embedding.json")
def _annotators_embedding(results: Path) -> str:
    body = _annotator_rows(results, "annotator_accuracy_embedding.json", "dataset")
    return rows(["dataset", "nodes", "accuracy", "majority", "mean conf.", "ECE", "time (s)"], body)


@table("annotators-hf", "annotator_accuracy_hf_smollm2.json", "annotator_accuracy_hf_smollm2_calibrated.json")
def _annotators_hf(results: Path) -> str:
    body = []
    for name, calibration in (
        ("annotator_accuracy_hf_smollm2.json", "none"),
        ("annotator_accuracy_hf_smollm2_calibrated.json", "content_free"),
    ):
        body += [[calibration, *r[1:]] for r in _annotator_rows(results, name, "dataset")]
    return rows(["calibration", "nodes", "accuracy", "majority", "mean conf.", "ECE", "time (s)"], body)


THROUGHPUT_LABELS = {
    "keepalive_c32": "keep-alive pool, concurrency 32 (defaults)",
    "keepalive_c4": "keep-alive pool, concurrency 4",
    "close_c32": "new connection per request (HTTP/1.0 server), concurrency 32",
}


@table("annotator-throughput", "annotator_throughput.json")
def _annotator_throughput(results: Path) -> str:
    r = load(results, "annotator_throughput.json")
    body = []
    for name, label in THROUGHPUT_LABELS.items():
        c = r["configs"][name]
        per_round = ", ".join(f"{x:.1f}" for x in c["per_s_rounds"])
        body.append([label, f"{c['per_s_median']:.1f}", f"{c['ideal_per_s']:.0f}", per_round])
    return rows(["client", "annotations/s (median)", "ideal (c / latency)", "per round"], body)


@table("annotator-valid-rate", "annotator_valid_rate_smollm2.json")
def _annotator_valid_rate(results: Path) -> str:
    r = load(results, "annotator_valid_rate_smollm2.json")
    labels = {"structured_auto": "JSON schema with a class enum (`structured=\"auto\"`)",
              "structured_off": "prompt only (`structured=\"off\"`)"}
    body = [
        [label, f"{100 * m['valid_rate']:.1f}", f"{100 * m['accuracy']:.1f}", f"{m['seconds']:.1f}"]
        for key, label in labels.items()
        for m in [r["modes"][key]]
    ]
    return rows(["request", "valid answers (%)", "accuracy (%)", "seconds"], body)


def _scale_table(d: dict) -> str:
    stages = (
        ("teachers_shots", "teachers on shots"),
        ("dns", "DNS"),
        ("teachers_expanded", "teachers on expansion"),
        ("ngs", "NGS (PPO + student)"),
        ("student_final", "final student"),
    )
    header = ["nodes", "edges", "classes", *(label + " (s)" for _, label in stages)]
    header += ["total (min)", "peak RSS (GB)", "test acc (%)", "load avg"]
    body = []
    for r in d["runs"]:
        loads = [r[k][0] for k in ("load_average_at_start", "load_average_at_end") if k in r]
        load_avg = sum(loads) / len(loads) if loads else float("nan")
        body.append(
            [f"{r['nodes']:,}", f"{r['edges_undirected']:,}", str(r["classes"])]
            + [f"{r['stage_s'][k]:.0f}" for k, _ in stages]
            + [f"{r['total_s'] / 60:.1f}", f"{r['peak_rss_mb'] / 1024:.1f}", f"{100 * r['test_acc']:.1f}"]
            + [f"{load_avg:.1f}"]
        )
    exps = d.get("exponents_30k_to_largest") or {}
    if exps:
        body.append(
            ["growth 30k → largest", "", ""]
            + [f"N^{exps[k]:.2f}" if k in exps else "–" for k, _ in stages]
            + [f"N^{exps['total']:.2f}" if "total" in exps else "–", "", "", ""]
        )
    return rows(header, body)


@table("pkd-scale", "pkd_scale.json")
def _pkd_scale(results: Path) -> str:
    return _scale_table(load(results, "pkd_scale.json"))


@table("pkd-scale-short", "pkd_scale_short.json")
def _pkd_scale_short(results: Path) -> str:
    return _scale_table(load(results, "pkd_scale_short.json"))


@table("pkd-scale-before-after", "pkd_scale_30k_before.json", "pkd_scale_30k_after.json")
def _pkd_scale_before_after(results: Path) -> str:
    body = []
    forms = (("dense forms", "pkd_scale_30k_before.json"), ("linear forms", "pkd_scale_30k_after.json"))
    for label, name in forms:
        r = load(results, name)["runs"][0]
        gb, acc = r["peak_rss_mb"] / 1024, 100 * r["test_acc"]
        body.append([label, f"{r['total_s']:.0f}", f"{gb:.1f}", f"{acc:.1f}"])
    return rows(["30k nodes, short schedule", "total (s)", "peak RSS (GB)", "test acc (%)"], body)


OGBN_PRODUCTS = (2_449_029, 123_718_280)  # nodes, directed edges (61,859,140 undirected)
SCALE_FITS = (
    ("GCN, GAT, APPNP, H2GCN (`PKDConfig()`)", "pkd_scale_short.json", "pkd_scale_short_degree14.json"),
    ("GCN, SGC, C&S, MLP (`PKDConfig.at_scale()`)", "pkd_scale.json", "pkd_scale_degree14.json"),
)


def rss_fit(runs: list[dict], dense: dict) -> tuple[float, float, float]:
    """Peak RSS (MiB) ≈ a + b·N + c·E (E directed edges), fitted exactly through three runs: the 30k-node
    run and the largest of ``runs``, and ``dense``, a run at 30k nodes with more edges per node. Returns
    ``(a, b, c)`` in MiB, MiB per node and MiB per directed edge."""
    small = next(r for r in runs if r["nodes"] == 30_000)
    big = max(runs, key=lambda r: r["nodes"])

    def edges(r: dict) -> int:
        return 2 * r["edges_undirected"]

    # a per-edge cost below the run-to-run noise of the peak RSS can come out negative: then it is not
    # resolved, and the edges' cost is left in the per-node term (c = 0)
    c = max((dense["peak_rss_mb"] - small["peak_rss_mb"]) / (edges(dense) - edges(small)), 0.0)
    b = (big["peak_rss_mb"] - small["peak_rss_mb"] - c * (edges(big) - edges(small))) / (
        big["nodes"] - small["nodes"]
    )
    return small["peak_rss_mb"] - b * small["nodes"] - c * edges(small), b, c


@table("pkd-scale-memory", *(f for _, *files in SCALE_FITS for f in files))
def _pkd_scale_memory(results: Path) -> str:
    body = []
    for label, runs_file, dense_file in SCALE_FITS:
        a, b, c = rss_fit(load(results, runs_file)["runs"], load(results, dense_file)["runs"][0])
        n, e = OGBN_PRODUCTS
        body.append(
            [
                label,
                f"{a / 1024:.1f}",
                f"{b * 1024:.1f}",
                f"{c * 1024 * 1024:.0f}" if c > 0 else "not resolved (0 in the fit)",
                f"{(a + b * n + c * e) / 1024:.0f}",
            ]
        )
    header = ["teachers", "a (GiB)", "b (KiB per node)", "c (bytes per directed edge)"]
    return rows([*header, "ogbn-products estimate (GiB)"], body)


# ---------------------------------------------------------------------------------------------- common


@table("losses-cost", "losses.json")
def _losses_cost(results: Path) -> str:
    names = ("kd", "dkd", "dist", "pld")
    body = [
        [
            str(r["classes"]),
            f"{r['median_us']['cross_entropy']:.0f}",
            *(f"{r['ratio_to_ce'][n]:.2f}" for n in names),
        ]
        for r in load(results, "losses.json")["results"]
    ]
    return rows(["C", "cross-entropy (µs)", "KD", "DKD", "DIST", "PLD"], body, align="---:")


@table("losses-vs-reference", "losses.json")
def _losses_vs_reference(results: Path) -> str:
    names = ("kd", "dkd", "dist", "pld")
    body = [
        [
            str(r["classes"]),
            *(f"{r['ratio_to_baseline'][n]:.2f}" for n in names),
            f"{r['pld_ratio_to_previous']:.2f}",
        ]
        for r in load(results, "losses.json")["results"]
    ]
    return rows(["C", "KD", "DKD", "DIST", "PLD", "PLD / previous PLD"], body, align="---:")


DIGITS_LABELS = {
    "teacher": "teacher MLP",
    "ce": "student, CE only",
    "kd": "student, CE + KD",
    "dkd": "student, CE + DKD",
    "dist": "student, CE + DIST",
    "pld": "student, PLD (replaces CE)",
}


@table("distill-digits", "distill_digits.json")
def _distill_digits(results: Path) -> str:
    d = load(results, "distill_digits.json")
    body = [
        [DIGITS_LABELS.get(k, k), f"{m['mean']:.4f} ± {m['std']:.4f}", " ".join(f"{a:.4f}" for a in m["acc"])]
        for k, m in d["methods"].items()
    ]
    head = rows(["model", "test accuracy (mean ± std)", "per seed"], body)
    return (
        f"{head}\n\nSeeds {d['seeds']}, {d['steps']} Adam steps per model, student hidden width "
        f"{d['student_hidden']}."
    )


@table("adaspec", "adaspec.json")
def _adaspec(results: Path) -> str:
    res = load(results, "adaspec.json")["results"]
    labels = {
        "draft_init": "draft init (CE only)",
        "token_kd": "token KD (DistillSpec)",
        "adaspec": "AdaSPEC",
    }
    keys = ("tf_greedy", "tf_sampled", "sd_greedy", "sd_sampled", "sd_greedy_tokens_per_call", "token_kl")
    body = [
        [labels[m], *(pm(res[m][k], digits=2 if k == "sd_greedy_tokens_per_call" else 3) for k in keys)]
        for m in labels
    ]
    return rows(["draft", "TF greedy", "TF sampled", "SD greedy", "SD sampled", "tok/call", "KL(P‖Q)"], body)


@table("federated", "federated.json")
def _federated(results: Path) -> str:
    d = load(results, "federated.json")
    labels = {
        "local": "local only",
        "fedavg": "FedAvg within architecture",
        "fedfd": "FedFD (feature distillation, orthogonal projectors)",
        "fedfree": "FedFree (per-client models, top-2 upload, KGE distribution)",
    }
    archs = list(d["archs"])
    body = [
        [
            labels[m],
            f"{v['global_mean']:.3f} ± {v['global_std']:.3f}",
            f"{v['local_mean']:.3f} ± {v['local_std']:.3f}",
            *(f"{v['per_arch_global'][a]:.3f}" for a in archs),
        ]
        for m, v in d["methods"].items()
    ]
    return rows(["method", "global acc", "local acc", *archs], body)


def _detection(results: Path, name: str) -> str:
    res = load(results, name)["results"]
    probes = {
        "synthesized": "synthesised from the student (data-free)",
        "noise": "uniform noise",
        "real": "real held-out digits (oracle)",
    }
    scores = {"kl": "KL-inverse", "acs": "ACS", "cka": "CKA (linear)"}
    body = []
    for p, plabel in probes.items():
        for i, (s, slabel) in enumerate(scores.items()):
            r = res[p][s]
            body.append(
                [
                    plabel if i == 0 else "",
                    slabel,
                    *(pm(r[k], digits=3) for k in ("accuracy", "auc_ovr", "auc_pairs")),
                ]
            )
    return rows(["probes", "score", "accuracy", "AUC (ovr)", "AUC (pairs)"], body)


@table("kd-detection", "kd_detection.json")
def _kd_detection(results: Path) -> str:
    return _detection(results, "kd_detection.json")


@table("kd-detection-mixed", "kd_detection_mixed.json")
def _kd_detection_mixed(results: Path) -> str:
    return _detection(results, "kd_detection_mixed.json")


# ---------------------------------------------------------------------------------------------- spiking

IMPLS = (
    "spikingjelly_eager", "spikingjelly_compile", "snntorch", "ours_torch", "ours_cpp", "ours_cpp_compile",
)


def _pow2(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


@table("neurons-time", "neurons.json")
def _neurons_time(results: Path) -> str:
    body = [
        [str(r["T"]), _pow2(r["N"]), *(f"{r['wall_ms'][i]:.1f} ({r['cpu_ms'][i]:.1f})" for i in IMPLS)]
        for r in load(results, "neurons.json")["cpu"]
    ]
    return rows(["T", "N", *IMPLS], body)


@table("neurons-speedup", "neurons.json")
def _neurons_speedup(results: Path) -> str:
    pairs = (
        "ours_torch_vs_spikingjelly_eager",
        "ours_torch_vs_snntorch",
        "ours_cpp_vs_spikingjelly_eager",
        "ours_cpp_vs_spikingjelly_compile",
        "ours_cpp_compile_vs_ours_cpp",
        "ours_cpp_compile_vs_spikingjelly_compile",
    )
    body = [
        [
            str(r["T"]),
            _pow2(r["N"]),
            *(f"{r['speedup_wall_ms'][p]:.2f}x ({r['speedup_cpu_ms'][p]:.2f}x)" for p in pairs),
        ]
        for r in load(results, "neurons.json")["cpu"]
    ]
    head = [
        "ours_torch / spikingjelly eager",
        "ours_torch / snntorch",
        "ours_cpp / spikingjelly eager",
        "ours_cpp / spikingjelly + compile",
        "compiled ours_cpp / eager ours_cpp",
        "compiled ours_cpp / spikingjelly + compile",
    ]
    return rows(["T", "N", *head], body)


@table("neurons-memory", "neurons.json")
def _neurons_memory(results: Path) -> str:
    body = [
        [str(r["T"]), _pow2(r["N"]), *(f"{r['saved_TN'][i]:g}" for i in IMPLS)]
        for r in load(results, "neurons.json")["cpu"]
    ]
    return rows(["T", "N", *IMPLS], body)


@table("ratebp-cost", "ratebp.json", "ratebp_cpp.json")
def _ratebp_cost(results: Path) -> str:
    labels = {
        "bptt": "BPTT",
        "ratebp": "rate-BP, lean",
        "ratebp_chunked": "rate-BP, chunked",
        "ratebp_multistep": "rate-BP, multi-step",
    }
    body = []
    for name, neurons in (("ratebp.json", "torch"), ("ratebp_cpp.json", "cpp")):
        d = load(results, name)
        for m, label in labels.items():
            if m not in d:
                continue
            v, ratio = d[m], d["ratios"][m]
            if m == "bptt":
                speed = "1"
            else:
                speed = f"{d['ratios'][f'speedup_{m}_vs_bptt_at_max_T']:.2f}x"
                rounds = d["ratios"].get(f"speedup_{m}_vs_bptt_at_max_T_rounds")
                if rounds:
                    speed += f" ({min(rounds):.2f}–{max(rounds):.2f})"
            if m == "ratebp_chunked":
                label += f" ({d['steps_per_call']})"
            body.append(
                [
                    label,
                    neurons,
                    " / ".join(f"{x:.1f}" for x in v["peak_mem_mb"]),
                    " / ".join(f"{x:.2f}" for x in v["step_s"]),
                    f"{ratio['mem_ratio']:.2f}",
                    speed,
                ]
            )
    T = load(results, "ratebp.json")["T"]
    return rows(
        [
            "method",
            "neurons",
            f"peak MiB T={T[0]} / T={T[-1]}",
            f"step s T={T[0]} / T={T[-1]}",
            f"memory T{T[-1]}/T{T[0]}",
            f"speed-up vs BPTT at T={T[-1]}",
        ],
        body,
    )


def _snn(results: Path, *names: str, method: str, T: str = "4") -> list[float]:
    """Per-seed accuracies of ``method`` at ``T`` over one or more SNN results files (seeds concatenated)."""
    return [a for n in names for a in load(results, n)["methods"][method][T]["acc"]]


SNN_LABELS = {"vanilla": "BPTT (`vanilla`)", "ratebp": "rate-BP", "esd": "rate-BP + ESD"}


def _snn_seed_table(results: Path, names: tuple[str, ...], methods: tuple[str, ...], seeds: str) -> str:
    body = []
    for m in methods:
        acc = _snn(results, *names, method=m)
        body.append([SNN_LABELS[m], pm(acc, ddof=1), ", ".join(f"{a:.2f}" for a in acc)])
    return rows(["method", "mean ± std (%)", f"per seed ({seeds})"], body)


@table("snn-digits-esd", "snn_digits_esd.json")
def _snn_digits_esd(results: Path) -> str:
    return _snn_seed_table(results, ("snn_digits_esd.json",), ("vanilla", "ratebp", "esd"), "0–9")


@table("snn-digits-esd-5ep", "snn_digits_esd_5ep.json")
def _snn_digits_esd_5ep(results: Path) -> str:
    return _snn_seed_table(results, ("snn_digits_esd_5ep.json",), ("vanilla", "ratebp", "esd"), "0–9")


@table("snn-digits-esd-beta0", "snn_digits_esd_beta0.json")
def _snn_digits_esd_beta0(results: Path) -> str:
    return _snn_seed_table(results, ("snn_digits_esd_beta0.json",), ("esd",), "0–9").replace(
        "rate-BP + ESD", "rate-BP + ESD branches, β = 0"
    )


@table(
    "snn-digits-grad-scale",
    "snn_digits_esd_5ep.json",
    "snn_digits_esd.json",
    "snn_digits_gradscale1_5ep.json",
    "snn_digits_gradscale1.json",
)
def _snn_grad_scale(results: Path) -> str:
    files = {
        "official": ("snn_digits_esd_5ep.json", "snn_digits_esd.json"),
        "one": ("snn_digits_gradscale1_5ep.json", "snn_digits_gradscale1.json"),
    }
    spec = [
        ("BPTT", "official", "vanilla"),
        ("rate-BP, official 1/T", "official", "ratebp"),
        ("rate-BP, `--grad-scale 1`", "one", "ratebp"),
        ("ESD, official 1/T", "official", "esd"),
        ("ESD, `--grad-scale 1`", "one", "esd"),
    ]
    body = [
        [label, *(pm(_snn(results, f, method=m), ddof=1) for f in files[scale])] for label, scale, m in spec
    ]
    return rows(["", "5 epochs", "20 epochs"], body)


RESNET = "snn_digits_resnet18_{}{}.json"


@table("snn-digits-resnet18", RESNET.format("{ratebp,esd}", ""), RESNET.format("{ratebp,esd}", "_seeds5to9"))
def _snn_resnet18(results: Path) -> str:
    body = []
    for m in ("ratebp", "esd"):
        acc = _snn(results, RESNET.format(m, ""), RESNET.format(m, "_seeds5to9"), method=m)
        body.append([SNN_LABELS[m], pm(acc, ddof=1), ", ".join(f"{a:.2f}" for a in acc)])
    return rows(["ResNet-18, 20 epochs", "mean ± std (%)", "per seed (0–9)"], body)


@table("snn-digits-resnet18-seeds10to19", RESNET.format("{ratebp,esd}", "_seeds10to19"))
def _snn_resnet18_more(results: Path) -> str:
    body = []
    for m in ("ratebp", "esd"):
        acc = _snn(results, RESNET.format(m, "_seeds10to19"), method=m)
        body.append([SNN_LABELS[m], pm(acc, ddof=1), ", ".join(f"{a:.2f}" for a in acc)])
    return rows(["ResNet-18, 20 epochs", "mean ± std (%)", "per seed (10–19)"], body)


@table("snn-digits-resnet18-grad-scale", RESNET.format("{ratebp,esd}", "_gradscale1{,_seeds5to9}"))
def _snn_resnet18_gs(results: Path) -> str:
    body = []
    for m in ("ratebp", "esd"):
        acc = _snn(
            results, RESNET.format(m, "_gradscale1"), RESNET.format(m, "_gradscale1_seeds5to9"), method=m
        )
        body.append([SNN_LABELS[m], pm(acc, ddof=1), ", ".join(f"{a:.2f}" for a in acc)])
    return rows(["ResNet-18, 20 epochs, `--grad-scale 1`", "mean ± std (%)", "per seed (0–9)"], body)


S2W = ("vanilla", "s2w", "w2s")


def _delta(m: dict, base: dict) -> str:
    return f" ({m['mean'] - base['mean']:+.2f})"


@table("s2w-digits", "snn_digits_s2w.json")
def _s2w_digits(results: Path) -> str:
    meth = load(results, "snn_digits_s2w.json")["methods"]
    body = []
    for T in meth["vanilla"]:
        base = meth["vanilla"][T]
        body.append(
            [
                f"T = {T}",
                *(
                    f"{meth[m][T]['mean']:.2f} ± {meth[m][T]['std']:.2f}"
                    + ("" if m == "vanilla" or T == "1" else _delta(meth[m][T], base))
                    for m in S2W
                ),
            ]
        )
    return rows(["trained at", "vanilla", "Strong2Weak", "Weak2Strong"], body)


@table("s2w-latency", "snn_digits_s2w.json")
def _s2w_latency(results: Path) -> str:
    meth = load(results, "snn_digits_s2w.json")["methods"]
    T = max(meth["vanilla"], key=int)
    hist = load(results, "snn_digits_s2w.json")["histories"]
    body = []
    for t in range(1, int(T)):
        cells = []
        for m in S2W:
            # per seed: the last epoch's accuracy when evaluated with the first t steps
            acc = [h[-1]["test_acc_at_steps"][str(t)] for k, h in hist.items() if k.startswith(f"{m} T={T} ")]
            cells.append(pm(acc, 100, ddof=1))
        body.append([f"t = {t}", *cells])
    return rows(["evaluated with", "vanilla", "Strong2Weak", "Weak2Strong"], body)


@table("s2w-digits-5ep", "snn_digits_s2w_5ep.json", "snn_digits_s2w_5ep_seeds5to9.json")
def _s2w_digits_5ep(results: Path) -> str:
    body = []
    files = (("snn_digits_s2w_5ep.json", "0–4"), ("snn_digits_s2w_5ep_seeds5to9.json", "5–9"))
    for T in ("2", "4"):
        for name, seeds in files:
            meth = load(results, name)["methods"]
            base = meth["vanilla"][T]
            body.append(
                [
                    f"T = {T}",
                    seeds,
                    *(
                        f"{meth[m][T]['mean']:.2f} ± {meth[m][T]['std']:.2f}"
                        + ("" if m == "vanilla" else _delta(meth[m][T], base))
                        for m in S2W
                    ),
                ]
            )
    for name, seeds in files:
        meth = load(results, name)["methods"]
        first = {m: meth[m]["4"]["acc_at_steps_mean"]["1"] for m in S2W}
        body.append(
            [
                "T = 4, evaluated with t = 1",
                seeds,
                *(
                    f"{first[m]:.2f}" + ("" if m == "vanilla" else f" ({first[m] - first['vanilla']:+.1f})")
                    for m in S2W
                ),
            ]
        )
    return rows(["trained at", "seeds", "vanilla", "Strong2Weak", "Weak2Strong"], body)


@table("dvs-synthetic", "snn_synthetic_dvs_cpu.json")
def _dvs_synthetic(results: Path) -> str:
    d = load(results, "snn_synthetic_dvs_cpu.json")
    body = [
        [m, T, f"{v['mean']:.1f}", f"{d['data']['train_samples']} / {d['data']['test_samples']}"]
        for m, by_T in d["methods"].items()
        for T, v in by_T.items()
    ]
    return rows(["method", "T", "test accuracy (%)", "train / test recordings"], body)


@table("ratebp-breakdown", "ratebp_cpp_breakdown.json")
def _ratebp_breakdown(results: Path) -> str:
    d = load(results, "ratebp_cpp_breakdown.json")
    parts = {
        "spike_pass": "spike pass",
        "spike_conv": "of which convolutions",
        "spike_pool": "of which average pools",
        "spike_rest": "of which the rest (fused BatchNorm and neurons, Python)",
        "rate_forward": "rate pass forward with the loss",
        "backward": "rate pass backward with the SGD step",
        "step": "whole step",
    }
    body = [[label, f"{d['median_s'][k]:.2f}"] for k, label in parts.items()]
    body.append(
        [
            "spike-pass convolutions",
            f"{d['spike_conv_macs'] / 1e9:.1f} G multiply-adds, {d['spike_conv_gflops']:.0f} GFLOP/s",
        ]
    )
    return rows([f"part (T = {d['T']}, chunked, {d['backend']} neurons)", "median s"], body)


# ---------------------------------------------------------------------------------------------- README


@table("headline", "pkd_cora_paper_5.json", "neurons.json", "ratebp_cpp.json", "snn_digits_esd.json")
def _headline(results: Path) -> str:
    pkd = load(results, "pkd_cora_paper_5.json")["methods"]
    best = max(
        ("gcn_fewshot", "llm_only", "gcn_llm_labels", "teacher_majority_vote", "best_teacher"),
        key=lambda m: pkd[m]["mean"],
    )
    neurons = next(r for r in load(results, "neurons.json")["cpu"] if r["T"] == 16 and r["N"] == 2**18)
    sp = neurons["speedup_wall_ms"]
    ratios = load(results, "ratebp_cpp.json")["ratios"]
    snn = load(results, "snn_digits_esd.json")["methods"]
    graph, spiking = "[graphs](docs/results-graph.md)", "[spiking](docs/results-spiking.md)"
    pkd_cell = (
        f"{pm(pkd['pkd']['acc'], 100)} % test accuracy; "
        f"best baseline, {PKD_LABELS[best]}, {pm(pkd[best]['acc'], 100)} %"
    )
    neuron_cell = (
        f"{sp['ours_torch_vs_spikingjelly_eager']:.2f}x spikingjelly, "
        f"{sp['ours_torch_vs_snntorch']:.2f}x snntorch (torch path); "
        f"{sp['ours_cpp_vs_spikingjelly_compile']:.2f}x spikingjelly + `torch.compile` (native path)"
    )
    ratebp_cell = (
        f"{ratios['speedup_ratebp_chunked_vs_bptt_at_max_T']:.2f}x faster per step; peak memory T=16 / T=4 = "
        f"{ratios['ratebp_chunked']['mem_ratio']:.2f} (BPTT {ratios['bptt']['mem_ratio']:.2f})"
    )
    snn_cell = " / ".join(pm(snn[m]["4"]["acc"], ddof=1) for m in ("vanilla", "ratebp", "esd")) + " %"
    body = [
        ["PKD, Cora, 5 labels per class, shipped GPT-3.5 answers, seeds 0–4", pkd_cell, graph],
        ["LIF forward + backward on CPU, T = 16, N = 2^18", neuron_cell, spiking],
        ["Rate-BP vs BPTT, spiking VGG-11, T = 16, CPU (median of 5 rounds)", ratebp_cell, spiking],
        ["Spiking VGG on digits, T = 4, 10 seeds: BPTT / rate-BP / rate-BP + ESD", snn_cell, spiking],
    ]
    return rows(["experiment", "result", "details"], body)


# ---------------------------------------------------------------------------------------------- driver


def documents(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may hold rendered tables."""
    return [root / "README.md", root / "benchmarks" / "README.md", *sorted((root / "docs").rglob("*.md"))]


def render(text: str, results: Path = RESULTS, source: str = "") -> str:
    """``text`` with every marked table re-rendered from ``results``."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in RENDERERS:
            raise KeyError(
                f"{source}: no renderer for <!-- {name} --> (known: {', '.join(sorted(RENDERERS))})"
            )
        return f"<!-- {name} -->\n{RENDERERS[name][0](results).rstrip()}\n<!-- /{name} -->"

    return MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--check", action="store_true", help="report tables that differ from their files; write nothing"
    )
    p.add_argument("--list", action="store_true", help="list the table names and the files they read")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument(
        "files", nargs="*", type=Path, help="Markdown files (default: README.md, docs/, benchmarks/)"
    )
    args = p.parse_args(argv)
    if args.list:
        for name, (_, files) in sorted(RENDERERS.items()):
            print(f"{name}: {', '.join(files)}")
        return 0
    stale = 0
    for path in args.files or documents():
        old = path.read_text(encoding="utf-8")
        try:
            new = render(old, args.results, str(path))
        except (KeyError, FileNotFoundError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            stale += 1
            continue
        if new == old:
            continue
        if args.check:
            stale += 1
            diff = difflib.unified_diff(
                old.splitlines(), new.splitlines(), str(path), "rendered", lineterm="", n=0
            )
            print("\n".join(diff))
        else:
            path.write_text(new, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print(
            f"{stale} file(s) with tables that differ from benchmarks/results "
            "(python benchmarks/render_tables.py rewrites them)",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
