"""Forward+backward cost of each registered logit loss relative to cross-entropy, measured side by side.

For every number of classes C and the given batch size, each loss and ``F.cross_entropy`` are timed in
interleaved rounds on the same logits (so machine noise hits both alike); the reported figure is the
ratio of the medians, loss / cross-entropy. Teacher logits carry no gradient (the usual frozen teacher).

    python benchmarks/losses.py                       # C in {10, 100, 1000}, batch 256
    python benchmarks/losses.py --classes 1000 --rounds 50 --output /tmp/losses.json

Writes ``benchmarks/results/losses.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from graphspike_kd.common.losses import dist_loss, dkd_loss, kd_loss, pld_loss

LOSSES = {
    "kd": lambda s, t, y: kd_loss(s, t),
    "dkd": lambda s, t, y: dkd_loss(s, t, y),
    "dist": lambda s, t, y: dist_loss(s, t),
    "pld": lambda s, t, y: pld_loss(s, t, y),
}


def _time_once(fn, s, t, y, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        s.grad = None
        fn(s, t, y).backward()
    return (time.perf_counter() - start) / inner


def measure(classes: int, batch: int, rounds: int, inner: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, classes, generator=g).requires_grad_(True)
    t = torch.randn(batch, classes, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)

    def ce(s, t, y):
        return F.cross_entropy(s, y)

    fns = {"cross_entropy": ce, **LOSSES}
    for fn in fns.values():  # warm-up
        _time_once(fn, s, t, y, inner)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(_time_once(fn, s, t, y, inner))
    med = {name: statistics.median(v) for name, v in samples.items()}
    return {
        "classes": classes,
        "batch": batch,
        "median_us": {name: round(v * 1e6, 2) for name, v in med.items()},
        "ratio_to_ce": {name: round(med[name] / med["cross_entropy"], 3) for name in LOSSES},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (median taken)")
    parser.add_argument("--inner", type=int, default=20, help="forward+backward calls per timing sample")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noise)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "losses.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = [measure(c, args.batch, args.rounds, args.inner) for c in args.classes]
    header = f"{'C':>6} {'CE (us)':>9} " + " ".join(f"{n + ' x CE':>10}" for n in LOSSES)
    print(header)
    for r in rows:
        ratios = " ".join(f"{r['ratio_to_ce'][n]:>10.2f}" for n in LOSSES)
        print(f"{r['classes']:>6} {r['median_us']['cross_entropy']:>9.1f} {ratios}")
    result = {
        "command": "python benchmarks/losses.py " + " ".join(argv or []),
        "batch": args.batch,
        "rounds": args.rounds,
        "inner": args.inner,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
