"""Plot test accuracy against shots per method from the JSONs of ``python -m graphspike_kd.benchmarks.pkd``.

    python benchmarks/plot_pkd.py benchmarks/results/pkd_cora_*.json --output benchmarks/results/pkd_cora.png

One panel per (dataset, protocol) found in the files, two panels per row; one line per method (mean ± std
over seeds as error bars). Files for the same dataset, protocol and shots are not merged: the last one given
wins.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(paths: list[Path]) -> dict[tuple[str, str], dict[int, dict]]:
    panels: dict[tuple[str, str], dict[int, dict]] = {}
    for path in paths:
        payload = json.loads(path.read_text())
        for key in ("dataset", "protocol", "shots", "methods"):
            if key not in payload:
                raise ValueError(f"{path}: not a pkd benchmark result (no {key!r} field)")
        panels.setdefault((payload["dataset"], payload["protocol"]), {})[int(payload["shots"])] = payload[
            "methods"
        ]
    return panels


def plot(panels: dict[tuple[str, str], dict[int, dict]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(panels)
    ncols = min(2, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.5 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(flat, keys, strict=False):
        by_shots = panels[key]
        shots = sorted(by_shots)
        methods = sorted(
            {
                m
                for res in by_shots.values()
                for m in res
                if not m.startswith("teacher_") or m == "teacher_majority_vote"
            }
        )
        for method in methods:
            xs = [s for s in shots if method in by_shots[s]]
            means = [100 * by_shots[s][method]["mean"] for s in xs]
            stds = [100 * by_shots[s][method]["std"] for s in xs]
            style = {"linewidth": 2.5, "color": "black"} if method == "pkd" else {"linewidth": 1.2}
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=method, **style)
        ax.set_title(f"{key[0]} ({key[1]} protocol)")
        ax.set_xlabel("labelled nodes per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks(shots)
        ax.grid(alpha=0.3)
    flat[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    from graphspike_kd.benchmarks.provenance import atomic_savefig

    atomic_savefig(fig, output, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    from graphspike_kd.benchmarks.pkd import output_problem

    problem = output_problem(args.output)
    if problem:
        p.error(f"--output {args.output}: {problem}")
    plot(load(args.results), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
