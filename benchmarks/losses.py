"""Forward+backward cost of the core logit losses, against plain-torch baselines and cross-entropy.

Each loss of the library (``kd``, ``dkd``, ``dist``, ``pld``) is timed beside a baseline: the same
equations written the way the methods' public reference code writes them (softmax, masks, ``kl_div``;
for PLD, which has no public code, the direct sort / gather / reversed ``logcumsumexp`` form), and beside
``F.cross_entropy``. All run on the same logits in interleaved rounds, so machine noise hits them alike;
the figures are medians over the rounds, and the ratios are ratios of medians. Before timing, each
baseline's value is checked against the library's. Teacher logits carry no gradient (a frozen teacher).
The library's previous PLD implementation (``pld_previous`` below) is timed in the same rounds, so each
run records the current / previous PLD cost and both costs relative to cross-entropy on one machine.

    python benchmarks/losses.py                       # C in {10, 100, 1000}, batch 256, one thread
    python benchmarks/losses.py --classes 1000 --rounds 50 --output /tmp/losses.json

Writes ``benchmarks/results/losses.json`` by default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from graphspike_kd.benchmarks import provenance
from graphspike_kd.common.losses import dist_loss, dkd_loss, kd_loss, pld_loss

TEMPERATURE = {"kd": 4.0, "dkd": 4.0, "dist": 1.0, "pld": 1.0}  # each library default

LOSSES = {
    "kd": lambda s, t, y: kd_loss(s, t, temperature=TEMPERATURE["kd"]),
    "dkd": lambda s, t, y: dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=TEMPERATURE["dkd"]),
    "dist": lambda s, t, y: dist_loss(s, t, beta=1.0, gamma=1.0, temperature=TEMPERATURE["dist"]),
    "pld": lambda s, t, y: pld_loss(s, t, y, temperature=TEMPERATURE["pld"]),
}


# ------------------------------------------------------------------------------------------------------
# baselines: the equations as the reference implementations write them


def baseline_kd(s, t, y, temperature=TEMPERATURE["kd"]):
    """Hinton KD as in mdistiller's ``kd_loss``: log-softmax, softmax, ``kl_div``, T^2."""
    log_p_s = F.log_softmax(s / temperature, dim=1)
    p_t = F.softmax(t / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="none").sum(1).mean() * temperature**2


def baseline_dkd(s, t, y, alpha=1.0, beta=8.0, temperature=TEMPERATURE["dkd"]):
    """DKD as in mdistiller's ``dkd_loss``: boolean target / non-target masks, softmaxes, binary
    probabilities by masked sums, and the non-target softmax with the target logit pushed down by 1000."""
    target_mask = torch.zeros_like(s).scatter_(1, y[:, None], 1).bool()
    other_mask = torch.ones_like(s).scatter_(1, y[:, None], 0).bool()
    p_s = F.softmax(s / temperature, dim=1)
    p_t = F.softmax(t / temperature, dim=1)

    def binary(p):
        return torch.cat([(p * target_mask).sum(1, keepdim=True), (p * other_mask).sum(1, keepdim=True)], 1)

    b_s, b_t = binary(p_s), binary(p_t)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * temperature**2 / s.shape[0]
    q_t = F.softmax(t / temperature - 1000.0 * target_mask, dim=1)
    log_q_s = F.log_softmax(s / temperature - 1000.0 * target_mask, dim=1)
    nckd = F.kl_div(log_q_s, q_t, reduction="sum") * temperature**2 / s.shape[0]
    return alpha * tckd + beta * nckd


def baseline_dist(s, t, y, beta=1.0, gamma=1.0, temperature=TEMPERATURE["dist"]):
    """DIST as in its reference code: softmaxes, centred cosine similarity along rows and columns."""

    def pearson(a, b, eps=1e-8):
        a = a - a.mean(1, keepdim=True)
        b = b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    y_s = (s / temperature).softmax(dim=1)
    y_t = (t / temperature).softmax(dim=1)
    inter = 1 - pearson(y_s, y_t).mean()
    intra = 1 - pearson(y_s.transpose(0, 1), y_t.transpose(0, 1)).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def baseline_pld(s, t, y, temperature=TEMPERATURE["pld"]):
    """PLD written directly: the teacher-optimal permutation by a stable descending argsort (target
    first), gathered student logits and teacher weights, suffix log-sum-exps by a reversed logcumsumexp."""
    order = torch.argsort(t.scatter(1, y[:, None], float("inf")), dim=1, descending=True, stable=True)
    s_perm = s.gather(1, order)
    w = F.softmax(t / temperature, dim=1).gather(1, order)
    suffix_lse = torch.logcumsumexp(s_perm.flip(1), dim=1).flip(1)
    return (w * (suffix_lse - s_perm)).sum(1).mean()


BASELINES = {"kd": baseline_kd, "dkd": baseline_dkd, "dist": baseline_dist, "pld": baseline_pld}


# ------------------------------------------------------------------------------------------------------
# the library's earlier PLD implementation (before the packed-key sort, the in-function gather / scatter
# and the fused buffers), kept verbatim here so each run records new / previous on the same machine


def _previous_reverse_teacher_order(teacher_logits, target):
    key = teacher_logits.detach().scatter(1, target[:, None], float("inf"))
    if key.device.type != "cpu":
        return torch.argsort(key, dim=1, descending=True, stable=True).flip(1)
    values = key.numpy()
    order = np.argsort(values, axis=1)
    ranked = np.take_along_axis(values, order, axis=1)
    tied_rows = np.flatnonzero((ranked[:, 1:] == ranked[:, :-1]).any(axis=1))
    if tied_rows.size:
        c = values.shape[1]
        order[tied_rows] = c - 1 - np.argsort(values[tied_rows, ::-1], axis=1, kind="stable")
    return torch.from_numpy(order.astype(np.int64, copy=False))


class _PreviousPLDFromSortedLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s_rev, weights, wide):
        ctx.wide = wide
        if wide:
            prefix_lse = torch.logcumsumexp(s_rev, dim=1)
            choice = prefix_lse - s_rev
            ctx.save_for_backward(s_rev, prefix_lse, weights, choice)
        else:
            z = s_rev - s_rev.amax(dim=1, keepdim=True)
            exp_z = torch.exp(z)
            prefix = torch.cumsum(exp_z, dim=1)
            choice = torch.log(prefix).sub_(z)
            ctx.save_for_backward(exp_z, prefix, weights, choice)
        return (weights * choice).sum(dim=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        first, prefix, weights, choice = ctx.saved_tensors
        g = grad_out[:, None]
        grad_s = grad_w = None
        if ctx.needs_input_grad[0]:
            if ctx.wide:
                log_ratio = torch.log(weights) - prefix
                suffix_lse = torch.logcumsumexp(log_ratio.flip(1), dim=1).flip(1)
                grad_s = torch.exp(first + suffix_lse).sub_(weights).mul_(g)
            else:
                suffix = torch.cumsum((weights / prefix).flip(1), dim=1).flip(1)
                grad_s = (first * suffix).sub_(weights).mul_(g)
        if ctx.needs_input_grad[1]:
            grad_w = choice * g
        return grad_s, grad_w, None


def pld_previous(s, t, y, temperature=TEMPERATURE["pld"]):
    """The library's previous ``pld_loss`` (its validation call aside), for the new / previous ratio."""
    reverse_perm = _previous_reverse_teacher_order(t, y)
    s_rev = s.gather(1, reverse_perm)
    weights = torch.softmax(t / temperature, dim=1).gather(1, reverse_perm)
    span = float((s_rev.detach().amax(dim=1) - s_rev.detach().amin(dim=1)).max())
    per_sample = _PreviousPLDFromSortedLogits.apply(s_rev, weights, not span < 60.0)
    return per_sample.mean()


# ------------------------------------------------------------------------------------------------------


def _time_once(fn, s, t, y, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        s.grad = None
        fn(s, t, y).backward()
    return (time.perf_counter() - start) / inner


def measure(classes: int, batch: int, rounds: int, inner: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(batch, classes, generator=g) * 3).requires_grad_(True)
    t = torch.randn(batch, classes, generator=g) * 3
    y = torch.randint(0, classes, (batch,), generator=g)

    agreement = {}
    for name, fn in LOSSES.items():
        ours, ref = fn(s, t, y).item(), BASELINES[name](s, t, y).item()
        agreement[name] = abs(ours - ref) / max(abs(ref), 1e-12)
        if agreement[name] > 1e-4:
            raise RuntimeError(f"{name}: library value {ours} differs from the baseline's {ref}")
    previous = pld_previous(s, t, y).item()
    agreement["pld_previous"] = abs(LOSSES["pld"](s, t, y).item() - previous) / max(abs(previous), 1e-12)
    if agreement["pld_previous"] > 1e-4:
        raise RuntimeError(f"pld: library value differs from the previous implementation's {previous}")

    def ce(s, t, y):
        return F.cross_entropy(s, y)

    fns = {"cross_entropy": ce}
    for name in LOSSES:
        fns[name] = LOSSES[name]
        fns[f"{name}_baseline"] = BASELINES[name]
    fns["pld_previous"] = pld_previous
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
        "ratio_to_baseline": {n: round(med[n] / med[f"{n}_baseline"], 3) for n in LOSSES},
        "ratio_to_ce": {n: round(med[n] / med["cross_entropy"], 3) for n in LOSSES},
        "baseline_ratio_to_ce": {n: round(med[f"{n}_baseline"] / med["cross_entropy"], 3) for n in LOSSES},
        "relative_difference_to_baseline": {n: float(f"{v:.2e}") for n, v in agreement.items()},
        # the previous library PLD, timed in the same rounds
        "pld_previous_ratio_to_ce": round(med["pld_previous"] / med["cross_entropy"], 3),
        "pld_ratio_to_previous": round(med["pld"] / med["pld_previous"], 3),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=21, help="interleaved timing rounds (median taken)")
    parser.add_argument("--inner", type=int, default=5, help="forward+backward calls per timing sample")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noise)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "losses.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started = provenance.now()
    load_before = os.getloadavg()[0]
    rows = [measure(c, args.batch, args.rounds, args.inner) for c in args.classes]
    print(f"{'C':>6} {'CE (us)':>9} " + " ".join(f"{n + ' /base':>10} {n + ' xCE':>9}" for n in LOSSES)
          + f" {'pld /prev':>10} {'prev xCE':>9}")
    for r in rows:
        cells = " ".join(f"{r['ratio_to_baseline'][n]:>10.2f} {r['ratio_to_ce'][n]:>9.2f}" for n in LOSSES)
        print(f"{r['classes']:>6} {r['median_us']['cross_entropy']:>9.1f} {cells}"
              f" {r['pld_ratio_to_previous']:>10.2f} {r['pld_previous_ratio_to_ce']:>9.2f}")
    argv_used = sys.argv[1:] if argv is None else argv
    result = {
        "command": provenance.command_line(["benchmarks/losses.py", *argv_used]),
        "batch": args.batch,
        "rounds": args.rounds,
        "inner": args.inner,
        "threads": args.threads,
        # 1-minute load averages before and after: other processes on the machine slow every timed
        # function alike within a round, but a heavy load makes the small-C ratios noisy
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "results": rows,
    }
    result = provenance.write_json(args.output, result, command=result["command"], started=started,
                                   repo_dir=Path(__file__).resolve().parent)
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
