"""Knowledge-distillation detection on scikit-learn's digits: given a student's weights and two candidate
teachers, which teacher (if any) was it distilled from?

Per seed: two teachers of different architectures trained on one half of the data; on a disjoint transfer
set, ``--per-teacher`` students are distilled from each teacher (KD, T = 4, 0.1 CE + 0.9 KD) and
``--independent`` students of the same architecture are trained on the labels only. Probes come from the
student alone (model inversion matching its BatchNorm statistics, data-free), from uniform noise, or —
as an oracle — from held-out real digits. Scores: KL-inverse (black-box), ACS and linear CKA
(penultimate features). Metrics: multiple-choice accuracy and one-vs-rest AUC over the distilled
students, and the pairwise AUC over all (student, teacher) pairs including the independent students.

    python -m graphspike_kd.benchmarks.kd_detection --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from graphspike_kd.benchmarks import provenance
from graphspike_kd.benchmarks._digits import (
    MLP,
    accuracy,
    load_digits_tensors,
    stratified_split,
    train_supervised,
)
from graphspike_kd.common.detection import SCORES, detection_metrics, detection_scores, synthesize_probes
from graphspike_kd.common.losses import kd_loss

TEACHER_SETS = {
    # two teachers of one architecture (different seeds): the default
    "same": {"teacher_a": (128,), "teacher_b": (128,)},
    # two architectures: scores then carry an architecture bias (see docs/detection.md)
    "mixed": {"teacher_a": (128, 64), "teacher_b": (256,)},
}
STUDENT = (32,)
PROBES = ("synthesized", "noise", "real")


def distill(student: MLP, teacher: MLP, x, y, *, epochs: int, generator: torch.Generator) -> None:
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    teacher.eval()
    with torch.no_grad():
        t_logits = teacher(x)
    student.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=generator)
        for i in range(0, x.shape[0], 32):
            idx = perm[i:i + 32]
            if idx.numel() < 2:
                continue
            s = student(x[idx])
            loss = 0.1 * F.cross_entropy(s, y[idx]) + 0.9 * kd_loss(s, t_logits[idx], temperature=4.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    student.eval()


def run_seed(seed: int, args: argparse.Namespace, progress: bool) -> dict:
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = load_digits_tensors()
    teach_idx, transfer_idx, test_idx = stratified_split(y, [0.5, 0.3], rng)
    teachers = []
    for i, hidden in enumerate(TEACHER_SETS[args.teachers].values()):
        torch.manual_seed(seed * 1000 + i)
        t = MLP(64, hidden, 10, batch_norm=True)
        train_supervised(t, x[teach_idx], y[teach_idx], epochs=args.epochs, lr=3e-3, batch_size=32,
                         generator=gen, optimizer="adam")
        teachers.append(t)
    students, labels = [], []
    jobs = [(k, j) for k in range(len(teachers)) for j in range(args.per_teacher)]
    jobs += [(-1, j) for j in range(args.independent)]
    for n, (k, _) in enumerate(tqdm(jobs, desc=f"students seed {seed}", disable=not progress, leave=False)):
        torch.manual_seed(seed * 1000 + 100 + n)
        s = MLP(64, STUDENT, 10, batch_norm=True)
        if k >= 0:
            distill(s, teachers[k], x[transfer_idx], y[transfer_idx], epochs=args.epochs, generator=gen)
        else:
            train_supervised(s, x[transfer_idx], y[transfer_idx], epochs=args.epochs, lr=3e-3, batch_size=32,
                             generator=gen, optimizer="adam")
        students.append(s)
        labels.append(k)
    x_test, y_test = x[test_idx], y[test_idx]
    real = x_test[torch.randperm(x_test.shape[0], generator=gen)[: args.probes]]
    scores = {p: {s: [] for s in SCORES} for p in PROBES}
    for s in tqdm(students, desc=f"probes seed {seed}", disable=not progress, leave=False):
        probe_sets = {
            "synthesized": synthesize_probes(s, args.probes, (64,), 10, steps=args.synth_steps,
                                             input_range=(0.0, 1.0), generator=gen),
            "noise": torch.rand(args.probes, 64, generator=gen),
            "real": real,
        }
        for p, probes in probe_sets.items():
            for sc in SCORES:
                scores[p][sc].append(detection_scores(s, teachers, probes, score=sc))
    metrics = {p: {sc: detection_metrics(torch.stack(v), labels) for sc, v in d.items()}
               for p, d in scores.items()}
    return {
        "metrics": metrics,
        "teacher_acc": [accuracy(t, x_test, y_test) for t in teachers],
        "student_acc": [accuracy(s, x_test, y_test) for s in students],
        "labels": labels,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m graphspike_kd.benchmarks.kd_detection", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-teacher", type=int, default=4, help="distilled students per teacher (default 4)")
    p.add_argument("--independent", type=int, default=4, help="independent students (default 4)")
    p.add_argument("--probes", type=int, default=50, help="probes per student N (default 50)")
    p.add_argument("--synth-steps", type=int, default=200, help="model-inversion steps (default 200)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--teachers", choices=sorted(TEACHER_SETS), default="same",
                   help="candidate teachers: one architecture, two seeds (same) or two architectures (mixed)")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/kd_detection.json"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    runs = [run_seed(s, args, not args.quiet) for s in args.seeds]
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for pr in PROBES:
        table[pr] = {}
        for sc in SCORES:
            table[pr][sc] = {m: [r["metrics"][pr][sc][m] for r in runs]
                             for m in ("accuracy", "auc_ovr", "auc_pairs")}
    report = {
        "dataset": "sklearn digits", "teacher_set": args.teachers,
        "teachers": {k: list(v) for k, v in TEACHER_SETS[args.teachers].items()},
        "student": list(STUDENT), "students_per_seed": len(runs[0]["labels"]), "labels": runs[0]["labels"],
        "probes": args.probes, "seeds": args.seeds, "results": table,
        "teacher_acc": [r["teacher_acc"] for r in runs],
        "student_acc_mean": [float(np.mean(r["student_acc"])) for r in runs],
        "wall_time_s": round(time.time() - start, 1),
        "command": provenance.command_line(["", *(sys.argv[1:] if argv is None else argv)],
                                           module="graphspike_kd.benchmarks.kd_detection"),
    }
    print(f"{'probes':<12} {'score':<5} {'accuracy':>15} {'AUC (ovr)':>15} {'AUC (pairs)':>15}")
    for pr in PROBES:
        for sc in SCORES:
            cells = []
            for m in ("accuracy", "auc_ovr", "auc_pairs"):
                v = table[pr][sc][m]
                cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f}")
            print(f"{pr:<12} {sc:<5} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15}")
    report = provenance.write_json(args.output, report, command=report["command"], started=start)
    print(f"wrote {args.output} ({report['wall_time_s']} s)")
    return report


if __name__ == "__main__":
    main()
