"""The kernels' per-neuron arithmetic, compiled for the host, against a step-by-step torch autograd loop.

``host_harness.cpp`` includes the same ``neuron_math.cuh`` the CUDA kernels use and runs the same forward
and backward recursions over arrays (g++, once per session, loaded with ctypes). A launcher built on it
also drives the ``torch.library`` ops on CPU tensors, which tests their autograd registration, fake
kernels and ``torch.compile`` tracing without a GPU.

The torch reference in this file is written independently of the package: one autograd step per time
step, Heaviside forward and the surrogate derivative backward.
"""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from graphspike_kd.spiking import functional
from graphspike_kd.spiking.kernels import ops
from graphspike_kd.spiking.kernels.sources import HOST_HARNESS_FILE, KERNEL_DIR, SURROGATES, KernelConfig
from graphspike_kd.spiking.torch_loop import make_config

SURROGATE_NAMES = sorted(SURROGATES)


# ----------------------------------------------------------------------------------------------------
# Independent torch reference
# ----------------------------------------------------------------------------------------------------
def surrogate_derivative(x: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
    if name == "sigmoid":
        g = torch.sigmoid(alpha * x)
        return alpha * g * (1 - g)
    if name == "atan":
        return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)
    if name == "rectangle":
        return alpha * (x.abs() < 1 / (2 * alpha)).to(x.dtype)
    if name == "triangle":
        return alpha**2 * torch.clamp(1 / alpha - x.abs(), min=0)
    if name == "fast_sigmoid":
        return 1 / (1 + alpha * x.abs()) ** 2
    raise AssertionError(name)


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, over, name, alpha):
        ctx.save_for_backward(over)
        ctx.name, ctx.alpha = name, alpha
        return (over >= 0).to(over.dtype)

    @staticmethod
    def backward(ctx, grad):
        (over,) = ctx.saved_tensors
        return grad * surrogate_derivative(over, ctx.name, ctx.alpha), None, None


def reference_multistep(x_seq, v_init, decay, *, v_threshold, v_reset, decay_input, detach_reset,
                        surrogate_name, alpha):
    """Step-by-step autograd loop of the shared neuron contract."""
    v_r = 0.0 if v_reset is None else v_reset
    v = v_init
    spikes = []
    for x in x_seq.unbind(0):
        h = v + decay * (x - (v - v_r)) if decay_input else v - decay * (v - v_r) + x
        s = _Spike.apply(h - v_threshold, surrogate_name, alpha)
        s_reset = s.detach() if detach_reset else s
        v = h - v_threshold * s_reset if v_reset is None else h * (1 - s_reset) + v_reset * s_reset
        spikes.append(s)
    return torch.stack(spikes), v


def make_case(T, shape, dtype, *, seed, device="cpu"):
    """Inputs that fire at moderate rates and put many h near the threshold."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((T, *shape), generator=g, dtype=torch.float64) * 0.9 + 0.7).to(dtype)
    v0 = (torch.rand(shape, generator=g, dtype=torch.float64) - 0.5).to(dtype)
    grad_s = torch.randn((T, *shape), generator=g, dtype=torch.float64).to(dtype)
    grad_v = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return x.to(device), v0.to(device), grad_s.to(device), grad_v.to(device)


def reference_grads(x, v0, k, grad_s, grad_v, **opts):
    x = x.detach().clone().requires_grad_(True)
    v0 = v0.detach().clone().requires_grad_(True)
    k = torch.tensor(float(k), dtype=x.dtype, device=x.device, requires_grad=True)
    spikes, v_last = reference_multistep(x, v0, k, **opts)
    ((spikes * grad_s).sum() + (v_last * grad_v).sum()).backward()
    return spikes.detach(), v_last.detach(), x.grad, v0.grad, k.grad


# ----------------------------------------------------------------------------------------------------
# Host build of the kernel arithmetic
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def host_lib(tmp_path_factory) -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++ / c++ / clang++) on PATH to build the host kernel harness")
    out = tmp_path_factory.mktemp("gskd_host") / "libgskd_host.so"
    cmd = [compiler, "-std=c++17", "-O0", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-Werror",
           "-shared", "-fPIC", f"-I{KERNEL_DIR}", str(HOST_HARNESS_FILE), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    lib = ctypes.CDLL(str(out))
    for suffix, ctype in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        ptr, ll, i = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int
        fwd = getattr(lib, f"gskd_host_forward_{suffix}")
        fwd.argtypes = [ptr] * 5 + [ll, ll, ctype, ctype, ctype, i, i]
        fwd.restype = i
        bwd = getattr(lib, f"gskd_host_backward_{suffix}")
        bwd.argtypes = [ptr] * 8 + [ll, ll, ctype, ctype, ctype, ctype, i, i, i, i, i]
        bwd.restype = i
    return lib


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _p(t: torch.Tensor | None) -> ctypes.c_void_p:
    if t is None:
        return ctypes.c_void_p(0)
    assert t.device.type == "cpu" and t.is_contiguous()
    return ctypes.c_void_p(t.data_ptr())


def host_forward(lib, x, v0, k, *, v_threshold, v_reset, decay_input, save_h=True):
    T = x.shape[0]
    x, v0 = x.contiguous(), v0.contiguous()
    spikes, v_last = torch.empty_like(x), torch.empty_like(v0)
    h = torch.empty_like(x) if save_h else None
    rc = getattr(lib, f"gskd_host_forward_{_SUFFIX[x.dtype]}")(
        _p(x), _p(v0), _p(spikes), _p(h), _p(v_last), T, v0.numel(), k, v_threshold,
        0.0 if v_reset is None else v_reset, int(v_reset is not None), int(decay_input))
    assert rc == 0
    return spikes, h, v_last


def host_backward(lib, grad_s, grad_v, h, x, v0, k, *, v_threshold, v_reset, decay_input, detach_reset,
                  surrogate_name, alpha, k_grad=True):
    T = grad_s.shape[0]
    grad_x, grad_v0 = torch.empty_like(grad_s), torch.empty_like(grad_v)
    gk = torch.zeros(1, dtype=grad_s.dtype)
    rc = getattr(lib, f"gskd_host_backward_{_SUFFIX[grad_s.dtype]}")(
        _p(grad_s.contiguous()), _p(grad_v.contiguous()), _p(h), _p(x.contiguous()), _p(v0.contiguous()),
        _p(grad_x), _p(grad_v0), _p(gk), T, grad_v.numel(), k, v_threshold,
        0.0 if v_reset is None else v_reset, alpha, SURROGATES[surrogate_name][0], int(v_reset is not None),
        int(detach_reset), int(decay_input), int(k_grad))
    assert rc == 0
    return grad_x, grad_v0, gk[0]


def _opts(reset, detach, decay_input, surrogate):
    return dict(v_threshold=1.0, v_reset=None if reset == "soft" else -0.1, decay_input=decay_input,
                detach_reset=detach, surrogate_name=surrogate, alpha=SURROGATES[surrogate][1])


# ----------------------------------------------------------------------------------------------------
# Host arithmetic == reference, every combination
# ----------------------------------------------------------------------------------------------------
# fp32 at every T (exact spikes); fp64 (gradients to 1e-12) at T = 16, the longest recursion
_DTYPE_T = [pytest.param(torch.float32, T, id=f"fp32-T{T}") for T in (1, 3, 16)] + [
    pytest.param(torch.float64, 16, id="fp64-T16")]


@pytest.mark.parametrize("surrogate", SURROGATE_NAMES)
@pytest.mark.parametrize("decay_input", [True, False], ids=["decay_input", "no_decay_input"])
@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detach_reset"])
@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("dtype,T", _DTYPE_T)
def test_host_arithmetic_matches_reference(host_lib, dtype, T, reset, detach, decay_input, surrogate):
    opts = _opts(reset, detach, decay_input, surrogate)
    shape = (3, 7)  # odd, N = 21
    x, v0, grad_s, grad_v = make_case(T, shape, dtype, seed=T * 100 + SURROGATES[surrogate][0])
    k = 0.37 if dtype == torch.float64 else float(np.float32(0.37))
    ref_s, ref_v, ref_gx, ref_gv0, ref_gk = reference_grads(x, v0, k, grad_s, grad_v, **opts)
    fwd = {key: opts[key] for key in ("v_threshold", "v_reset", "decay_input")}
    spikes, h, v_last = host_forward(host_lib, x, v0, k, **fwd)
    assert 0 < spikes.sum() < spikes.numel() or T == 1  # the case exercises both branches
    torch.testing.assert_close(spikes, ref_s, rtol=0, atol=0)
    torch.testing.assert_close(v_last, ref_v, rtol=0, atol=0)
    grad_x, grad_v0, gk = host_backward(host_lib, grad_s, grad_v, h, x, v0, k, **opts)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_x, ref_gx, **tol)
    torch.testing.assert_close(grad_v0, ref_gv0, **tol)
    # dL/dk sums T * N terms in a different order than autograd: allow one fp32 ulp-scale error per term
    k_atol = 1e-6 * x.numel() if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(gk, ref_gk, rtol=tol["rtol"], atol=k_atol)
    # the K_GRAD=false instance gives the same input gradients and no dL/dk
    grad_x2, grad_v02, gk2 = host_backward(host_lib, grad_s, grad_v, h, x, v0, k, k_grad=False, **opts)
    assert torch.equal(grad_x2, grad_x) and torch.equal(grad_v02, grad_v0) and gk2 == 0


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_host_integrate_and_fire(host_lib, reset):
    """IF: k = 0 with decay_input=False; the membrane integrates the input untouched."""
    opts = _opts(reset, False, False, "atan")
    x, v0, grad_s, grad_v = make_case(16, (5,), torch.float64, seed=7)
    ref_s, ref_v, ref_gx, ref_gv0, ref_gk = reference_grads(x, v0, 0.0, grad_s, grad_v, **opts)
    spikes, h, v_last = host_forward(host_lib, x, v0, 0.0, v_threshold=1.0, v_reset=opts["v_reset"],
                                     decay_input=False)
    assert torch.equal(spikes, ref_s) and torch.equal(v_last, ref_v)
    grad_x, grad_v0, gk = host_backward(host_lib, grad_s, grad_v, h, x, v0, 0.0, **opts)
    torch.testing.assert_close(grad_x, ref_gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_v0, ref_gv0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gk, ref_gk, rtol=1e-12, atol=1e-12)


def test_host_fires_exactly_at_threshold(host_lib):
    """h == v_threshold fires (H(0) = 1), h one ulp below does not, as in the reference."""
    below = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
    x = torch.tensor([[1.0, below, 0.5]], dtype=torch.float32)
    v0 = torch.zeros(3, dtype=torch.float32)
    spikes, _, v_last = host_forward(host_lib, x, v0, 0.5, v_threshold=1.0, v_reset=None, decay_input=False)
    assert spikes.tolist() == [[1.0, 0.0, 0.0]]
    assert v_last.tolist() == [0.0, below, 0.5]


@pytest.mark.parametrize("n", [1, 37])
def test_host_odd_sizes_and_inference_path(host_lib, n):
    """N = 1 and a prime N; without h_seq (inference) the forward gives the same spikes."""
    opts = _opts("hard", True, True, "sigmoid")
    x, v0, grad_s, grad_v = make_case(5, (n,), torch.float32, seed=n)
    ref_s, ref_v, ref_gx, _, _ = reference_grads(x, v0, 0.5, grad_s, grad_v, **opts)
    fwd = {key: opts[key] for key in ("v_threshold", "v_reset", "decay_input")}
    spikes, h, v_last = host_forward(host_lib, x, v0, 0.5, **fwd)
    spikes2, _, v_last2 = host_forward(host_lib, x, v0, 0.5, save_h=False, **fwd)
    assert torch.equal(spikes, ref_s) and torch.equal(spikes2, ref_s) and torch.equal(v_last2, ref_v)
    grad_x, _, _ = host_backward(host_lib, grad_s, grad_v, h, x, v0, 0.5, **opts)
    torch.testing.assert_close(grad_x, ref_gx, rtol=1e-5, atol=1e-5)


def test_host_rejects_bad_arguments(host_lib):
    z = torch.zeros(1, 1)
    rc = host_lib.gskd_host_forward_f32(_p(z), _p(z[0]), _p(z), None, _p(z[0]), 0, 1, 0.5, 1.0, 0.0, 0, 1)
    assert rc == 1  # T = 0
    rc = host_lib.gskd_host_backward_f32(_p(z), _p(z[0]), _p(z), _p(z), _p(z[0]), _p(z), _p(z[0]), _p(z[0]),
                                         1, 1, 0.5, 1.0, 0.0, 1.0, 99, 0, 0, 0, 0)
    assert rc == 2  # unknown surrogate id


# ----------------------------------------------------------------------------------------------------
# The torch.library ops on CPU tensors, driven by the host arithmetic
# ----------------------------------------------------------------------------------------------------
class HostLauncher:
    """Implements ops.Launcher for CPU float32 tensors with the host-compiled kernel arithmetic."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.forward_calls = 0
        self.backward_calls = 0

    def forward(self, config: KernelConfig, x, v_init, decay, spikes, h_seq, v_last, *, v_threshold, v_reset):
        assert config.dtype == "float32" and decay.dtype == torch.float32 and decay.dim() == 0
        self.forward_calls += 1
        rc = self.lib.gskd_host_forward_f32(
            _p(x), _p(v_init), _p(spikes), _p(h_seq), _p(v_last), x.shape[0], v_init.numel(), decay.item(),
            v_threshold, v_reset, int(config.hard_reset), int(config.decay_input))
        assert rc == 0

    def backward(self, config, grad_spikes, grad_v_last, h_seq, x, v_init, decay, grad_x, grad_v_init, *,
                 v_threshold, v_reset, alpha, decay_grad):
        assert h_seq.dtype == torch.float32 and h_seq.shape == grad_spikes.shape
        assert (x is not None) == (decay_grad and config.decay_input)
        assert (v_init is not None) == decay_grad
        self.backward_calls += 1
        gk = torch.zeros(1, dtype=torch.float32)
        rc = self.lib.gskd_host_backward_f32(
            _p(grad_spikes), _p(grad_v_last), _p(h_seq), _p(x), _p(v_init), _p(grad_x), _p(grad_v_init),
            _p(gk), h_seq.shape[0], grad_v_init.numel(), decay.item(), v_threshold, v_reset, alpha,
            SURROGATES[config.surrogate][0], int(config.hard_reset), int(config.detach_reset),
            int(config.decay_input), int(decay_grad))
        assert rc == 0
        return gk[0].clone()


def cupy_op(x, v0, k, *, v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha):
    """The custom op with ``impl="cupy"`` (the kernels' launcher for the tensors' device)."""
    cfg = make_config(v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha)
    return functional.neuron_multistep_op(x, v0, k, cfg, "cupy")


@pytest.fixture
def cpu_ops(host_lib, monkeypatch) -> HostLauncher:
    launcher = HostLauncher(host_lib)
    monkeypatch.setitem(ops.LAUNCHERS, "cpu", launcher)
    return launcher


def _op_case(T=4, shape=(3, 5), seed=0):
    x, v0, grad_s, grad_v = make_case(T, shape, torch.float32, seed=seed)
    w = torch.tensor(0.3, requires_grad=True)  # PLIF: k = sigmoid(w)
    return x, v0, grad_s, grad_v, w


def _run_op(fn, x, v0, w, grad_s, grad_v, opts):
    x = x.detach().clone().requires_grad_(True)
    v0 = v0.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    spikes, v_last = fn(x, v0, torch.sigmoid(w), **opts)
    ((spikes * grad_s).sum() + (v_last * grad_v).sum()).backward()
    return spikes.detach(), v_last.detach(), x.grad, v0.grad, w.grad


@pytest.mark.parametrize("reset,detach,decay_input,surrogate", [
    ("soft", True, False, "sigmoid"), ("hard", False, True, "atan"), ("soft", False, True, "triangle"),
    ("hard", True, False, "fast_sigmoid"),
])
def test_op_autograd_matches_reference(cpu_ops, reset, detach, decay_input, surrogate):
    opts = _opts(reset, detach, decay_input, surrogate)
    x, v0, grad_s, grad_v, w = _op_case()
    got = _run_op(cupy_op, x, v0, w, grad_s, grad_v, opts)
    ref = _run_op(reference_multistep, x, v0, w, grad_s, grad_v, opts)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    for a, b in zip(got[2:], ref[2:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert cpu_ops.forward_calls == 1 and cpu_ops.backward_calls == 1


def test_op_non_contiguous_input_and_partial_grads(cpu_ops):
    opts = _opts("soft", False, True, "sigmoid")
    base = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(1)) + 0.6
    x = base.transpose(1, 2)  # [T, 3, 4], not contiguous
    assert not x.is_contiguous()
    v0 = torch.zeros(3, 4)
    # only x requires grad: no dL/dk, x not kept for the backward
    xr = x.clone().requires_grad_(True)
    spikes, _ = cupy_op(xr, v0, 0.5, **opts)  # v_last unused: its gradient is None
    spikes.sum().backward()
    xr_ref = x.clone().requires_grad_(True)
    ref_s, _ = reference_multistep(xr_ref, v0, torch.tensor(0.5), **opts)
    ref_s.sum().backward()
    assert torch.equal(spikes, ref_s)
    torch.testing.assert_close(xr.grad, xr_ref.grad, rtol=1e-5, atol=1e-6)
    # only v_last used
    xr.grad = None
    _, v_last = cupy_op(xr, v0, 0.5, **opts)
    v_last.sum().backward()
    xr_ref.grad = None
    _, ref_v = reference_multistep(xr_ref, v0, torch.tensor(0.5), **opts)
    ref_v.sum().backward()
    torch.testing.assert_close(xr.grad, xr_ref.grad, rtol=1e-5, atol=1e-6)


def test_op_no_grad_saves_nothing(cpu_ops):
    x, v0, *_ = _op_case()
    opts = _opts("hard", False, True, "sigmoid")
    with torch.no_grad():
        spikes, v_last = cupy_op(x.requires_grad_(True), v0, 0.5, **opts)
    ref_s, ref_v = reference_multistep(x.detach(), v0, torch.tensor(0.5), **opts)
    assert torch.equal(spikes, ref_s) and torch.equal(v_last, ref_v) and not spikes.requires_grad
    _, _, h = functional.neuron_forward(x.detach(), v0, torch.tensor(0.5), 1.0, -0.1, True, False,
                                        "sigmoid", 4.0, "cupy", False)
    assert h.numel() == 0


def test_op_opcheck(cpu_ops):
    """torch.library.opcheck of the forward op: schema, fake kernel, autograd registration, AOT dispatch."""
    x, v0, *_ = _op_case(T=3, shape=(7,))
    args = (x.requires_grad_(True), v0.requires_grad_(True), torch.tensor(0.4, requires_grad=True), 1.0, None,
            True, False, "atan", 2.0, "cupy", True)
    torch.library.opcheck(functional.neuron_forward, args)
    # the backward op's fake kernel is traced by test_op_torch_compile_fullgraph (AOT autograd)


def test_op_torch_compile_fullgraph(cpu_ops):
    """torch.compile traces the custom op (fake kernels, autograd) without a graph break."""
    opts = _opts("soft", True, False, "sigmoid")
    x, v0, grad_s, grad_v, w = _op_case(T=6, shape=(9,))

    def fn(x, v0, k, **kw):
        return cupy_op(x, v0, k, **kw)

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    got = _run_op(compiled, x, v0, w, grad_s, grad_v, opts)
    ref = _run_op(reference_multistep, x, v0, w, grad_s, grad_v, opts)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    for a, b in zip(got[2:], ref[2:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_op_rejects_unsupported_inputs(cpu_ops):
    opts = _opts("soft", True, False, "sigmoid")
    x, v0, *_ = _op_case()
    with pytest.raises(TypeError, match="float32 and float16"):
        cupy_op(x.double(), v0.double(), 0.5, **opts)
    with pytest.raises(TypeError, match="bfloat16"):
        cupy_op(x.bfloat16(), v0.bfloat16(), 0.5, **opts)
    with pytest.raises(ValueError, match=r"v_init must have shape x_seq.shape\[1:\]"):
        cupy_op(x, v0[:2], 0.5, **opts)
    with pytest.raises(ValueError, match="T >= 1"):
        cupy_op(x[:0], v0, 0.5, **opts)
    with pytest.raises(ValueError, match="unknown surrogate 'erf'.*supported"):
        cupy_op(x, v0, 0.5, **{**opts, "surrogate_name": "erf"})
    with pytest.raises(ValueError, match="decay must be a single value"):
        cupy_op(x, v0, torch.ones(2), **opts)
    # the raw op checks what the kernels will dereference
    with pytest.raises(ValueError, match="decay must be a single float32 value"):
        functional.neuron_forward(x, v0, torch.tensor(0.5, dtype=torch.float64), 1.0, None, True, False,
                                  "sigmoid", 4.0, "cupy", True)
    with pytest.raises(ValueError, match="h_seq must be the float32"):
        functional.neuron_backward(x, v0, x.double(), x, x, v0, torch.tensor(0.5), 1.0, None, True, False,
                                   "sigmoid", 4.0, "cupy", False)


def test_torch_reference_is_not_vacuous():
    """Sanity of the reference itself: soft reset subtracts the threshold, hard reset sets v_reset."""
    x = torch.tensor([[1.5], [0.2]])
    kw = dict(v_threshold=1.0, decay_input=False, detach_reset=False, surrogate_name="atan", alpha=2.0)
    soft_s, soft_v = reference_multistep(x, torch.zeros(1), torch.tensor(0.0), v_reset=None, **kw)
    hard_s, hard_v = reference_multistep(x, torch.zeros(1), torch.tensor(0.0), v_reset=0.0, **kw)
    assert soft_s.flatten().tolist() == [1.0, 0.0] and hard_s.flatten().tolist() == [1.0, 0.0]
    torch.testing.assert_close(soft_v, torch.tensor([0.7]))
    torch.testing.assert_close(hard_v, torch.tensor([0.2]))


def test_kernel_dir_ships_sources():
    for name in ("neuron_math.cuh", "neuron_multistep.cu", "host_harness.cpp"):
        assert (Path(KERNEL_DIR) / name).is_file(), name
