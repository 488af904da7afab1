"""Train spiking networks with BPTT, rate-BP, ESD or timestep self-distillation (Strong2Weak / Weak2Strong).

One grid run: every method x every T x every seed, a table of mean +- std test accuracy (also at fewer
time steps than trained: low-latency evaluation), a JSON file and a PNG training curve.

    # CPU, minutes: scikit-learn's digits (8x8, static images repeated over T steps)
    python -m graphspike_kd.benchmarks.snn --dataset digits --method vanilla s2w w2s --T 1 2 4 \\
        --seeds 0 1 2 3 4 --neuron synergy --output snn_digits_s2w.json

    # BPTT vs rate-BP vs rate-BP + ESD (three-stage VGG, so ESD gets two branches; --esd-beta 0: ablation)
    python -m graphspike_kd.benchmarks.snn --dataset digits --method vanilla ratebp esd --T 4 \\
        --model small3 --seeds 0 1 2 3 4 --epochs 20 --output snn_digits_esd.json

    # GPU: CIFAR10-DVS from the extracted original release (10 class folders of .aedat)
    python -m graphspike_kd.benchmarks.snn --dataset cifar10dvs --root /data/CIFAR10DVS \\
        --method vanilla s2w w2s --T 5 --model vgg9 --neuron synergy --epochs 100 --batch-size 64 \\
        --lr 0.1 --weight-decay 1e-3 --schedule step --step-size 30 --split random_9to1

    # several GPUs / CPU processes (--batch-size is the global batch: each of the W processes reads
    # batch-size / W samples per step, so a W-process run takes the steps of a one-process run)
    torchrun --nproc-per-node 2 -m graphspike_kd.benchmarks.snn --dataset digits --method s2w --T 2 \\
        --epochs 10 --threads 1

``--write-synthetic N`` first writes a small class-structured CIFAR10-DVS-shaped release (N AEDAT 2.0
files per class, a bar at a class-specific orientation plus noise) into ``--root``: a smoke test of the whole
pipeline (AEDAT decoding, cached frame integration, augmentation, training) where the real data is absent.

Accuracies are percentages. Output, plot and checkpoint paths are checked before any training; the JSON is
written atomically. ``--resume`` refuses a checkpoint written with other settings unless the changed
``TrainConfig`` fields are named in ``--resume-override`` (the new values then apply from the resumed epoch
and the JSON records the change under ``"runs"``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from graphspike_kd.benchmarks import provenance
from graphspike_kd.spiking.data.digits import DIGITS_CFG, DIGITS_CFG3, DIGITS_MODELS, load_digits_split
from graphspike_kd.spiking.esd import ESDNet
from graphspike_kd.spiking.models import SpikingVGG, available_models, get_model
from graphspike_kd.spiking.models.layers import RATEBP_NEURON
from graphspike_kd.spiking.neurons import BACKENDS
from graphspike_kd.spiking.surrogate import Rectangle
from graphspike_kd.spiking.train import (
    GRAD_SCALE_PAPER,
    METHODS,
    TrainConfig,
    Trainer,
    check_writable_dir,
    check_writable_path,
    init_distributed,
    plot_history,
)

DATASETS = ("digits", "cifar10dvs")

#: Neuron presets: the official rate-BP / ESD LIF, and Synergy's (LIF tau 2, soft reset, rectangle a = 1).
NEURONS: dict[str, dict[str, Any]] = {
    "ratebp": dict(RATEBP_NEURON),
    "synergy": {"kind": "lif", "tau": 2.0, "decay_input": True, "v_reset": None, "detach_reset": False,
                "v_threshold": 1.0},
}

# the digits VGGs (``--model small`` / ``small3``) live in graphspike_kd.spiking.data.digits
__all__ = ["DIGITS_CFG", "DIGITS_CFG3", "DIGITS_MODELS", "NEURONS", "load_digits_split", "main", "parse_args",
           "run"]

#: Synergy (NeurIPS 2025) CIFAR10-DVS, VGG-9, T = 5 (their Table; random 90/10 split, mean of 3 trials).
PAPER_CIFAR10DVS_VGG9_T5 = {"vanilla": 73.97, "s2w": 78.93, "w2s": 79.33}


def neuron_config(name: str, backend: str | None = None) -> dict[str, Any]:
    """The neuron preset ``name`` of :data:`NEURONS`, with ``backend`` (``None``: the neuron's default)."""
    cfg = dict(NEURONS[name])
    if name == "synergy":
        cfg["surrogate"] = Rectangle(alpha=1.0)
    if backend is not None:
        cfg["backend"] = backend
    return cfg


# --------------------------------------------------------------------------------------------- datasets
class _Transformed(Dataset):
    def __init__(self, base: Dataset, transform: Any) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.base[i]
        return self.transform(x), y


def write_synthetic_release(root: str | Path, per_class: int, *, events: int = 3000, seed: int = 0) -> Path:
    """Write a CIFAR10-DVS-shaped folder of AEDAT 2.0 files: class ``c`` is a bar through a random point near
    the centre at orientation ``18 degrees x c`` (70 % of the events, ON and OFF edges on either side of
    it), plus 30 % uniform noise events. Orientation, not position, carries the class, so a convolutional
    net with global pooling can learn it."""
    from graphspike_kd.spiking.data import CLASS_NAMES, write_aedat

    root = Path(root)
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(CLASS_NAMES):
        (root / cls).mkdir(parents=True, exist_ok=True)
        theta = math.pi * label / 10
        direction = np.array([math.cos(theta), math.sin(theta)])
        normal = np.array([-direction[1], direction[0]])
        for i in range(per_class):
            n_sig = int(events * 0.7)
            centre = 64 + rng.normal(0, 10, 2)
            along = rng.uniform(-45, 45, n_sig)
            side = rng.integers(0, 2, n_sig)  # ON edge on one side of the bar, OFF edge on the other
            across = np.where(side == 1, 2.0, -2.0) + rng.normal(0, 1.0, n_sig)
            pts = centre + along[:, None] * direction + across[:, None] * normal
            xs = np.concatenate([pts[:, 0], rng.uniform(0, 128, events - n_sig)])
            ys = np.concatenate([pts[:, 1], rng.uniform(0, 128, events - n_sig)])
            ps = np.concatenate([side.astype(bool), rng.integers(0, 2, events - n_sig).astype(bool)])
            order = rng.permutation(events)
            ev = np.zeros(events, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "?")])
            ev["x"] = np.clip(xs[order], 0, 127).astype(np.int16)
            ev["y"] = np.clip(ys[order], 0, 127).astype(np.int16)
            ev["p"] = ps[order]
            ev["t"] = np.sort(rng.integers(0, 1_000_000, events))
            write_aedat(root / cls / f"cifar10_{cls}_{i}.aedat", ev)
    return root


def build_data(args: argparse.Namespace,
               T: int) -> tuple[Dataset, Dataset, tuple[int, int, int], dict[str, Any]]:
    if args.dataset == "digits":
        train, test = load_digits_split(args.split_seed)
        return train, test, (1, 8, 8), {"split": f"stratified 80/20, random_state={args.split_seed}"}
    from graphspike_kd.spiking.data import CIFAR10DVS, dvs_test_transform, dvs_train_transform

    common = dict(frames=T, split_by=args.frames_split_by, split=args.split, seed=args.split_seed,
                  cache_dir=args.cache_dir, workers=args.integrate_workers, progress=not args.quiet)
    train = CIFAR10DVS(args.root, train=True, **common)
    test = CIFAR10DVS(args.root, train=False, **common)
    size = args.size
    train_t = dvs_train_transform(size, flip=True, max_roll=args.max_roll)
    info = {"split": args.split, "split_description": train.split_description, "frames": train.settings.key(),
            "size": size, "train_samples": len(train), "test_samples": len(test)}
    return _Transformed(train, train_t), _Transformed(test, dvs_test_transform(size)), (2, size, size), info


def build_model(args: argparse.Namespace, method: str, T: int,
                input_shape: tuple[int, int, int]) -> torch.nn.Module:
    neuron = neuron_config(args.neuron, args.backend)
    if args.model in DIGITS_MODELS or (args.dataset == "digits" and args.model == "auto"):
        cfg = DIGITS_MODELS.get(args.model, DIGITS_CFG)
        model: torch.nn.Module = SpikingVGG(cfg, in_channels=input_shape[0], num_classes=10, T=T,
                                            neuron=neuron)
    else:
        name = "vgg9" if args.model == "auto" else args.model
        model = get_model(name, in_channels=input_shape[0], num_classes=10, T=T, neuron=neuron)
    if method == "esd":
        model = ESDNet(model, 10, input_shape)
    return model


# ---------------------------------------------------------------------------------------------------- run
def _summary(values: list[float]) -> dict[str, Any]:
    return {"acc": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _check_paths(args: argparse.Namespace, main: bool) -> None:
    """Fail before any work when an output, plot or checkpoint path cannot be written."""
    try:
        if main and args.output:
            check_writable_path(args.output, "--output")
        if main and args.plot:
            check_writable_path(args.plot, "--plot")
            try:
                import matplotlib  # noqa: F401
            except ImportError as exc:
                raise ValueError(f"--plot needs matplotlib ({exc})") from exc
        if main and args.checkpoint_dir:
            check_writable_dir(args.checkpoint_dir, "--checkpoint-dir")
        if main and args.write_synthetic and args.root:
            check_writable_dir(args.root, "--root")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.dataset == "cifar10dvs" and args.root is None:
        raise SystemExit("--dataset cifar10dvs needs --root (the extracted release: 10 class folders)")
    if args.write_synthetic and args.root is None:
        raise SystemExit("--write-synthetic needs --root (where to write the release)")
    if args.dataset == "cifar10dvs" and not args.write_synthetic and not Path(args.root).is_dir():
        raise SystemExit(f"--root {args.root!r} is not a folder")


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate every method x T x seed of ``args``; prints the table, writes ``--output`` (with
    its provenance record, :mod:`graphspike_kd.benchmarks.provenance`) and ``--plot`` and returns the
    results. ``argv`` (default ``sys.argv[1:]``) is the command line recorded as ``command``."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dist_info = init_distributed(torch.device(args.device) if args.device else None)
    main = dist_info.is_main
    _check_paths(args, main)
    started = provenance.now()
    world = dist_info.world_size
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} is the global batch; it must be divisible by the "
                         f"{world} processes")
    per_process_batch = args.batch_size // world
    if args.write_synthetic:
        if main:
            write_synthetic_release(args.root, args.write_synthetic, seed=args.split_seed)
        if dist_info.enabled:
            torch.distributed.barrier()
    results: dict[str, Any] = {
        "dataset": args.dataset,
        "command": provenance.command_line(["", *(sys.argv[1:] if argv is None else argv)],
                                           module="graphspike_kd.benchmarks.snn"),
        "neuron": args.neuron, "backend": args.backend, "model": args.model, "seeds": args.seeds, "T": args.T,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "esd_beta": args.esd_beta, "grad_scale": args.grad_scale, "accuracy_unit": "percent",
        "world_size": world, "per_process_batch_size": per_process_batch, "methods": {}, "runs": {},
        "device": None,
    }
    if args.dataset == "cifar10dvs":
        results["paper_cifar10dvs_vgg9_T5"] = PAPER_CIFAR10DVS_VGG9_T5
    histories: dict[str, list[dict[str, Any]]] = {}
    t_start = time.perf_counter()
    for T in args.T:
        train_set, test_set, input_shape, data_info = build_data(args, T)
        results["data"] = data_info
        for method in args.method:
            accs, at_steps = [], []
            for seed in args.seeds:
                torch.manual_seed(seed)
                model = build_model(args, method, T, input_shape)
                ckpt = None
                if args.checkpoint_dir:
                    ckpt = str(Path(args.checkpoint_dir) / f"{method}_T{T}_seed{seed}")
                config = TrainConfig(
                    method=method, T=T, epochs=args.epochs, batch_size=per_process_batch, lr=args.lr,
                    momentum=0.9, weight_decay=args.weight_decay, optimizer=args.optimizer,
                    no_decay_on_bn_bias=not args.decay_bn_bias,
                    schedule=args.schedule, step_size=args.step_size, kd_weight=args.kd_weight,
                    kd_temperature=args.kd_temperature, kd_detach_teacher=not args.kd_no_detach,
                    esd_beta=args.esd_beta, lean=args.lean and method in ("ratebp", "esd"),
                    grad_scale=args.grad_scale if method in ("ratebp", "esd") else None,
                    steps_per_call=args.steps_per_call if method in ("ratebp", "esd") else None,
                    amp=not args.no_amp,
                    seed=seed, checkpoint_dir=ckpt, resume=args.resume, progress=not args.quiet,
                    num_workers=args.num_workers, max_steps_per_epoch=args.max_steps_per_epoch,
                    resume_overrides=list(args.resume_override),
                )
                try:
                    trainer = Trainer(model, config, device=args.device, dist_info=dist_info)
                except ValueError as exc:
                    raise SystemExit(f"error: {exc}") from exc
                results["device"] = str(trainer.device)
                out = trainer.fit(train_set, test_set)
                accs.append(out["final_test_acc"])
                at_steps.append(dict(out["test_acc_at_steps"]))
                name = f"{method} T={T} seed={seed}"
                histories[name] = out["history"]
                results.setdefault("grad_scale_by_method", {})[method] = config.resolved_grad_scale()
                results["runs"][name] = {"config": asdict(config),
                                         "resumed_from_epoch": out["resumed_from_epoch"],
                                         "config_overrides": out["config_overrides"]}
                if main and not args.quiet:
                    print(f"  {method:>8} T={T} seed={seed}: {out['final_test_acc']:.2f} % "
                          f"({out['wall_time_s']:.1f} s)", flush=True)
            entry = _summary(accs)
            entry["acc_at_steps_mean"] = {k: statistics.fmean(s[k] for s in at_steps) for k in at_steps[0]}
            results["methods"].setdefault(method, {})[str(T)] = entry
    results["wall_time_s"] = time.perf_counter() - t_start
    if main:
        print(format_table(results))
        if args.output:
            provenance.write_json(args.output, {**results, "histories": histories},
                                  command=results["command"], started=started, indent=1)
            print(f"wrote {args.output}")
        if args.plot:
            plot_history(histories, args.plot, title=f"{args.dataset}: test accuracy")
            print(f"wrote {args.plot}")
    if dist_info.enabled:
        torch.distributed.destroy_process_group()
    return results


def format_table(results: dict[str, Any]) -> str:
    Ts = [str(t) for t in results["T"]]
    lines = [f"{results['dataset']}: test accuracy (%), mean +- std over seeds {results['seeds']}",
             f"{'method':>22} " + " ".join(f"{'T=' + t:>16}" for t in Ts)]
    for method, per_T in results["methods"].items():
        cells = []
        for t in Ts:
            e = per_T.get(t)
            cells.append(f"{e['mean']:7.2f} +- {e['std']:5.2f}" if e else f"{'-':>16}")
        lines.append(f"{method:>22} " + " ".join(cells))
    lines.append("low latency (trained at T, evaluated with the first t steps), mean:")
    for method, per_T in results["methods"].items():
        for t, e in per_T.items():
            steps = " ".join(f"t={k}: {v:.2f}" for k, v in e["acc_at_steps_mean"].items())
            lines.append(f"{method:>22} T={t}: {steps}")
    if "paper_cifar10dvs_vgg9_T5" in results:
        lines.append(f"paper (Synergy, VGG-9, T=5): {results['paper_cifar10dvs_vgg9_T5']}")
    return "\n".join(lines)


def _int_at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _float_in(low: float, *, strict: bool) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            sign = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be finite and {sign} {low}, got {text}")
        return value

    parse.__name__ = f"float {'>' if strict else '>='} {low}"
    return parse


_POSITIVE_INT, _NONNEG_INT = _int_at_least(1), _int_at_least(0)
_POSITIVE, _NONNEG = _float_in(0.0, strict=True), _float_in(0.0, strict=False)


def _grad_scale(text: str) -> float | str:
    return GRAD_SCALE_PAPER if text.strip().upper() == GRAD_SCALE_PAPER.upper() else _POSITIVE(text)


_grad_scale.__name__ = f"{GRAD_SCALE_PAPER!r} or float > 0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; nonsensical values (0 epochs, batch, T, steps or threads; a non-positive
    learning rate; ...) are rejected with a usage error."""
    p = argparse.ArgumentParser(prog="python -m graphspike_kd.benchmarks.snn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--method", nargs="+", choices=METHODS, default=["vanilla"])
    p.add_argument("--T", nargs="+", type=_POSITIVE_INT, default=[4],
                   help="time steps (frames for cifar10dvs)")
    p.add_argument("--seeds", nargs="+", type=_NONNEG_INT, default=[0])
    p.add_argument("--epochs", type=_POSITIVE_INT, default=30)
    p.add_argument("--batch-size", type=_POSITIVE_INT, default=64,
                   help="global batch: with W processes (torchrun) each reads batch-size / W per step")
    p.add_argument("--lr", type=_POSITIVE, default=0.1)
    p.add_argument("--weight-decay", type=_NONNEG, default=5e-4)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--decay-bn-bias", action="store_true",
                   help="weight decay on BN parameters and biases too (default: not, as official rate-BP)")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument("--step-size", type=_POSITIVE_INT, default=30)
    p.add_argument("--model", default="auto", choices=("auto", *DIGITS_MODELS, *available_models()),
                   help="auto (digits: small; cifar10dvs: vgg9), small "
                   "(DIGITS_CFG VGG), small3 (DIGITS_CFG3, three stages) or a name of "
                   "graphspike_kd.spiking.models.available_models()")
    p.add_argument("--neuron", choices=sorted(NEURONS), default="ratebp")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="neuron backend (graphspike_kd.spiking.neurons; default: the neuron's own, torch)")
    p.add_argument("--kd-weight", type=_NONNEG, default=1.0, help="lambda of S2W / W2S")
    p.add_argument("--kd-temperature", type=_POSITIVE, default=2.0)
    p.add_argument("--kd-no-detach", action="store_true", help="let the KD gradient reach the teacher step")
    p.add_argument("--esd-beta", type=_NONNEG, default=None, help="ESD beta (default 0.3; 0.1 on cifar10dvs)")
    p.add_argument("--grad-scale", type=_grad_scale, default=None,
                   help="factor on the loss gradient of rate-BP and ESD, a number or 1/T (the papers' "
                   "scale); default: 1 for ratebp, 1/T for esd (graphspike_kd.spiking.train."
                   "DEFAULT_GRAD_SCALE); the BPTT methods of a grid keep 1")
    p.add_argument("--lean", action="store_true", help="rate-BP spike pass one step at a time")
    p.add_argument("--steps-per-call", type=_POSITIVE_INT, default=None,
                   help="rate-BP spike pass this many steps at a time (default: all T at once)")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--device", default=None,
                   help="default: cuda if available, else cpu (torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--root", default=None, help="cifar10dvs: the extracted release (10 class folders)")
    p.add_argument("--cache-dir", default=None, help="cifar10dvs frame cache (default ROOT/.cache/frames)")
    p.add_argument("--split", default="per_class_9to1", choices=("per_class_9to1", "random_9to1", "tebn"))
    p.add_argument("--split-seed", type=_NONNEG_INT, default=0, help="digits split / random_9to1 seed")
    p.add_argument("--frames-split-by", choices=("number", "time"), default="number")
    p.add_argument("--size", type=int, default=48, choices=(48, 64, 128), help="cifar10dvs frame resize")
    p.add_argument("--max-roll", type=_NONNEG_INT, default=5)
    p.add_argument("--integrate-workers", type=_NONNEG_INT, default=None)
    p.add_argument("--num-workers", type=_NONNEG_INT, default=0, help="DataLoader workers")
    p.add_argument("--write-synthetic", type=_NONNEG_INT, default=0, metavar="N",
                   help="first write N synthetic AEDAT files per class into --root")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--resume-override", nargs="+", default=[], metavar="FIELD",
                   help="with --resume: TrainConfig fields (e.g. lr epochs) allowed to differ from the "
                   "checkpoint's; the new values apply from the resumed epoch and are recorded")
    p.add_argument("--max-steps-per-epoch", type=_POSITIVE_INT, default=None)
    p.add_argument("--output", default=None, help="JSON results file")
    p.add_argument("--plot", default=None, help="PNG training curve")
    p.add_argument("--threads", type=_POSITIVE_INT, default=None,
                   help="torch.set_num_threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    args = p.parse_args(argv)
    if args.resume_override and not args.resume:
        p.error("--resume-override needs --resume")
    if args.esd_beta is None:
        args.esd_beta = 0.1 if args.dataset == "cifar10dvs" else 0.3
    if args.device is None and torch.cuda.is_available():
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run(parse_args(argv), argv)


if __name__ == "__main__":
    main()
