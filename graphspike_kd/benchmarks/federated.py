"""Model-heterogeneous federated learning on scikit-learn's digits: FedAvg within each architecture vs
FedFD (feature distillation through orthogonal projectors) vs FedFree (pseudo-data layer alignment +
Knowledge Gain Entropy), plus local-only training.

Setting: 10 clients, 3 MLP architectures assigned round-robin, a Dirichlet(alpha) label split of the
training set, a held-out unlabeled proxy set on the server (FedFD only) and a stratified test set. Every
client model is evaluated on the whole test set ("global" accuracy) and on the test set re-weighted to
the client's own label mix ("local" accuracy); the table reports the mean over clients, then mean ± std
over seeds.

    python -m graphspike_kd.benchmarks.federated --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from graphspike_kd.benchmarks import provenance
from graphspike_kd.benchmarks._digits import (
    MLP,
    accuracy,
    class_weighted_accuracy,
    load_digits_tensors,
    stratified_split,
    train_supervised,
)
from graphspike_kd.common.federated import FedFDServer, FedFreeServer, dirichlet_partition, fedavg

ARCHS = {"mlp_small": (32,), "mlp_deep": (64, 32), "mlp_wide": (128,)}
SERVER_ARCH = (64, 32)
METHODS = ("local", "fedavg", "fedfd", "fedfree")


def _build(arch: str, seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(64, ARCHS[arch], 10)


def run_seed(method: str, seed: int, args: argparse.Namespace, progress: bool) -> dict:
    rng = np.random.default_rng(seed)
    x, y = load_digits_tensors()
    test_idx, proxy_idx, train_idx = stratified_split(y, [0.25, 0.10], rng)
    parts = dirichlet_partition(y[train_idx].numpy(), args.clients, args.alpha, rng, min_size=10)
    client_data = [(x[train_idx[p]], y[train_idx[p]]) for p in parts]
    arch_of = [list(ARCHS)[k % len(ARCHS)] for k in range(args.clients)]
    gen = torch.Generator().manual_seed(seed)
    # one initial model per architecture, shared by its clients (as FedAvg requires)
    arch_init = {a: _build(a, seed * 100 + i) for i, a in enumerate(ARCHS)}
    clients = [copy.deepcopy(arch_init[a]) for a in arch_of]
    sizes = [d[0].shape[0] for d in client_data]
    fd_server = None
    if method == "fedfd":
        torch.manual_seed(seed * 100 + 99)
        dims = {a: h[-1] for a, h in ARCHS.items()}
        fd_server = FedFDServer(MLP(64, SERVER_ARCH, 10), SERVER_ARCH[-1], dims,
                                distill_steps=args.server_steps, transfer_steps=args.server_steps)
    ff_server = None
    if method == "fedfree":
        torch.manual_seed(seed * 100 + 98)
        ff_server = FedFreeServer(MLP(64, SERVER_ARCH, 10), server_lr=0.01, align_steps=args.align_steps,
                                  generator=torch.Generator().manual_seed(seed + 7))
    stats: dict[str, float] = {"replaced_layers": 0.0}
    for _ in tqdm(range(args.rounds), desc=f"{method} seed {seed}", disable=not progress, leave=False):
        before = [copy.deepcopy(m) for m in clients]
        for m, (cx, cy) in zip(clients, client_data, strict=True):
            train_supervised(m, cx, cy, epochs=args.local_epochs, lr=args.lr, batch_size=args.batch_size,
                             generator=gen)
        if method in ("fedavg", "fedfd"):
            by_arch = {a: [k for k in range(args.clients) if arch_of[k] == a] for a in ARCHS}
            if fd_server is not None:
                fd_server.distill(x[proxy_idx], {a: [clients[k] for k in ks] for a, ks in by_arch.items()},
                                  arch_weights={a: sum(sizes[k] for k in ks) for a, ks in by_arch.items()},
                                  generator=gen)
            for a, ks in by_arch.items():
                avg = fedavg([clients[k] for k in ks], [sizes[k] for k in ks])
                merged = copy.deepcopy(clients[ks[0]])
                merged.load_state_dict(avg)
                if fd_server is not None:
                    fd_server.transfer(x[proxy_idx], a, merged, generator=gen)
                for k in ks:
                    clients[k].load_state_dict(merged.state_dict())
        elif ff_server is not None:
            uploads = [(m, ff_server.select_upload(b, m)) for b, m in zip(before, clients, strict=True)]
            ff_server.align(uploads)
            for m, idx in uploads:
                stats["replaced_layers"] += ff_server.distribute(m, idx)["replaced"]
    x_test, y_test = x[test_idx], y[test_idx]
    glob = [accuracy(m, x_test, y_test) for m in clients]
    local = [
        class_weighted_accuracy(m, x_test, y_test, torch.bincount(cy, minlength=10).float())
        for m, (_, cy) in zip(clients, client_data, strict=True)
    ]
    per_arch = {a: float(np.mean([g for g, aa in zip(glob, arch_of, strict=True) if aa == a])) for a in ARCHS}
    out = {"global_acc": float(np.mean(glob)), "local_acc": float(np.mean(local)),
           "per_arch_global": per_arch}
    if fd_server is not None:
        out["server_model_acc"] = accuracy(fd_server.global_model, x_test, y_test)
    if ff_server is not None:
        out["server_model_acc"] = accuracy(ff_server.global_model, x_test, y_test)
        out["replaced_layers_per_round"] = stats["replaced_layers"] / args.rounds
    return out


def _mean_std(v: list[float]) -> tuple[float, float]:
    return float(np.mean(v)), float(np.std(v))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m graphspike_kd.benchmarks.federated", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default 0.5)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-epochs", type=int, default=5, help="E (FedFree paper: 5)")
    p.add_argument("--batch-size", type=int, default=10, help="client batch (FedFree paper: 10)")
    p.add_argument("--lr", type=float, default=0.05, help="client SGD lr (FedFree paper: 0.01 on CIFAR)")
    p.add_argument("--server-steps", type=int, default=30, help="FedFD distill and transfer steps")
    p.add_argument("--align-steps", type=int, default=100, help="FedFree alignment SGD steps per round")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/federated.json"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    results: dict[str, dict] = {}
    for method in args.methods:
        runs = [run_seed(method, s, args, not args.quiet) for s in args.seeds]
        g, lo = [r["global_acc"] for r in runs], [r["local_acc"] for r in runs]
        results[method] = {
            "global_acc": g, "local_acc": lo,
            "global_mean": _mean_std(g)[0], "global_std": _mean_std(g)[1],
            "local_mean": _mean_std(lo)[0], "local_std": _mean_std(lo)[1],
            "per_arch_global": {a: _mean_std([r["per_arch_global"][a] for r in runs])[0] for a in ARCHS},
        }
        if "server_model_acc" in runs[0]:
            results[method]["server_model_acc"] = [r["server_model_acc"] for r in runs]
        if "replaced_layers_per_round" in runs[0]:
            results[method]["replaced_layers_per_round"] = [r["replaced_layers_per_round"] for r in runs]
    report = {
        "dataset": "sklearn digits", "clients": args.clients, "alpha": args.alpha, "rounds": args.rounds,
        "local_epochs": args.local_epochs, "lr": args.lr, "archs": {a: list(h) for a, h in ARCHS.items()},
        "seeds": args.seeds, "methods": results, "wall_time_s": round(time.time() - start, 1),
        "command": provenance.command_line(["", *(sys.argv[1:] if argv is None else argv)],
                                           module="graphspike_kd.benchmarks.federated"),
    }
    header = f"{'method':<8} {'global acc':>16} {'local acc':>16}  " + "  ".join(f"{a:>9}" for a in ARCHS)
    print(header)
    for m, r in results.items():
        arch_cols = "  ".join(f"{r['per_arch_global'][a]:>9.4f}" for a in ARCHS)
        print(f"{m:<8} {r['global_mean']:.4f} ± {r['global_std']:.4f} {r['local_mean']:.4f} ± "
              f"{r['local_std']:.4f}  {arch_cols}")
    report = provenance.write_json(args.output, report, command=report["command"], started=start)
    print(f"wrote {args.output} ({report['wall_time_s']} s)")
    return report


if __name__ == "__main__":
    main()
