"""Multi-step LIF forward + backward: graphspike_kd against spikingjelly 2.0 and snntorch, ratios in one run.

CPU section (always): for every T and N, median milliseconds per forward + backward of one multi-step LIF
layer (tau = 2, decay_input, threshold 1, Sigmoid(alpha = 4) surrogate; snntorch: Leaky(beta = 0.5) with
its sigmoid(slope = 4)), the gradient of sum(spikes * w) fed straight into the spikes so that no loss
kernel is timed. Implementations are run round-robin (one call each per round, starting point rotated)
so that a noisy, shared machine slows them alike; both wall-clock and thread-CPU medians are recorded.

- ``spikingjelly_eager``: ``spikingjelly.activation_based.neuron.LIFNode(step_mode="m")``
- ``spikingjelly_compile``: the same under ``torch.compile`` (compile time reported separately)
- ``snntorch``: ``snntorch.Leaky`` looped over T
- ``ours_torch``: ``graphspike_kd.spiking.neurons.LIF(backend="torch")`` (the default eager path)
- ``ours_cpp``: ``LIF(backend="cpp")`` (native blocked C++ loop, built at first use, run as the C++
  operator ``graphspike_kd::neuron_forward.cpu`` with a C++ autograd kernel)
- ``ours_cpp_compile``: ``torch.compile(LIF(backend="cpp"), fullgraph=True)`` (that operator as one graph
  node; the same kernels plus torch.compile's per-call runtime)

Also recorded: how many [T, N] tensors each implementation's autograd graph saves (bytes of saved tensors
/ (4 T N), input excluded), and in how many of the T N places our spikes differ from spikingjelly's (a
membrane within one rounding step of the threshold can fire in one and not the other: our torch path
charges with ``torch.lerp``, spikingjelly with ``v + (x - v) / tau``).

GPU section (where ``torch.cuda.is_available()``): ``LIF(backend="cupy")`` against ``LIF(backend="torch")``
and spikingjelly's CUDA implementations (``SJ_LIF_CUDA_IMPLEMENTATION`` = cuda / triton / torch, each in
a subprocess because spikingjelly reads the variable at import), in float32 and float16, with achieved
bandwidth = minimal traffic (forward reads x, writes spikes and h; backward reads grad_spikes and h,
writes grad_x: 6 tensor passes) / time, against the device's measured copy bandwidth.

    python benchmarks/neurons.py                      # full run, writes benchmarks/results/neurons.json
    python benchmarks/neurons.py --T 16 --N 262144 --reps 5 --no-compile --quiet
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graphspike_kd.benchmarks import provenance  # noqa: E402
from graphspike_kd.spiking.neurons import LIF  # noqa: E402
from graphspike_kd.spiking.surrogate import Sigmoid  # noqa: E402

TAU, ALPHA = 2.0, 4.0


# --------------------------------------------------------------------------------------------- runners
def _sj_node(v_reset: float | None, device: str = "cpu"):
    from spikingjelly.activation_based import neuron, surrogate

    return neuron.LIFNode(tau=TAU, decay_input=True, v_threshold=1.0, v_reset=v_reset,
                          surrogate_function=surrogate.Sigmoid(alpha=ALPHA), step_mode="m").to(device)


def make_runners(v_reset: float | None, compile_sj: bool) -> dict[str, Callable]:
    """name -> f(x) returning spikes [T, N] with a graph (state reset inside)."""
    from spikingjelly.activation_based import functional as sj_functional

    runners: dict[str, Callable] = {}
    node = _sj_node(v_reset)

    def sj_eager(x):
        sj_functional.reset_net(node)
        return node(x)

    runners["spikingjelly_eager"] = sj_eager
    if compile_sj:
        node_c = _sj_node(v_reset)
        compiled = torch.compile(node_c)

        def sj_compile(x):
            sj_functional.reset_net(node_c)
            return compiled(x)

        runners["spikingjelly_compile"] = sj_compile

    import snntorch
    from snntorch import surrogate as sn_surrogate

    leaky = snntorch.Leaky(beta=1 - 1 / TAU, threshold=1.0, spike_grad=sn_surrogate.sigmoid(slope=ALPHA),
                           reset_mechanism="subtract" if v_reset is None else "zero")

    def sn(x):
        mem = torch.zeros_like(x[0])
        spikes = []
        for xt in x:
            s, mem = leaky(xt, mem)
            spikes.append(s)
        return torch.stack(spikes)

    runners["snntorch"] = sn
    ours = LIF(tau=TAU, v_reset=v_reset, surrogate=Sigmoid(ALPHA), backend="torch")
    runners["ours_torch"] = ours
    ours_cpp = LIF(tau=TAU, v_reset=v_reset, surrogate=Sigmoid(ALPHA), backend="cpp")
    runners["ours_cpp"] = ours_cpp
    if compile_sj:
        runners["ours_cpp_compile"] = torch.compile(
            LIF(tau=TAU, v_reset=v_reset, surrogate=Sigmoid(ALPHA), backend="cpp"), fullgraph=True)
    return runners


def fwd_bwd(run: Callable, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    x.grad = None
    s = run(x)
    s.backward(w)
    return s


def saved_tn(run: Callable, x: torch.Tensor) -> float:
    """[T, N]-tensor equivalents saved by autograd for backward (distinct storages, x excluded)."""
    storages: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr():
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        s = run(x)
    del s
    return round(sum(storages.values()) / (x.numel() * x.element_size()), 2)


# ------------------------------------------------------------------------------------------------- CPU
def bench_cpu(args: argparse.Namespace, progress) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for T in args.T:
        for N in args.N:
            x = (torch.randn(T, N, generator=gen) * 0.8 + 0.5).requires_grad_()
            w = torch.randn(T, N, generator=gen)
            runners = make_runners(None if args.reset == "soft" else 0.0, not args.no_compile)
            row: dict = {"T": T, "N": N, "compile_s": {}, "saved_TN": {}}
            ref_spikes, ref_grad = None, None
            for name, run in runners.items():  # warm-up (and compile), correctness, memory
                t0 = time.perf_counter()
                for _ in range(args.warmup):
                    s = fwd_bwd(run, x, w)
                if name.endswith("compile"):
                    row["compile_s"][name] = round(time.perf_counter() - t0, 1)
                row["saved_TN"][name] = saved_tn(run, x)
                if name == "spikingjelly_eager":
                    ref_spikes, ref_grad = s.detach().clone(), x.grad.clone()
                elif name.startswith("ours"):
                    differing = int((s != ref_spikes).sum())
                    row.setdefault("spikes_differing_from_spikingjelly", {})[name] = differing
                    diff = float((x.grad - ref_grad).abs().max())
                    row.setdefault("max_grad_diff_spikingjelly", {})[name] = diff
            names = list(runners)
            wall: dict[str, list[float]] = {n: [] for n in names}
            cpu: dict[str, list[float]] = {n: [] for n in names}
            for rep in range(args.reps):
                for j in range(len(names)):
                    name = names[(rep + j) % len(names)]
                    t0, c0 = time.perf_counter(), time.thread_time()
                    fwd_bwd(runners[name], x, w)
                    cpu[name].append(time.thread_time() - c0)
                    wall[name].append(time.perf_counter() - t0)
            row["wall_ms"] = {n: round(statistics.median(v) * 1e3, 2) for n, v in wall.items()}
            row["cpu_ms"] = {n: round(statistics.median(v) * 1e3, 2) for n, v in cpu.items()}
            for kind in ("wall_ms", "cpu_ms"):
                ms = row[kind]
                row[f"speedup_{kind}"] = {
                    "ours_torch_vs_spikingjelly_eager": round(ms["spikingjelly_eager"] / ms["ours_torch"], 2),
                    "ours_torch_vs_snntorch": round(ms["snntorch"] / ms["ours_torch"], 2),
                    "ours_cpp_vs_spikingjelly_eager": round(ms["spikingjelly_eager"] / ms["ours_cpp"], 2),
                }
                if "spikingjelly_compile" in ms:
                    row[f"speedup_{kind}"]["ours_cpp_vs_spikingjelly_compile"] = round(
                        ms["spikingjelly_compile"] / ms["ours_cpp"], 2)
                    row[f"speedup_{kind}"]["ours_torch_vs_spikingjelly_compile"] = round(
                        ms["spikingjelly_compile"] / ms["ours_torch"], 2)
                    row[f"speedup_{kind}"]["ours_cpp_compile_vs_ours_cpp"] = round(
                        ms["ours_cpp"] / ms["ours_cpp_compile"], 2)
                    row[f"speedup_{kind}"]["ours_cpp_compile_vs_spikingjelly_compile"] = round(
                        ms["spikingjelly_compile"] / ms["ours_cpp_compile"], 2)
            rows.append(row)
            progress(f"T={T} N={N}: " + ", ".join(f"{n} {v}" for n, v in row["wall_ms"].items()))
            torch._dynamo.reset()
    return rows


# ------------------------------------------------------------------------------------------------- GPU
def _cuda_time(fn: Callable, reps: int) -> float:
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _copy_bandwidth_gbs() -> float:
    a = torch.empty(2**28, dtype=torch.uint8, device="cuda")  # 256 MiB
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    ms = _cuda_time(lambda: b.copy_(a), 20)
    return 2 * a.numel() / (ms * 1e-3) / 1e9


def _gpu_cases(args):
    for dtype in (torch.float32, torch.float16):
        for T in args.T:
            for N in args.N_gpu:
                yield dtype, T, N


def sj_gpu_worker(impl: str, args: argparse.Namespace) -> list[dict]:
    """Runs in a subprocess with SJ_LIF_CUDA_IMPLEMENTATION=impl."""
    from spikingjelly.activation_based import functional as sj_functional

    rows = []
    for dtype, T, N in _gpu_cases(args):
        node = _sj_node(None if args.reset == "soft" else 0.0, "cuda")
        x = (torch.randn(T, N, device="cuda") * 0.8 + 0.5).to(dtype).requires_grad_()
        w = torch.randn(T, N, device="cuda", dtype=dtype)

        def run(node=node, x=x, w=w):
            sj_functional.reset_net(node)
            x.grad = None
            node(x).backward(w)

        try:
            for _ in range(args.warmup + 1):
                run()
            ms = _cuda_time(run, args.reps)
            rows.append({"dtype": str(dtype), "T": T, "N": N, "ms": round(ms, 4)})
        except Exception as exc:  # recorded, not hidden: the row says why this implementation has no number
            rows.append({"dtype": str(dtype), "T": T, "N": N, "error": f"{type(exc).__name__}: {exc}"})
    return rows


def bench_gpu(args: argparse.Namespace, progress) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    from graphspike_kd.spiking.kernels import cupy_status

    result: dict = {"device": torch.cuda.get_device_name(0),
                    "copy_bandwidth_GBs": round(_copy_bandwidth_gbs(), 1)}
    cupy_ok, cupy_why = cupy_status()
    cupy_reason = None if cupy_ok else cupy_why
    result["cupy_status"] = "ok" if cupy_reason is None else cupy_reason
    backends = ["torch"] + (["cupy"] if cupy_reason is None else [])
    rows = []
    for dtype, T, N in _gpu_cases(args):
        x = (torch.randn(T, N, device="cuda") * 0.8 + 0.5).to(dtype).requires_grad_()
        w = torch.randn(T, N, device="cuda", dtype=dtype)
        row = {"dtype": str(dtype), "T": T, "N": N, "ms": {}, "GBs": {}}
        outs = {}
        for backend in backends:
            lif = LIF(tau=TAU, v_reset=None if args.reset == "soft" else 0.0, surrogate=Sigmoid(ALPHA),
                      backend=backend)

            def run(lif=lif, x=x, w=w):
                x.grad = None
                s = lif(x)
                s.backward(w)
                return s

            for _ in range(args.warmup):
                run()
            outs[backend] = (run().detach(), x.grad.clone())
            ms = _cuda_time(run, args.reps)
            row["ms"][f"ours_{backend}"] = round(ms, 4)
            row["GBs"][f"ours_{backend}"] = round(6 * T * N * x.element_size() / (ms * 1e-3) / 1e9, 1)
        if "cupy" in outs:
            row["cupy_spikes_equal_torch"] = bool(torch.equal(outs["cupy"][0], outs["torch"][0]))
            diff = (outs["cupy"][1].float() - outs["torch"][1].float()).abs().max()
            row["cupy_max_grad_diff"] = float(diff)
        rows.append(row)
        progress(f"GPU {dtype} T={T} N={N}: {row['ms']}")
    for impl in ("cuda", "triton", "torch"):
        env = {**os.environ, "SJ_LIF_CUDA_IMPLEMENTATION": impl}
        cmd = [sys.executable, __file__, "--sj-gpu-worker", impl, "--reps", str(args.reps),
               "--warmup", str(args.warmup), "--reset", args.reset, "--T", *map(str, args.T),
               "--N-gpu", *map(str, args.N_gpu)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.gpu_timeout)
        if proc.returncode != 0:
            result[f"spikingjelly_{impl}_error"] = proc.stderr.strip()[-2000:]
            continue
        sj_rows = json.loads(proc.stdout.strip().splitlines()[-1])
        for row, sj_row in zip(rows, sj_rows, strict=True):
            if "ms" in sj_row:
                row["ms"][f"spikingjelly_{impl}"] = sj_row["ms"]
                nbytes = 6 * row["T"] * row["N"] * (2 if "16" in row["dtype"] else 4)
                row["GBs"][f"spikingjelly_{impl}"] = round(nbytes / (sj_row["ms"] * 1e-3) / 1e9, 1)
            else:
                row.setdefault("errors", {})[f"spikingjelly_{impl}"] = sj_row["error"]
    for row in rows:
        row["fraction_of_copy_bandwidth"] = {k: round(v / result["copy_bandwidth_GBs"], 3)
                                             for k, v in row["GBs"].items()}
    result["rows"] = rows
    return result


# ------------------------------------------------------------------------------------------------ main
def print_table(rows: list[dict]) -> None:
    names = list(rows[0]["wall_ms"])
    print("\nCPU, median ms per forward+backward (wall | thread-CPU), threads =", torch.get_num_threads())
    print(f"{'T':>4} {'N':>8}  " + "  ".join(f"{n:>22}" for n in names))
    for r in rows:
        cells = [f"{r['wall_ms'][n]:>10.2f} | {r['cpu_ms'][n]:>9.2f}" for n in names]
        print(f"{r['T']:>4} {r['N']:>8}  " + "  ".join(cells))
    print("\nspeed-ups (wall; thread-CPU in brackets):")
    for r in rows:
        parts = [f"{k} {v} ({r['speedup_cpu_ms'][k]})" for k, v in r["speedup_wall_ms"].items()]
        print(f"  T={r['T']} N={r['N']}: " + "; ".join(parts))
    print("\nsaved [T,N] tensors:", rows[0]["saved_TN"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--N", type=int, nargs="+", default=[2**16, 2**18])
    p.add_argument("--N-gpu", type=int, nargs="+", default=[2**20, 2**24], dest="N_gpu")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed calls per runner before timing, >= 1 (the first also compiles and is the "
                   "one checked against spikingjelly)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for the CPU section")
    p.add_argument("--reset", choices=["hard", "soft"], default="hard",
                   help="hard (v_reset=0, spikingjelly's default) or soft")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile runners")
    p.add_argument("--skip-cpu", action="store_true")
    p.add_argument("--skip-gpu", action="store_true")
    p.add_argument("--gpu-timeout", type=int, default=300)
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "neurons.json"))
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--sj-gpu-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1 or args.reps < 1:
        p.error(f"--warmup and --reps must be >= 1, got {args.warmup} and {args.reps}")

    if args.sj_gpu_worker:
        print(json.dumps(sj_gpu_worker(args.sj_gpu_worker, args)))
        return 0

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    started = provenance.now()
    result: dict = {
        "command": provenance.command_line(
            ["benchmarks/neurons.py", *(sys.argv[1:] if argv is None else argv)]),
        "load_average_start": os.getloadavg(),
        "config": {"tau": TAU, "surrogate": f"sigmoid(alpha={ALPHA})", "reset": args.reset,
                   "threads": args.threads, "reps": args.reps, "warmup": args.warmup},
    }
    if not args.skip_cpu:
        result["cpu"] = bench_cpu(args, progress)
        if not args.quiet:
            print_table(result["cpu"])
    if not args.skip_gpu:
        result["gpu"] = bench_gpu(args, progress)
        if not args.quiet:
            print("\nGPU:", json.dumps(result["gpu"], indent=1))
    result["load_average_end"] = os.getloadavg()
    provenance.write_json(args.output, result, command=result["command"], started=started, indent=1,
                          repo_dir=ROOT)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
