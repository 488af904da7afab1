"""Merge per-seed JSONs of ``python -m graphspike_kd.benchmarks.pkd`` (same dataset, shots, protocol) into one
file with the benchmark's contract, so that seeds can run as separate processes on a shared machine:

    for s in 0 1 2 3 4; do
        python -m graphspike_kd.benchmarks.pkd --dataset cora --seeds $s --output /tmp/cora_seed$s.json &
    done; wait
    python benchmarks/merge_pkd_results.py /tmp/cora_seed*.json --output benchmarks/results/pkd_cora.json

``wall_time_s`` of the merged file is the sum over the parts (the CPU-bound time of a sequential run) and
``wall_time_s_per_part`` keeps each part's own time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from graphspike_kd.benchmarks import provenance

_SAME = ("dataset", "shots", "protocol", "annotator", "llm_model", "features")


def merge(payloads: list[dict]) -> dict:
    if not payloads:
        raise ValueError("nothing to merge")
    first = payloads[0]
    for p in payloads[1:]:
        for key in _SAME:
            if p.get(key) != first.get(key):
                raise ValueError(
                    f"cannot merge runs that differ in {key!r}: {first.get(key)!r} vs {p.get(key)!r}"
                )
    order = sorted(range(len(payloads)), key=lambda i: payloads[i]["seeds"])
    payloads = [payloads[i] for i in order]
    seeds = [s for p in payloads for s in p["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed appears in more than one file: {seeds}")
    methods = sorted(set.intersection(*(set(p["methods"]) for p in payloads)))
    merged = {
        key: first[key]
        for key in first
        if key not in ("seeds", "methods", "wall_time_s", "per_seed", "command", "provenance")
    }
    merged.update(
        seeds=seeds,
        methods={},
        wall_time_s=float(sum(p["wall_time_s"] for p in payloads)),
        wall_time_s_per_part=[p["wall_time_s"] for p in payloads],
        per_seed=[d for p in payloads for d in p.get("per_seed", [])],
        command=[p.get("command") for p in payloads],
        parts_provenance=[p.get("provenance") for p in payloads],
    )
    for name in methods:
        accs = [a for p in payloads for a in p["methods"][name]["acc"]]
        merged["methods"][name] = {"acc": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs))}
    return merged


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Merge per-seed pkd benchmark JSON files.")
    p.add_argument("parts", nargs="+", type=Path)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    from graphspike_kd.benchmarks.pkd import format_table, output_problem

    problem = output_problem(args.output)
    if problem:
        p.error(f"--output {args.output}: {problem}")
    started = provenance.now()
    merged = merge([json.loads(path.read_text()) for path in args.parts])
    command = provenance.command_line(
        ["benchmarks/merge_pkd_results.py", *(sys.argv[1:] if argv is None else argv)])
    merged = provenance.write_json(args.output, merged, command=command, started=started,
                                   repo_dir=Path(__file__).resolve().parent)
    print(format_table(merged))


if __name__ == "__main__":
    main()
