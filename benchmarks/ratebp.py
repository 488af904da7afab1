"""Peak training memory and step time of BPTT vs rate-BP on a spiking VGG, CIFAR-sized input.

    python benchmarks/ratebp.py --T 4 16 [--arch vgg11] [--batch 32] [--steps 2] [--threads 1]
                                [--backend torch|cpp] [--steps-per-call 4] [--repeats 1]
                                [--output benchmarks/results/ratebp.json] [--quiet]

Every (method, T) runs in a **fresh subprocess**: build the model, optimizer and a fixed random batch
(32 x 3 x 32 x 32), read the resident set size (``VmRSS``), run one warm-up step and ``--steps`` timed
training steps (zero_grad, loss, backward, SGD step), then read the process's peak resident set size
(``VmHWM``). ``peak_mem_mb`` = VmHWM - VmRSS before the first step: the largest amount of memory the
training step itself held resident at once (activations, saved tensors, gradients, optimizer state,
allocator slack), with the Python/torch baseline and the model removed. Why this is honest on CPU: torch's
CPU allocator returns large blocks to the OS (glibc serves them with mmap), so RSS tracks the live
tensors; a fresh process per configuration means no configuration inherits another's high-water mark;
and unlike a profiler's allocator count it also includes memory torch allocates outside its own
accounting (oneDNN scratch, autograd bookkeeping). ``step_s`` is the median of the timed steps.

Methods: ``bptt`` (backprop through time, the plain T-step SNN), ``ratebp`` (rate-BP with the lean spike
pass, one time step per call: memory flat in T), ``ratebp_chunked`` (rate-BP whose spike pass runs
``--steps-per-call`` steps per call: memory bounded by that many steps, convolutions on that many times
the batch) and ``ratebp_multistep`` (rate-BP with each layer run over the whole ``[T*N]`` batch, the
official ``rate_M``). ``--backend`` is the neurons' backend for every method (``torch``, the library
default, or ``cpp``, the native CPU kernel: BPTT then runs the native forward/backward and rate-BP the
native recording pass). The CPU is shared, so compare ratios measured in one run; ``--threads 1``
(default) avoids the thread-oversubscription stalls of a contended machine.

``--repeats R`` measures every configuration R times in **interleaved rounds** (round r runs each
(method, T) once, in the same order, before round r + 1 starts), so a slow spell of a shared machine
lands on every method of a round rather than on one method. The JSON then keeps every round
(``step_s_rounds`` / ``peak_mem_mb_rounds``, one list per T); ``step_s`` and ``peak_mem_mb`` are the
medians over rounds, and each speed-up over BPTT is the median of the per-round ratios (each ratio
taken between two processes that ran minutes apart at most), with the smallest and largest beside it.

``--breakdown FILE.json`` instead times the parts of one chunked rate-BP step at the largest ``--T`` in
this process: the spike pass (its convolutions, timed with forward hooks, with their multiply-accumulate
count and the resulting GFLOP/s; its average pools; the rest: BatchNorm, neurons, Python), the rate
pass's forward (with the loss) and the backward; medians over ``--steps`` steps after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("bptt", "ratebp", "ratebp_chunked", "ratebp_multistep")


def _provenance():
    """:mod:`graphspike_kd.benchmarks.provenance`, imported by the parent process only (a worker's
    memory baseline stays free of it)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from graphspike_kd.benchmarks import provenance

    return provenance


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line (Linux only)")


def _setup(args: argparse.Namespace, T: int) -> tuple:
    """The measured configuration: model, SGD optimizer and a fixed random batch (seeded)."""
    import torch

    from graphspike_kd.spiking.models import RATEBP_NEURON, get_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = get_model(args.arch, in_channels=3, num_classes=10, T=T,
                      neuron=dict(RATEBP_NEURON, backend=args.backend))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    return model, opt, x, y


def worker(args: argparse.Namespace) -> dict:
    from graphspike_kd.spiking import ratebp as rb

    model, opt, x, y = _setup(args, args.T_one)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if args.method == "bptt":
            out = rb.bptt_loss(model, x, y, args.T_one)
        else:
            per_call = {"ratebp": 1, "ratebp_chunked": args.steps_per_call, "ratebp_multistep": None}
            out = rb.ratebp_loss(model, x, y, args.T_one, steps_per_call=per_call[args.method])
        out["loss"].backward()
        opt.step()

    base_kb = _status_kb("VmRSS")
    times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        step()
        if i > 0:  # the first step is a warm-up (oneDNN primitive creation, first-touch page faults)
            times.append(time.perf_counter() - t0)
    peak_kb = _status_kb("VmHWM")
    return {"method": args.method, "T": args.T_one, "peak_mem_mb": (peak_kb - base_kb) / 1024.0,
            "step_s": statistics.median(times), "step_s_all": times}


def breakdown(args: argparse.Namespace) -> dict:
    """Where the time of one chunked rate-BP step goes (``--breakdown``); see the module docstring."""
    from torch import nn

    from graphspike_kd.spiking import ratebp as rb
    from graphspike_kd.spiking.models import SeqAvgPool

    T = max(args.T)
    model, opt, x, y = _setup(args, T)
    timed = {"conv": 0.0, "pool": 0.0}
    macs = [0]
    started: dict[int, float] = {}
    counting = [False]

    def pre(module: nn.Module, inputs: tuple) -> None:
        started[id(module)] = time.perf_counter()

    def post(kind: str):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            if not counting[0]:
                return
            timed[kind] += time.perf_counter() - started[id(module)]
            if kind == "conv":
                k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
                macs[0] += output.numel() * k
        return hook

    for m in model.modules():
        kind = "conv" if isinstance(m, nn.Conv2d) else "pool" if isinstance(m, SeqAvgPool) else None
        if kind is not None:
            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post(kind))
    parts: dict[str, list[float]] = {k: [] for k in ("spike_pass", "spike_conv", "spike_pool", "spike_rest",
                                                     "rate_forward", "backward", "step")}
    for i in range(args.steps + 1):
        opt.zero_grad(set_to_none=True)
        timed.update(conv=0.0, pool=0.0)
        macs[0] = 0
        t0 = time.perf_counter()
        counting[0] = True
        rb.spike_pass(model, x, T, steps_per_call=args.steps_per_call)
        counting[0] = False
        t1 = time.perf_counter()
        loss = rb.scale_grad(nn.functional.cross_entropy(rb.rate_pass(model, x), y), 1.0 / T)
        t2 = time.perf_counter()
        loss.backward()
        opt.step()
        t3 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        rest = t1 - t0 - timed["conv"] - timed["pool"]
        for key, value in (("spike_pass", t1 - t0), ("spike_conv", timed["conv"]),
                           ("spike_pool", timed["pool"]), ("spike_rest", rest), ("rate_forward", t2 - t1),
                           ("backward", t3 - t2), ("step", t3 - t0)):
            parts[key].append(value)
    med = {k: round(statistics.median(v), 4) for k, v in parts.items()}
    spike_macs = macs[0]
    gflops = 2 * spike_macs / med["spike_conv"] / 1e9
    out = {"arch": args.arch, "batch": args.batch, "T": T, "steps_per_call": args.steps_per_call,
           "backend": args.backend, "threads": args.threads, "steps": args.steps, "median_s": med,
           "all_s": {k: [round(v, 4) for v in vals] for k, vals in parts.items()},
           "spike_conv_macs": spike_macs, "spike_conv_gflops": round(gflops, 1),
           "command": _provenance().command_line(["benchmarks/ratebp.py", *args.cli_args])}
    print(f"{args.arch}, batch {args.batch}, T = {T}, chunks of {min(args.steps_per_call, T)} steps, neuron "
          f"backend {args.backend}, {args.threads} thread(s); medians of {args.steps} steps (s):")
    print(f"  spike pass {med['spike_pass']:.3f} = convolutions {med['spike_conv']:.3f} "
          f"({spike_macs / 1e9:.1f} G multiply-adds, {gflops:.0f} GFLOP/s) + average pools "
          f"{med['spike_pool']:.3f} + the rest (BatchNorm, neurons, Python) {med['spike_rest']:.3f}")
    print(f"  rate pass forward + loss {med['rate_forward']:.3f}, backward + SGD step {med['backward']:.3f}; "
          f"step {med['step']:.3f}")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--T", type=int, nargs="+", default=[4, 16], help="time steps to measure")
    parser.add_argument("--arch", default="vgg11", help="spiking model (graphspike_kd.spiking.models)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per worker")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--backend", default="torch", choices=("torch", "cpp"),
                        help="neuron backend of every method (default: torch, the library default)")
    parser.add_argument("--steps-per-call", type=int, default=4,
                        help="time steps per model call of ratebp_chunked's spike pass")
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved rounds over all configurations (medians reported)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "ratebp.json"))
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--breakdown", metavar="FILE.json",
                        help="time the parts of one chunked rate-BP step at the largest --T instead")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--T-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return {}
    if any(t < 1 for t in args.T):
        parser.error(f"--T values must be >= 1, got {args.T}")
    if args.steps_per_call < 1:
        parser.error(f"--steps-per-call must be >= 1, got {args.steps_per_call}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.breakdown:
        provenance = _provenance()
        args.cli_args = sys.argv[1:] if argv is None else list(argv)
        started = provenance.now()
        res = breakdown(args)
        return provenance.write_json(args.breakdown, res, command=res["command"], started=started,
                                     repo_dir=ROOT)

    from tqdm import tqdm

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(args.threads))
    cli_args = sys.argv[1:] if argv is None else list(argv)
    provenance = _provenance()
    started = provenance.now()
    results: dict = {"T": list(args.T), "arch": args.arch, "batch": args.batch, "input": [3, 32, 32],
                     "threads": args.threads, "steps": args.steps, "backend": args.backend,
                     "steps_per_call": args.steps_per_call, "repeats": args.repeats,
                     "command": provenance.command_line(["benchmarks/ratebp.py", *cli_args]),
                     "memory_measure": "peak RSS (VmHWM) minus RSS before the first step, fresh process "
                                       "per configuration"}
    nT = len(args.T)
    for m in args.methods:
        results[m] = {"peak_mem_mb": [], "step_s": [], "peak_mem_mb_rounds": [[] for _ in range(nT)],
                      "step_s_rounds": [[] for _ in range(nT)]}
    jobs = [(m, i, t) for _ in range(args.repeats) for i, t in enumerate(args.T) for m in args.methods]
    for m, i, t in tqdm(jobs, desc="ratebp benchmark", disable=args.quiet):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--method", m, "--T-one", str(t),
               "--arch", args.arch, "--batch", str(args.batch), "--steps", str(args.steps),
               "--threads", str(args.threads), "--backend", args.backend,
               "--steps-per-call", str(args.steps_per_call)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"worker {m} T={t} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        results[m]["peak_mem_mb_rounds"][i].append(round(rec["peak_mem_mb"], 1))
        results[m]["step_s_rounds"][i].append(round(rec["step_s"], 3))
    for m in args.methods:
        res = results[m]
        res["peak_mem_mb"] = [round(statistics.median(v), 1) for v in res["peak_mem_mb_rounds"]]
        res["step_s"] = [round(statistics.median(v), 3) for v in res["step_s_rounds"]]
        if args.repeats == 1:  # one round: the lists above say it all
            del res["peak_mem_mb_rounds"], res["step_s_rounds"]

    lines = [f"{args.arch}, batch {args.batch}, 3x32x32, {args.threads} thread(s), neuron backend "
             f"{args.backend}; peak = VmHWM - RSS before training (fresh process each)"
             + (f"; medians of {args.repeats} interleaved rounds" if args.repeats > 1 else ""),
             f"{'method':<18}{'T':>4}{'peak MiB':>11}{'step s':>9}"]
    for m in args.methods:
        for i, t in enumerate(args.T):
            lines.append(f"{m:<18}{t:>4}{results[m]['peak_mem_mb'][i]:>11.1f}{results[m]['step_s'][i]:>9.3f}")
    lo, hi = 0, len(args.T) - 1
    ratios: dict = {}
    if len(args.T) >= 2:
        for m in args.methods:
            mem, sec = results[m]["peak_mem_mb"], results[m]["step_s"]
            ratios[m] = {"mem_ratio": round(mem[hi] / mem[lo], 3), "time_ratio": round(sec[hi] / sec[lo], 3)}
            lines.append(f"{m}: peak memory T={args.T[hi]} / T={args.T[lo]} = {ratios[m]['mem_ratio']:.2f}, "
                         f"step time ratio {ratios[m]['time_ratio']:.2f}")
    if "bptt" in results:
        for m in args.methods:
            if m == "bptt":
                continue
            key = "speedup_ratebp_vs_bptt_at_max_T" if m == "ratebp" else f"speedup_{m}_vs_bptt_at_max_T"
            if args.repeats == 1:
                speedup = results["bptt"]["step_s"][hi] / results[m]["step_s"][hi]
                lines.append(f"{m} step is {speedup:.2f}x faster than BPTT at T={args.T[hi]}")
            else:  # per-round ratios: both processes of a ratio ran in the same round
                per_round = [b / r for b, r in zip(results["bptt"]["step_s_rounds"][hi],
                                                   results[m]["step_s_rounds"][hi], strict=True)]
                speedup = statistics.median(per_round)
                ratios[key + "_rounds"] = [round(v, 3) for v in per_round]
                lines.append(f"{m} step is {speedup:.2f}x faster than BPTT at T={args.T[hi]} (median of "
                             f"{args.repeats} rounds; range {min(per_round):.2f}-{max(per_round):.2f}x)")
            ratios[key] = round(speedup, 3)
    results["ratios"] = ratios
    print("\n".join(lines))
    return provenance.write_json(args.output, results, command=results["command"], started=started,
                                 repo_dir=ROOT)


if __name__ == "__main__":
    main()
