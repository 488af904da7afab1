"""What PKD's label-free referee check decides, seed by seed, without running the rest of the pipeline.

    python benchmarks/pkd_referee_check.py --dataset citeseer --shots 3 --seeds 0 1 2 3 4 \\
        --output benchmarks/results/pkdsel_referee_check_citeseer_strict_3.json

Under the ``strict`` protocol (no validation labels) :meth:`PKD.referee_check` cross-validates the
shot-trained teachers on the shots and compares them with the annotator on the same held-out shots; PKD
denoises the LLM labels only when the exact paired lower confidence bound of the referees' accuracy gain
exceeds the margin. For each seed this script draws the split, asks the benchmark's annotator about the
shots and records the check (``referee_cv_acc``, ``llm_shot_acc``, the discordant counts
``referee_only_right`` / ``llm_only_right``, both bounds and p-values, ``denoise`` under the default rule)
and what each rule decides from the same counts (``denoise_by_rule``: ``veto`` and ``cv``). Beside it,
as a diagnostic read from the test labels after the check, it records the shot-trained teachers' mean test
accuracy and the annotator's accuracy on the test nodes: the quantities the check estimates from the shots
alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from graphspike_kd.benchmarks import provenance
from graphspike_kd.graph.datasets import available_datasets, load_tag_dataset
from graphspike_kd.graph.models import prepare_features
from graphspike_kd.graph.pkd import PKD, PKDConfig, default_models, referee_decision
from graphspike_kd.graph.splits import few_shot_split
from graphspike_kd.graph.training import TrainConfig


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="citeseer", choices=available_datasets())
    p.add_argument("--shots", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    started = provenance.now()
    from graphspike_kd.graph.annotators import get_annotator

    data = load_tag_dataset(args.dataset, show_progress=False)
    annotator = get_annotator("cached" if data.llm_predictions is not None else "embedding", dataset=data)
    teachers, student = default_models(data.name)
    # the benchmark's PKD settings under strict: no early stopping
    config = PKDConfig(teachers=teachers, student=student, hidden=128,
                       train=TrainConfig(lr=0.01, weight_decay=5e-4, epochs=200, patience=None))
    pkd = PKD(config)
    rows = []
    for seed in args.seeds:
        split = few_shot_split(data.y, args.shots, protocol="strict", seed=seed,
                               planetoid_test_mask=data.test_mask)
        shot_llm = torch.from_numpy(annotator.annotate(split.train_index.numpy()).labels.copy())
        check = pkd.referee_check(data, split, shot_llm, seed)
        check["denoise_by_rule"] = {
            rule: referee_decision(check["referee_only_right"], check["llm_only_right"], check["held_out"],
                                   rule=rule, confidence=config.referee_confidence,
                                   margin=config.referee_margin)
            for rule in ("veto", "cv")
        } if check["held_out"] else {"veto": False, "cv": False}
        # diagnostics from the test labels, after the decision
        x = prepare_features(data.x)
        shots = torch.where(split.train_mask, data.y, torch.full_like(data.y, -1))
        _, probs = pkd.train_teachers(data, x, shots, split.train_mask, split, seed)
        test = split.test_mask
        teacher_test = float((probs.argmax(-1)[:, test] == data.y[test]).float().mean())
        mean_test = float((probs.mean(0).argmax(-1)[test] == data.y[test]).float().mean())
        llm_test = annotator.annotate(split.test_index.numpy()).accuracy(data.y)
        rows.append({"seed": seed, **check, "shot_teacher_test_acc": teacher_test,
                     "shot_teacher_mean_softmax_test_acc": mean_test, "llm_test_acc": llm_test})
        print(f"seed {seed}: referees {check['referee_cv_acc']:.3f} vs LLM {check['llm_shot_acc']:.3f} -> "
              f"{'denoise' if check['denoise'] else 'raw'} ({check['rule']}) | "
              f"test: referees {mean_test:.3f}, "
              f"LLM {llm_test:.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        payload = _payload(args, teachers, rows, start, argv)  # written after every seed
        payload = provenance.write_json(args.output, payload, command=payload["command"], started=started,
                                        indent=1, repo_dir=Path(__file__).resolve().parent)
    return payload


def _payload(args, teachers, rows, start, argv) -> dict:
    return {
        "dataset": args.dataset, "shots": args.shots, "protocol": "strict",
        "seeds": [r["seed"] for r in rows], "teachers": list(teachers), "per_seed": rows,
        "denoised_seeds": [r["seed"] for r in rows if r["denoise"]],
        "denoised_seeds_by_rule": {rule: [r["seed"] for r in rows if r["denoise_by_rule"][rule]]
                                   for rule in ("veto", "cv")},
        "mean_referee_cv_acc": float(np.mean([r["referee_cv_acc"] for r in rows])),
        "mean_llm_shot_acc": float(np.mean([r["llm_shot_acc"] for r in rows])),
        "wall_time_s": time.perf_counter() - start,
        "command": provenance.command_line(
            ["benchmarks/pkd_referee_check.py", *(argv if argv is not None else sys.argv[1:])]),
    }


if __name__ == "__main__":
    main()
