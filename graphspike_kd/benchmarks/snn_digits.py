"""BPTT vs rate-BP vs rate-BP + ESD on scikit-learn's digits (8x8 grey images), a small spiking conv net.

    python -m graphspike_kd.benchmarks.snn_digits [--seeds 0 1 2 3 4] [--epochs 20] [--T 4]
                                                  [--methods bptt ratebp esd] [--esd-beta 0.3]
                                                  [--output FILE.json] [--quiet]

Data: ``sklearn.datasets.load_digits`` (1,797 images shipped inside scikit-learn, nothing downloaded),
pixels scaled to [0, 1], one fixed stratified split (25 % test, ``random_state=0``); the seed sets the
initialisation and the batch order. Model: spiking VGG ``[16, 16, A, 32, A, 64, A]`` (stem 16, three
stages: 8x8 -> 4x4 -> 2x2 -> 1x1) with the official rate-BP LIF neuron, direct encoding for ``T`` steps.
Training: SGD (momentum 0.9, lr 0.1, weight decay 5e-4), cosine schedule, batch 64, identical for all
methods; rate-BP and ESD keep the official 1/T gradient scaling. ESD taps the first two stages with
ANN branches (alpha 1, beta 0.3, tau 3). Evaluation for every method: the plain T-step SNN, BN in eval
mode, test accuracy after the last epoch.

Prints a table (method, mean +- std, per seed) and writes JSON
``{"dataset", "T", "epochs", "seeds", "split", "methods": {NAME: {"acc", "mean", "std"}}, "wall_time_s"}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from graphspike_kd.spiking.esd import ESDNet, esd_step_loss
from graphspike_kd.spiking.models import SpikingVGG
from graphspike_kd.spiking.ratebp import bptt_loss, ratebp_loss

METHODS = ("bptt", "ratebp", "esd")
CFG: list[int | str] = [16, 16, "A", 32, "A", 64, "A"]
DEFAULT_OUTPUT = Path("benchmarks") / "results" / "snn_digits.json"

StepLoss = Callable[[nn.Module, Tensor, Tensor, int], dict[str, Any]]

#: One batch's loss per method: the training-step logic a trainer reuses.
STEP_LOSSES: dict[str, StepLoss] = {
    "bptt": lambda model, x, y, T: bptt_loss(model, x, y, T),
    "ratebp": lambda model, x, y, T: ratebp_loss(model, x, y, T),
    "esd": lambda model, x, y, T: esd_step_loss(model, x, y, T),  # type: ignore[arg-type]
}


def load_digits_split(split_seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: images ``[N, 1, 8, 8]`` in [0, 1], labels ``[N]``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(range(len(y)), test_size=0.25, random_state=split_seed,
                                           stratify=data.target)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def build_model(method: str, T: int) -> nn.Module:
    backbone = SpikingVGG(CFG, in_channels=1, num_classes=10, T=T)
    return ESDNet(backbone, 10, (1, 8, 8)) if method == "esd" else backbone


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, T: int, batch: int = 512) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        correct += int((model(x[i : i + batch], T=T).argmax(1) == y[i : i + batch]).sum())
    model.train()
    return 100.0 * correct / len(y)


def run(method: str, seed: int, data: tuple[Tensor, ...], *, T: int, epochs: int, batch: int = 64,
        lr: float = 0.1, esd_beta: float = 0.3, progress: Any = None) -> float:
    """Train one model with ``method`` and return its test accuracy (%). ``esd_beta`` is ESD's
    self-distillation weight (0 leaves only the exits' cross-entropies: an ablation)."""
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(seed)
    model = build_model(method, T)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = (len(y_tr) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    step_loss = partial(esd_step_loss, beta=esd_beta) if method == "esd" else STEP_LOSSES[method]
    for _ in range(epochs):
        order = torch.randperm(len(y_tr), generator=gen)
        for i in range(0, len(y_tr), batch):
            idx = order[i : i + batch]
            opt.zero_grad(set_to_none=True)
            step_loss(model, x_tr[idx], y_tr[idx], T)["loss"].backward()
            opt.step()
            sched.step()
        if progress is not None:
            progress.update(1)
    return evaluate(model, x_te, y_te, T)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--T", type=int, default=4, help="time steps (direct encoding)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--esd-beta", type=float, default=0.3,
                        help="ESD self-distillation weight (0: exits' cross-entropies only, an ablation)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON results file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.T < 1 or args.epochs < 1:
        parser.error(f"--T and --epochs must be >= 1, got T={args.T}, epochs={args.epochs}")

    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    start = time.time()
    data = load_digits_split(0)
    results: dict[str, Any] = {
        "dataset": "sklearn digits (8x8)", "T": args.T, "epochs": args.epochs, "seeds": args.seeds,
        "split": {"train": len(data[1]), "test": len(data[3]), "random_state": 0, "stratified": True},
        "model": f"SpikingVGG({CFG}), official rate-BP LIF (tau 1.25, soft reset, detach_reset)",
        "esd_beta": args.esd_beta, "methods": {},
    }
    total = len(args.methods) * len(args.seeds) * args.epochs
    with tqdm(total=total, desc="snn_digits", disable=args.quiet) as bar:
        for method in args.methods:
            accs = [run(method, s, data, T=args.T, epochs=args.epochs, esd_beta=args.esd_beta, progress=bar)
                    for s in args.seeds]
            results["methods"][method] = {
                "acc": [round(a, 2) for a in accs], "mean": round(statistics.mean(accs), 2),
                "std": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0}
    results["wall_time_s"] = round(time.time() - start, 1)

    lines = [f"digits, T={args.T}, {args.epochs} epochs, seeds {args.seeds} (test accuracy %, plain SNN)",
             f"{'method':<8}{'mean':>8}{'std':>7}  per seed"]
    for method, rec in results["methods"].items():
        lines.append(f"{method:<8}{rec['mean']:>8.2f}{rec['std']:>7.2f}  {rec['acc']}")
    print("\n".join(lines))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
