"""Choose PKD's teacher set by validation: how much room each composition leaves a teacher selector.

    python benchmarks/pkd_teacher_pool.py --dataset cora --shots 5 --seeds 0 1 2 3 4 \\
        --output benchmarks/results/pkdsel_teacher_pool_cora_paper_5.json

For each seed it draws the few-shot split (``paper`` protocol: validation labels exist), runs
:meth:`PKD.expand` with the dataset's default teachers (GNS, annotation, denoising and the denoise gate:
the expanded label set), then trains every model of ``--pool`` on that same expanded set. For every
composition of ``--sizes`` teachers from the pool it records, on the validation nodes and, separately, on
the test nodes:

``oracle``     the oracle selector (per node, a teacher that is right if any is): the bound of any selector
``best``       the best single teacher of the composition;  ``gap`` = oracle - best
``mean``       the teachers' mean accuracy
``ensemble``   accuracy of the teachers' mean softmax (what a selector that mixes them evenly distils)

The composition is **chosen on validation only**: the highest mean over seeds of the validation
``ensemble`` accuracy (ties: validation ``oracle``). Test numbers are reported beside it, never used.
With ``--distill``, PKD's student is then trained (:meth:`PKD.distill`, every teacher selector of
``--selectors``) on the default set and on the chosen one, and its validation and test accuracy recorded.

A pool entry ``MODEL@VIEW`` is a teacher on another view of the nodes: ``MODEL`` trained on the same
expanded labels but on the features ``VIEW`` of :func:`load_tag_dataset` (e.g. ``mlp@minilm``: an MLP on
the MiniLM sentence embeddings of the node text, computed offline by the shipped model), so that it fails
where the text, not the bag of words and the graph, misleads. ``--distill-set A,B,C`` (repeatable) adds
compositions to distil beside the default and the chosen one.

The results JSON holds the mean figures of every composition (per seed for the ``--top`` ones by the
selection criterion and the default set), the chosen one and the command; the table printed lists those.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from graphspike_kd.benchmarks import provenance
from graphspike_kd.graph.datasets import available_datasets, load_tag_dataset
from graphspike_kd.graph.models import prepare_features
from graphspike_kd.graph.pkd import PKD, PKDConfig, default_models
from graphspike_kd.graph.selectors import NGS_STATE_PARTS, teacher_oracle
from graphspike_kd.graph.splits import few_shot_split
from graphspike_kd.graph.training import TrainConfig, accuracy, predict

POOL = ("gcn", "gat", "appnp", "h2gcn", "mlp", "sgc", "gprgnn", "labelprop", "cs")
SELECTORS = ("ngs", "random", "majority", "confident")
STATE_VARIANTS = {  # NGS state ablation (blocks of graph.selectors.ngs_state)
    "full": NGS_STATE_PARTS,
    "no_features": tuple(q for q in NGS_STATE_PARTS if q not in ("features", "neighbour_features")),
    "teachers_only": ("probs", "entropy", "agreement", "confidence"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cora", choices=available_datasets())
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--pool", nargs="+", default=list(POOL), help=f"candidate teachers (default: {POOL})")
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 4], help="composition sizes (default: 3 4)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--distill", action="store_true", help="also train PKD's student on the default and "
                   "the chosen set (slow)")
    p.add_argument("--selectors", nargs="+", default=list(SELECTORS), choices=SELECTORS)
    p.add_argument("--distill-set", action="append", default=[], metavar="T1,T2,...",
                   help="with --distill: also distil this composition of pool teachers (repeatable)")
    p.add_argument("--ngs-rounds", type=int, default=40)
    p.add_argument("--state-ablation", action="store_true", help="with --distill: also run NGS with each "
                   f"state of STATE_VARIANTS ({', '.join(STATE_VARIANTS)}) on both sets")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    if min(args.sizes) < 2:
        p.error("--sizes must be >= 2 (PKD needs two teachers)")
    for spec in args.distill_set:
        unknown = [t for t in spec.split(",") if t not in args.pool]
        if unknown or len(spec.split(",")) < 2:
            p.error(f"--distill-set {spec}: needs at least two teachers of --pool; not in it: {unknown}")
    return args


def _figures(probs: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    o = teacher_oracle(probs, y, mask)
    return {
        "oracle": o["oracle_acc"],
        "best": o["best_teacher_acc"],
        "gap": o["oracle_gap"],
        "mean": float(np.mean(list(o["teacher_acc"].values()))),
        "ensemble": accuracy(probs.mean(0).log(), y, mask),
        "all_wrong": o["all_wrong"],
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    started = provenance.now()
    from graphspike_kd.graph.annotators import get_annotator

    data = load_tag_dataset(args.dataset, show_progress=False)
    annotator = get_annotator("cached" if data.llm_predictions is not None else "embedding", dataset=data)
    defaults, student = default_models(data.name)
    train = TrainConfig(lr=0.01, weight_decay=5e-4, epochs=200, patience=50)
    base = PKDConfig(teachers=defaults, student=student, hidden=args.hidden, train=train,
                     ngs_rounds=args.ngs_rounds, final_epochs=200)
    pool = list(dict.fromkeys(args.pool))
    combos = [c for k in args.sizes for c in itertools.combinations(pool, k)]
    if tuple(defaults) not in combos and set(defaults) <= set(pool):
        combos.append(tuple(t for t in pool if t in defaults))
    per_combo: dict[str, dict[str, list[dict]]] = {",".join(c): {"val": [], "test": []} for c in combos}
    singles: dict[str, dict[str, list[float]]] = {t: {"val": [], "test": []} for t in pool}
    seed_state = []
    # the graph with another node view for the MODEL@VIEW teachers (the same nodes, edges and labels)
    views = {"": data}
    for view in dict.fromkeys(t.partition("@")[2] for t in pool if "@" in t):
        views[view] = load_tag_dataset(args.dataset, features=view, show_progress=False)
        if not torch.equal(views[view].y, data.y):
            raise ValueError(f"features={view!r} loads {args.dataset} with other labels or nodes")
    view_x = {view: prepare_features(d.x) for view, d in views.items()}
    for seed in args.seeds:
        split = few_shot_split(data.y, args.shots, protocol="paper", seed=seed,
                               planetoid_test_mask=data.test_mask)
        pkd = PKD(base)
        expansion = pkd.expand(data, annotator, split, seed)
        extra = [t for t in pool if t not in defaults]
        models, probs = {}, {}
        for b, t in enumerate(defaults):
            models[t], probs[t] = expansion.teacher_models[b], expansion.teacher_probs[b]
        # the same label set and seed stream as PKD.train_teachers(..., seed + 1) over ``extra``
        for b, t in enumerate(extra):
            name, _, view = t.partition("@")
            m = pkd._fit_model(name, views[view], view_x[view], expansion.labels, expansion.label_mask, split,
                               (seed + 1) * 101 + b)
            models[t], probs[t] = m, predict(m, view_x[view], views[view].edge_index).softmax(-1).cpu()
        for t in pool:
            singles[t]["val"].append(accuracy(probs[t].log(), data.y, split.val_mask))
            singles[t]["test"].append(accuracy(probs[t].log(), data.y, split.test_mask))
        for c in combos:
            stack = torch.stack([probs[t] for t in c])
            per_combo[",".join(c)]["val"].append(_figures(stack, data.y, split.val_mask))
            per_combo[",".join(c)]["test"].append(_figures(stack, data.y, split.test_mask))
        seed_state.append((seed, split, expansion, models, probs))
        print(f"seed {seed}: expansion done, {time.perf_counter() - start:.0f} s", flush=True)

    def mean_of(rows: list[dict], key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    summary = {
        name: {part: {k: mean_of(rows[part], k) for k in rows[part][0]} for part in ("val", "test")}
        for name, rows in per_combo.items()
    }
    ranked = sorted(summary, key=lambda n: (summary[n]["val"]["ensemble"], summary[n]["val"]["oracle"]),
                    reverse=True)
    chosen = ranked[0]
    default_name = ",".join(t for t in pool if t in defaults) if set(defaults) <= set(pool) else None
    kept = ranked[: args.top] + ([default_name] if default_name and default_name not in ranked[: args.top]
                                 else [])  # compositions whose per-seed figures are stored

    distill: dict[str, dict[str, dict[str, list[float]]]] = {}
    if args.distill:
        sets = {"default": tuple(defaults), "chosen": tuple(chosen.split(",")),
                **{spec: tuple(spec.split(",")) for spec in args.distill_set}}
        for label, teachers in sets.items():
            distill[label] = {"teachers": list(teachers)}
            runs = [(rule, rule, base.ngs_state_parts) for rule in args.selectors]
            if args.state_ablation:
                runs += [(f"ngs_state_{v}", "ngs", parts) for v, parts in STATE_VARIANTS.items()]
            for key, rule, parts in runs:
                val, test = [], []
                for seed, split, expansion, models, probs in seed_state:
                    cfg = replace(base, teachers=teachers, ngs_state_parts=parts)
                    exp = replace(expansion, teacher_probs=torch.stack([probs[t] for t in teachers]),
                                  teacher_models=[models[t] for t in teachers])
                    out = PKD(cfg).distill(data, exp, split, seed, teacher_selection=rule)
                    val.append(accuracy(out.logits, data.y, split.val_mask))
                    test.append(accuracy(out.logits, data.y, split.test_mask))
                distill[label][key] = {"val": val, "test": test}
                print(f"distill {label} {key}: val {100 * np.mean(val):.2f} test {100 * np.mean(test):.2f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)

    payload = {
        "dataset": args.dataset,
        "shots": args.shots,
        "protocol_used": "paper",
        "seeds": list(args.seeds),
        "pool": pool,
        "selection": "max mean over seeds of the validation accuracy of the teachers' mean softmax "
                     "(ties: validation oracle); test figures are reported, never used",
        "chosen": chosen,
        "default": default_name,
        "single_teacher": {t: {p: float(np.mean(v[p])) for p in ("val", "test")} for t, v in singles.items()},
        "single_teacher_per_seed": singles,
        "compositions": summary,
        "compositions_per_seed": {n: per_combo[n] for n in kept},
        "ranked_by_validation": ranked,
        "distill": distill,
        "wall_time_s": time.perf_counter() - start,
        "command": provenance.command_line(
            ["benchmarks/pkd_teacher_pool.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    payload = provenance.write_json(args.output, payload, command=payload["command"], started=started,
                                    indent=1, repo_dir=Path(__file__).resolve().parent)
    print(f"{'composition':<34} {'val ens':>8} {'val orc':>8} {'test ens':>9} {'test best':>9} "
          f"{'test orc':>9} {'test gap':>9}")
    for name in kept:
        v, t = summary[name]["val"], summary[name]["test"]
        print(f"{name:<34} {100 * v['ensemble']:8.2f} {100 * v['oracle']:8.2f} {100 * t['ensemble']:9.2f} "
              f"{100 * t['best']:9.2f} {100 * t['oracle']:9.2f} {100 * t['gap']:9.2f}")
    single = payload["single_teacher"]
    print("single teachers (val / test):", ", ".join(
        f"{t} {100 * single[t]['val']:.1f}/{100 * single[t]['test']:.1f}" for t in pool))
    print(f"chosen by validation: {chosen}")
    return payload


if __name__ == "__main__":
    main()
