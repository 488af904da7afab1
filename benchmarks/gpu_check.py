"""One-shot GPU check of the CuPy neuron kernels: the gpu-marked tests, then a kernel micro-benchmark.

Run from the repository root on a machine with a CUDA device and the ``gpu`` extra (cupy-cuda12x):

    python benchmarks/gpu_check.py            # tests + benchmark, about 3-5 minutes on an H100
    python benchmarks/gpu_check.py --skip-tests --quick

Writes ``benchmarks/results/gpu_check.json`` (environment, test summary, timings), the pytest log
``benchmarks/results/gpu_check_tests.txt`` and prints a table. Exit status 1 if CuPy cannot run, a test
fails or a gpu test is skipped (a skip on a GPU machine means the check did not happen).

Benchmark: multi-step LIF (soft reset, sigmoid surrogate, decay_input, k = 0.5) forward + backward over
``[T, N]`` for T in {4, 16, 64}, N in {2^16, 2^18, 2^20}, fp32 and fp16:

- ``cupy_ms``: our two kernels called through the custom ops (forward then backward), median of CUDA-event
  timings; ``reference_ms``: an eager torch step loop with autograd through time (the textbook
  implementation, one surrogate autograd Function per step), same inputs and upstream gradient.
- ``gbps``: minimum traffic of forward + backward divided by ``cupy_ms``: forward reads x, writes spikes and
  the fp32 h; backward reads grad_spikes and h, writes grad_x (fp32: 24 bytes per neuron-step, fp16: 16).
  Compared with the card's nominal peak and with a measured device-to-device copy.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphspike_kd.benchmarks import provenance  # noqa: E402
from graphspike_kd.spiking import functional  # noqa: E402
from graphspike_kd.spiking.kernels import cupy_status  # noqa: E402
from graphspike_kd.spiking.kernels import ops as kernel_ops  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

#: Nominal HBM bandwidth in GB/s by device-name fragment (vendor data sheets).
NOMINAL_PEAK_GBPS = {
    "H200": 4800.0,
    "H100 SXM": 3350.0,
    "H100 80GB HBM3": 3350.0,
    "H100 PCIe": 2000.0,
    "H100 NVL": 3900.0,
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100-SXM4-40GB": 1555.0,
    "A100-PCIE-40GB": 1555.0,
    "L40S": 864.0,
    "RTX 4090": 1008.0,
}


def nominal_peak(name: str) -> float | None:
    for fragment, gbps in NOMINAL_PEAK_GBPS.items():
        if fragment in name:
            return gbps
    return 3350.0 if "H100" in name else None


class _SigmoidSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, over, alpha):
        ctx.save_for_backward(over)
        ctx.alpha = alpha
        return (over >= 0).to(over.dtype)

    @staticmethod
    def backward(ctx, grad):
        (over,) = ctx.saved_tensors
        g = torch.sigmoid(ctx.alpha * over)
        return grad * ctx.alpha * g * (1 - g), None


def reference_step_loop(x_seq, v_init, k, v_threshold=1.0, alpha=4.0):
    """Eager LIF loop (decay_input, soft reset, attached reset), autograd through time."""
    v = v_init
    spikes = []
    for x in x_seq.unbind(0):
        h = v + k * (x - v)
        s = _SigmoidSpike.apply(h - v_threshold, alpha)
        v = h - v_threshold * s
        spikes.append(s)
    return torch.stack(spikes), v


def cuda_time_ms(fn, *, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gbps(device: torch.device) -> float:
    src = torch.empty(1 << 28, dtype=torch.uint8, device=device)  # 256 MiB
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), warmup=3, iters=20)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def run_tests(quiet: bool) -> dict:
    log = RESULTS / "gpu_check_tests.txt"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-rs", "-q", "-p", "no:cacheprovider",
           "tests/spiking/test_kernels_gpu.py", "tests/spiking/test_kernels_host.py",
           "tests/spiking/test_kernels_api.py", "tests/spiking/test_kernels_nvcc.py"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    provenance.atomic_write_text(log, f"$ {' '.join(cmd)}\n\n{proc.stdout}\n{proc.stderr}")
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    found = re.findall(r"(\d+) (passed|failed|skipped|error|errors)", summary)
    counts = {key: int(num) for num, key in found}
    if not quiet:
        print(f"gpu tests: {summary} ({wall:.0f} s), log in {log.relative_to(ROOT)}")
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "summary": summary,
            "counts": counts, "wall_s": round(wall, 1)}


def measure(device: torch.device, dtype: torch.dtype, steps: int, n: int, iters: int,
            gen: torch.Generator) -> dict:
    elem = torch.finfo(dtype).bits // 8
    bytes_per_step = (elem + elem + 4) + (elem + 4 + elem)
    x = torch.randn(steps, n, device=device, generator=gen, dtype=torch.float32).add_(0.7).to(dtype)
    v0 = torch.zeros(n, device=device, dtype=dtype)
    grad_s = torch.randn(steps, n, device=device, generator=gen, dtype=torch.float32).to(dtype)
    grad_v = torch.zeros(n, device=device, dtype=dtype)
    k = torch.tensor(0.5, device=device)
    opts = (1.0, None, True, False, "sigmoid", 4.0)
    xr = x.clone().requires_grad_(True)

    def kernels_only():
        _, _, h = kernel_ops.cupy_forward(x, v0, k, *opts, True)
        kernel_ops.cupy_backward(grad_s, grad_v, h, x, v0, k, *opts, False)

    def ours_autograd():
        spikes, _ = functional.neuron_multistep_cupy(
            xr, v0, k, v_threshold=1.0, v_reset=None, decay_input=True, detach_reset=False,
            surrogate_name="sigmoid", alpha=4.0)
        spikes.backward(grad_s)

    def reference():
        spikes, _ = reference_step_loop(xr, v0, k.to(dtype))
        spikes.backward(grad_s)

    cupy_ms = cuda_time_ms(kernels_only, warmup=3, iters=iters)
    autograd_ms = cuda_time_ms(ours_autograd, warmup=3, iters=iters)
    ref_ms = cuda_time_ms(reference, warmup=2, iters=max(3, iters // 3))
    gbps = bytes_per_step * steps * n / (cupy_ms * 1e-3) / 1e9
    return {"dtype": str(dtype).replace("torch.", ""), "T": steps, "N": n,
            "cupy_kernels_ms": round(cupy_ms, 4), "cupy_autograd_ms": round(autograd_ms, 4),
            "reference_ms": round(ref_ms, 4), "speedup_vs_reference": round(ref_ms / autograd_ms, 2),
            "bytes_per_neuron_step": bytes_per_step, "gbps": round(gbps, 1)}


def benchmark(device: torch.device, quick: bool, quiet: bool) -> list[dict]:
    steps_list = (4, 16) if quick else (4, 16, 64)
    sizes = (1 << 16, 1 << 20) if quick else (1 << 16, 1 << 18, 1 << 20)
    iters = 10 if quick else 30
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for dtype in (torch.float32, torch.float16):
        for steps in steps_list:
            for n in sizes:
                row = measure(device, dtype, steps, n, iters, gen)
                rows.append(row)
                if not quiet:
                    print(f"{row['dtype']:>8} T={steps:<3d} N=2^{int(math.log2(n)):<3d} "
                          f"kernels {row['cupy_kernels_ms']:8.3f} ms  "
                          f"autograd {row['cupy_autograd_ms']:8.3f} ms  "
                          f"reference {row['reference_ms']:9.3f} ms  x{row['speedup_vs_reference']:<7.1f} "
                          f"{row['gbps']:8.1f} GB/s")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-tests", action="store_true", help="only run the benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and iterations")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--output", type=Path, default=RESULTS / "gpu_check.json")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = provenance.now()
    command = provenance.command_line(["benchmarks/gpu_check.py", *sys.argv[1:]])

    ok, reason = cupy_status()
    report: dict = {"command": command, "cupy_status": [ok, reason], "torch_cuda": torch.version.cuda}
    if not ok or not torch.cuda.is_available():
        report["error"] = f"cannot run the GPU check: {reason}"
        provenance.write_json(args.output, report, command=command, started=started, repo_dir=ROOT)
        print(report["error"], file=sys.stderr)
        return 1
    import cupy

    device = torch.device("cuda", torch.cuda.current_device())
    name = torch.cuda.get_device_name(device)
    report.update({"cupy": cupy.__version__, "device": name,
                   "capability": list(torch.cuda.get_device_capability(device))})
    if not args.quiet:
        print(f"device: {name}; {reason}")

    failed = False
    if not args.skip_tests:
        report["tests"] = run_tests(args.quiet)
        counts = report["tests"]["counts"]
        failed = (report["tests"]["returncode"] != 0 or counts.get("skipped", 0) > 0
                  or not counts.get("passed"))

    copy_gbps = copy_bandwidth_gbps(device)
    peak = nominal_peak(name)
    rows = benchmark(device, args.quick, args.quiet)
    for row in rows:
        row["fraction_of_copy"] = round(row["gbps"] / copy_gbps, 3)
        row["fraction_of_nominal_peak"] = None if peak is None else round(row["gbps"] / peak, 3)
    report.update({"copy_gbps": round(copy_gbps, 1), "nominal_peak_gbps": peak, "benchmark": rows})
    provenance.write_json(args.output, report, command=command, started=started, repo_dir=ROOT)
    if not args.quiet:
        best = max(rows, key=lambda r: r["gbps"])
        print(f"measured copy {copy_gbps:.0f} GB/s, nominal peak {peak} GB/s; best kernels "
              f"{best['gbps']:.0f} GB/s ({best['dtype']}, T={best['T']}, N={best['N']}); "
              f"written to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
