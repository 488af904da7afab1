"""Run ``python -m graphspike_kd.benchmarks.pkd`` over datasets x shots x protocols, one JSON per cell.

    python benchmarks/pkd_grid.py                      # all six datasets, shots 1 3 5, paper + strict
    python benchmarks/pkd_grid.py --datasets cora --shots 5 --protocols paper
    python benchmarks/pkd_grid.py --table              # print the Markdown tables of what is recorded
    python benchmarks/pkd_grid.py --baselines-table    # 5-shot baselines of every dataset, one table
    python benchmarks/render_tables.py                 # render them into docs/results-graph.md

Each cell writes ``benchmarks/results/pkd_<dataset>_<protocol>_<shots>.json`` with the exact command that
produced it (the benchmark's own ``command`` field) and is skipped when that file exists (``--force`` reruns).
Every cell runs the benchmark's defaults (seeds 0-4, every PKD row); extra arguments after ``--`` are passed
to each run. The tables list each method's mean ± std over seeds, in percent, one table per
(dataset, protocol) with one column per shot count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("cora", "citeseer", "cornell", "texas", "washington", "wisconsin")


def cell_path(dataset: str, protocol: str, shots: int, results: Path = RESULTS) -> Path:
    return results / f"pkd_{dataset}_{protocol}_{shots}.json"


def run_grid(datasets, shots_list, protocols, extra: list[str], force: bool, results: Path) -> None:
    from graphspike_kd.benchmarks.pkd import main

    for dataset in datasets:
        for protocol in protocols:
            for shots in shots_list:
                out = cell_path(dataset, protocol, shots, results)
                if out.exists() and not force:
                    print(f"skip {out.name} (exists; --force reruns)", flush=True)
                    continue
                argv = ["--dataset", dataset, "--shots", str(shots), "--protocol", protocol, "--quiet",
                        "--output", os.path.relpath(out), *extra]
                print(f"run python -m graphspike_kd.benchmarks.pkd {' '.join(argv)}", flush=True)
                main(argv)


def tables(results: Path = RESULTS) -> str:
    """Markdown tables of every recorded cell: one per (dataset, protocol), methods x shots."""
    cells: dict[tuple[str, str], dict[int, dict]] = {}
    for path in sorted(results.glob("pkd_*_*_*.json")):
        payload = json.loads(path.read_text())
        if not {"dataset", "protocol", "shots", "methods"} <= set(payload):
            continue
        cells.setdefault((payload["dataset"], payload["protocol"]), {})[int(payload["shots"])] = payload
    from graphspike_kd.benchmarks.pkd import METHOD_ORDER

    blocks = []
    for dataset in [d for d in DATASETS if any(k[0] == d for k in cells)]:
        for protocol in ("paper", "strict"):
            by_shots = cells.get((dataset, protocol))
            if not by_shots:
                continue
            shots = sorted(by_shots)
            any_payload = by_shots[shots[0]]
            methods = [m for m in METHOD_ORDER if any(m in p["methods"] for p in by_shots.values())]
            lines = [
                f"**{dataset}**, {protocol} protocol, annotator {any_payload['annotator']} "
                f"({any_payload['llm_model']}), seeds {' '.join(map(str, any_payload['seeds']))}",
                "",
                "| method | " + " | ".join(f"{k} shot{'s' if k > 1 else ''}" for k in shots) + " |",
                "|---|" + "---|" * len(shots),
            ]
            for method in methods:
                row = []
                for k in shots:
                    m = by_shots[k]["methods"].get(method)
                    row.append("–" if m is None else f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}")
                lines.append(f"| {method} | " + " | ".join(row) + " |")
            walls = ", ".join(f"{by_shots[k]['wall_time_s']:.0f} s" for k in shots)
            lines.append("")
            lines.append(f"Wall time per run ({', '.join(map(str, shots))} shots): {walls}.")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


BASELINES = ("gcn_fewshot", "llm_only", "gcn_llm_labels", "teacher_majority_vote", "best_teacher")


def baselines_table(results: Path = RESULTS, shots: int = 5) -> str:
    """Markdown table of the baselines (and ``pkd``) of every recorded ``shots``-shot cell, one row per
    (dataset, protocol)."""
    columns = (*BASELINES, "pkd")
    lines = [
        "| dataset | protocol | annotator | " + " | ".join(columns) + " | wall (s) |",
        "|---|---|---|" + "---|" * (len(columns) + 1),
    ]
    for dataset in DATASETS:
        for protocol in ("paper", "strict"):
            path = cell_path(dataset, protocol, shots, results)
            if not path.exists():
                continue
            payload = json.loads(path.read_text())
            cells = []
            for name in columns:
                m = payload["methods"].get(name)
                cells.append("–" if m is None else f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}")
            lines.append(f"| {dataset} | {protocol} | {payload['annotator']} ({payload['llm_model']}) | "
                         + " | ".join(cells) + f" | {payload['wall_time_s']:.0f} |")
    return "\n".join(lines)


def _baseline_names(methods: dict) -> list[str]:
    """Every baseline row of a cell: the methods that are not PKD (nor its oracle diagnostic)."""
    return [m for m in methods if not m.startswith("pkd")]


def vs_best_baseline(payload: dict) -> dict:
    """PKD against the best baseline of one cell (the baseline with the highest mean): both means and
    standard deviations, and the per-seed paired difference PKD − best (mean, population std over the
    same seeds). ``below`` is true when PKD is below the best baseline by more than one standard deviation
    of that paired difference (``mean + std < 0``); ``below_baseline_sd`` uses the baseline's own std
    instead (``pkd mean < best mean − best std``), the stricter reading when the baseline barely varies."""
    from graphspike_kd.graph.pkd import summarise

    methods = payload["methods"]
    best = max(_baseline_names(methods), key=lambda m: methods[m]["mean"])
    pairs = zip(methods["pkd"]["acc"], methods[best]["acc"], strict=True)
    diff = summarise([100 * (a - b) for a, b in pairs])
    mean, sd = diff["mean"], diff["std"]
    pkd, base = methods["pkd"], methods[best]
    return {
        "best": best,
        "pkd": (100 * pkd["mean"], 100 * pkd["std"]),
        "baseline": (100 * base["mean"], 100 * base["std"]),
        "diff": (mean, sd),
        "below": mean + sd < 0,
        "below_baseline_sd": pkd["mean"] < base["mean"] - base["std"],
    }


def vs_best_baseline_table(results: Path = RESULTS, protocol: str = "strict") -> str:
    """Markdown table of :func:`vs_best_baseline` for every recorded cell of ``protocol``, one row per
    (dataset, shots)."""
    lines = [
        "| dataset | shots | PKD | best baseline | its accuracy | PKD − it, paired | "
        "> 1 sd below (paired sd) | > 1 sd below (baseline's sd) | denoised seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in DATASETS:
        for shots in (1, 3, 5):
            path = cell_path(dataset, protocol, shots, results)
            if not path.exists():
                continue
            payload = json.loads(path.read_text())
            v = vs_best_baseline(payload)
            gates = [s.get("pkd", {}).get("expansion", {}).get("denoise_gate", {}).get("chosen", "denoised")
                     for s in payload.get("per_seed", [])]
            denoised = f"{sum(g == 'denoised' for g in gates)} / {len(gates)}"
            (pkd_mean, pkd_sd), (base_mean, base_sd) = v["pkd"], v["baseline"]
            diff_mean, diff_sd = v["diff"]
            lines.append(
                f"| {dataset} | {shots} | {pkd_mean:.2f} ± {pkd_sd:.2f} | {v['best']} | "
                f"{base_mean:.2f} ± {base_sd:.2f} | {diff_mean:+.2f} ± {diff_sd:.2f} | "
                f"{'**yes**' if v['below'] else 'no'} | {'**yes**' if v['below_baseline_sd'] else 'no'} | "
                f"{denoised} |"
            )
    return "\n".join(lines)


def rule_denoises(gate: dict, rule: str) -> bool:
    """Whether the referee ``rule`` (``"veto"`` or ``"cv"``) denoises, from the referee check a run recorded
    (its ``denoise_gate`` diagnostics: discordant counts, held-out shots, confidence)."""
    from graphspike_kd.graph.pkd import referee_decision

    return gate.get("held_out", 0) > 0 and referee_decision(
        gate["referee_only_right"], gate["llm_only_right"], gate["held_out"], rule=rule,
        confidence=gate["confidence"])


def referee_rule_outcomes(payload: dict) -> dict[str, list[float]]:
    """Per-seed test accuracy (%) of a ``strict`` cell under each referee rule, from what the cell recorded:
    ``raw`` is the raw-label pipeline (``pkd_no_denoise``); ``veto`` and ``cv`` take the denoised result
    (``pkd``) on the seeds their rule denoises and the raw one elsewhere, the rule being applied to the
    discordant counts the run's referee check recorded. The run must have used the ``veto`` rule: it
    denoises whenever ``cv`` does, so the file holds the denoised result of every seed either rule
    denoises."""
    pkd, raw = payload["methods"]["pkd"]["acc"], payload["methods"]["pkd_no_denoise"]["acc"]
    out: dict[str, list[float]] = {"raw": [100 * a for a in raw], "veto": [], "cv": []}
    for i, seed in enumerate(payload["per_seed"]):
        gate = seed["pkd"]["expansion"].get("denoise_gate", {})
        if gate.get("rule") != "veto" or rule_denoises(gate, "veto") != (gate["chosen"] == "denoised"):
            raise ValueError(f"{payload['dataset']}, {payload['shots']} shots, seed {seed['seed']}: not "
                             "decided by the veto rule, so the file cannot give every rule's result")
        for rule in ("veto", "cv"):
            out[rule].append(100 * (pkd[i] if rule_denoises(gate, rule) else raw[i]))
    return out


def referee_rules_table(results: Path = RESULTS) -> str:
    """Markdown table of :func:`referee_rule_outcomes` for every ``strict`` cell with 3 or 5 shots: each
    rule's mean ± std over seeds (population), the number of seeds it denoises, and the best baseline."""
    lines = [
        "| dataset | shots | raw labels | `cv` | seeds `cv` denoises | `veto` (default) | seeds `veto` "
        "denoises | best baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]

    from graphspike_kd.graph.pkd import summarise

    def fmt(values: list[float]) -> str:
        stats = summarise(values)
        return f"{stats['mean']:.2f} ± {stats['std']:.2f}"

    for dataset in DATASETS:
        for shots in (3, 5):
            path = cell_path(dataset, "strict", shots, results)
            if not path.exists():
                continue
            payload = json.loads(path.read_text())
            out = referee_rule_outcomes(payload)
            gates = [g["pkd"]["expansion"]["denoise_gate"] for g in payload["per_seed"]]
            n = {rule: sum(rule_denoises(g, rule) for g in gates) for rule in ("cv", "veto")}
            v = vs_best_baseline(payload)
            lines.append(
                f"| {dataset} | {shots} | {fmt(out['raw'])} | {fmt(out['cv'])} | {n['cv']} / {len(gates)} | "
                f"{fmt(out['veto'])} | {n['veto']} / {len(gates)} | {v['best']}: {v['baseline'][0]:.2f} ± "
                f"{v['baseline'][1]:.2f} |"
            )
    return "\n".join(lines)


def write_between_markers(path: Path, name: str, text: str) -> None:
    """Replace what lies between ``<!-- name -->`` and ``<!-- /name -->`` in the Markdown file ``path``."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(f"{path}: no {start} ... {end} markers to write between")
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    from graphspike_kd.benchmarks.provenance import atomic_write_text

    atomic_write_text(path, f"{head}{start}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--shots", nargs="+", type=int, default=[1, 3, 5])
    p.add_argument("--protocols", nargs="+", default=["paper", "strict"], choices=["paper", "strict"])
    p.add_argument("--force", action="store_true", help="rerun cells whose JSON exists")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--table", action="store_true", help="print the tables of recorded cells and exit")
    p.add_argument("--baselines-table", action="store_true",
                   help="print the 5-shot baselines of every dataset and protocol as one table and exit")
    p.add_argument("--write", type=Path, default=None, metavar="FILE.md",
                   help="with --table / --baselines-table: write between the <!-- pkd-grid --> / "
                   "<!-- pkd-baselines --> markers of FILE.md instead of printing")
    args = p.parse_args(argv)
    if args.table or args.baselines_table:
        text = tables(args.results) if args.table else baselines_table(args.results)
        if args.write is None:
            print(text)
        else:
            write_between_markers(args.write, "pkd-grid" if args.table else "pkd-baselines", text)
            print(f"wrote {args.write}")
        return
    run_grid(args.datasets, args.shots, args.protocols, extra, args.force, args.results)


if __name__ == "__main__":
    main()
