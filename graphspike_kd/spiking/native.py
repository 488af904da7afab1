r"""The native CPU multi-step path (``backend="cpp"``): a blocked C++ loop built at first use.

:func:`neuron_multistep_cpp` has the signature and semantics of
:func:`graphspike_kd.spiking.functional.neuron_multistep_torch` (see there for the equations) and runs
the forward and the backward as one pass each over the ``[T, N]`` tensors: neurons in cache-sized blocks
with the time loop inside, blocks in parallel over ``torch.get_num_threads()`` OpenMP threads. It saves
only ``h_seq`` (plus ``x_seq`` and ``v_init`` when the decay needs a gradient), like the torch path.

The source is ``csrc/neuron_cpu.cpp`` (a plain C ABI, no torch headers, loaded with :mod:`ctypes`). It is
compiled once per machine and source version with ``$CXX`` (default ``g++``) into
``$GRAPHSPIKE_KD_CACHE`` (default ``~/.cache/graphspike_kd``), which takes a few seconds; without a
compiler, asking for this backend raises with the compiler's error. float32 and float64, CPU tensors.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from graphspike_kd._cache import cache_root
from graphspike_kd.spiking.functional import _Config, check_multistep_args
from graphspike_kd.spiking.surrogate import get_surrogate

__all__ = ["neuron_multistep_cpp", "cpp_status", "build_native_library", "ratebp_record_cpp",
           "channel_moments_cpp"]

SOURCE = Path(__file__).with_name("csrc") / "neuron_cpu.cpp"
SURROGATE_IDS = {"sigmoid": 0, "atan": 1, "rectangle": 2, "triangle": 3, "fast_sigmoid": 4, "erf": 5}
_BASE_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
               "-std=c++17", "-shared", "-fPIC"]

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_library_path: str | None = None


def _cache_dir() -> Path:
    return cache_root() / "native"


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def build_native_library(verbose: bool = False) -> Path:
    """Compile ``csrc/neuron_cpu.cpp`` (cached) and return the path of the shared library.

    Raises:
        RuntimeError: no compiler, or the compiler failed (its output is in the message).
    """
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"backend='cpp' needs a C++ compiler: {compiler!r} was not found on PATH "
                           "(set $CXX or install g++), or use backend='torch'")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *_BASE_FLAGS]).encode() + _cpu_signature().encode())
    target = _cache_dir() / f"gsk_neuron_cpu_{key.hexdigest()[:20]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in (["-fopenmp"], []):  # OpenMP if the toolchain has it, else single-threaded
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so", delete=False) as tmp:
            tmp_path = tmp.name
        cmd = [compiler, *_BASE_FLAGS, *extra, str(SOURCE), "-o", tmp_path]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp_path, target)  # atomic: concurrent builders cannot see a half-written file
            if verbose:
                print(" ".join(cmd))
            return target
        os.unlink(tmp_path)
        errors.append(f"$ {' '.join(cmd)}\n{proc.stderr.strip()}")
    raise RuntimeError("backend='cpp': compiling the native CPU kernel failed:\n" + "\n".join(errors))


def _load() -> ctypes.CDLL:
    global _library, _library_path
    if _library is not None:
        return _library
    with _lock:
        if _library is not None:
            return _library
        path = build_native_library()
        lib = ctypes.CDLL(str(path))
        p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
        for suffix in ("f32", "f64"):
            fwd = getattr(lib, f"gsk_neuron_forward_{suffix}")
            fwd.argtypes = [p, p, p, p, p, i64, i64, f64, f64, f64, i32, i32, i32]
            fwd.restype = i32
            bwd = getattr(lib, f"gsk_neuron_backward_{suffix}")
            bwd.argtypes = [p, p, p, p, p, p, p, p, i64, i64, f64, f64, f64, f64, i32, i32, i32, i32, i32,
                            i32]
            bwd.restype = i32
            rec = getattr(lib, f"gsk_ratebp_record_{suffix}")
            rec.argtypes = ([p, i64, p, p, i64, i64] + [p] * 8
                            + [i64, i64, f64, f64, f64, f64, f64, i32, i32, i32, i32, i32])
            rec.restype = i32
            mom = getattr(lib, f"gsk_channel_moments_{suffix}")
            mom.argtypes = [p, i64, i64, i64, p, p, i32]
            mom.restype = i32
        _library, _library_path = lib, str(path)
        return lib


def cpp_status() -> tuple[bool, str]:
    """``(True, path)`` when the native CPU kernel is built (building it if needed), else
    ``(False, reason)``."""
    try:
        _load()
    except (RuntimeError, OSError) as exc:
        return False, str(exc)
    return True, str(_library_path)


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def cpp_forward_loop(x: Tensor, u0: Tensor, k: float, cfg: _Config,
                     keep_h: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    """Native forward on ``x`` ``[T, N]`` from ``u0`` ``[N]``; returns ``(spikes, h_seq, v_last)``
    (``h_seq`` is ``None`` with ``keep_h=False``: the backward then recomputes it from ``x``)."""
    lib = _load()
    x, u0 = x.contiguous(), u0.to(x.dtype).contiguous()
    T, N = x.shape
    v_r = 0.0 if cfg.v_reset is None else cfg.v_reset
    spikes, v_last = torch.empty_like(x), torch.empty_like(u0)
    h_seq = torch.empty_like(x) if keep_h else None
    fn = lib.gsk_neuron_forward_f32 if x.dtype == torch.float32 else lib.gsk_neuron_forward_f64
    fn(_ptr(x), _ptr(u0), _ptr(spikes), _ptr(h_seq), _ptr(v_last), T, N, k, cfg.v_threshold - v_r, v_r,
       int(cfg.decay_input), int(cfg.v_reset is None), torch.get_num_threads())
    return spikes, h_seq, v_last


def cpp_backward_loop(grad_spikes: Tensor, grad_v_last: Tensor, h_seq: Tensor | None, x: Tensor | None,
                      u0: Tensor | None, k: float, cfg: _Config,
                      want_k: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Native reverse-time loop; returns ``(grad_x [T, N], grad_v_init [N], grad_k (0-dim) or None)``.
    With ``h_seq=None`` it recomputes the membranes from ``x`` and ``u0`` block by block (both required)."""
    lib = _load()
    if h_seq is None:
        if x is None or u0 is None:
            raise RuntimeError("cpp_backward_loop: recomputing h needs x and u0")
        x, u0 = x.contiguous(), u0.to(x.dtype).contiguous()
    elif want_k:
        x, u0 = x.contiguous(), u0.contiguous()
    else:
        x = u0 = None
    like = h_seq if h_seq is not None else x
    T, N = like.shape
    gs = grad_spikes.reshape(T, N).to(like.dtype).contiguous()
    gv = grad_v_last.reshape(N).to(like.dtype).contiguous()
    grad_x, grad_v = torch.empty_like(like), torch.empty_like(gv)
    grad_k = ctypes.c_double(0.0)
    v_r = 0.0 if cfg.v_reset is None else cfg.v_reset
    fn = lib.gsk_neuron_backward_f32 if like.dtype == torch.float32 else lib.gsk_neuron_backward_f64
    status = fn(_ptr(h_seq), _ptr(gs), _ptr(gv), _ptr(x), _ptr(u0), _ptr(grad_x), _ptr(grad_v),
                ctypes.addressof(grad_k), T, N, k, cfg.v_threshold - v_r, v_r, cfg.surrogate.alpha,
                SURROGATE_IDS[cfg.surrogate.name], int(cfg.v_reset is None), int(cfg.detach_reset),
                int(cfg.decay_input), int(want_k), torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"native neuron backward failed with status {status}")
    return grad_x, grad_v, torch.tensor(grad_k.value, dtype=like.dtype) if want_k else None


def ratebp_record_cpp(x: Tensor, state: dict[str, Tensor], kappa_seq: Tensor | None, *, k: float, lam: float,
                      k_in: float, threshold: float, surrogate: Any, hard: bool, detach_reset: bool,
                      decay_input: bool, channel_affine: tuple[Tensor, Tensor, int] | None = None) -> Tensor:
    r"""The rate-BP recording spike pass of one neuron layer over ``x`` ``[T, N]``, natively: the
    arithmetic of :meth:`graphspike_kd.spiking.ratebp.RateBPNeuron._spike_forward` (spikes and membranes
    bit-identical to it, eligibilities to float rounding). Updates ``state`` in place:
    ``"u"`` (membrane relative to the reset value), ``"spikes"`` and ``"elig"`` (running sums), ``"d"``
    (:math:`D_{t-1}`, only without ``kappa_seq``), ``"dk"`` / ``"elig_k"`` (only for a learnable decay).
    ``kappa_seq`` ``[T]`` float64 is the per-step :math:`\kappa_t` shared by every neuron (soft, detached
    reset) or ``None``. ``x`` is float32/64 with contiguous rows and ``x.stride(0)`` either ``N`` or ``0``:
    one input repeated at every step (a direct-encoded stem current ``c.expand(T, N)``) is read as it is,
    without materialising its ``T`` copies. ``channel_affine = (scale, shift, hw)`` (``[C]`` tensors of
    ``x``'s dtype and the spatial size) makes the input current ``x * scale[ch] + shift[ch]`` per element,
    with ``ch = (i // hw) % C`` for neuron ``i`` of a step (``x`` laid out ``[..., C, hw]``): a BatchNorm
    applied inside the kernel (see :func:`graphspike_kd.spiking.ratebp.fused_bn_neuron`). Returns the spikes
    ``[T, N]`` (contiguous)."""
    lib = _load()
    if surrogate.name not in SURROGATE_IDS:
        raise RuntimeError(f"backend='cpp' has no kernel for surrogate {surrogate.name!r}; it has "
                           f"{sorted(SURROGATE_IDS)}")
    if x.dim() != 2:
        raise RuntimeError(f"ratebp_record_cpp: x must be [T, N], got shape {tuple(x.shape)}")
    T, N = x.shape
    if (N > 1 and x.stride(1) != 1) or (T > 1 and x.stride(0) not in (0, N)):
        raise RuntimeError(f"ratebp_record_cpp: x must be [T, N] with contiguous rows and row stride N or 0, "
                           f"got shape {tuple(x.shape)} strides {x.stride()}")
    x_tstride = 0 if T > 1 and x.stride(0) == 0 else N
    tensors = [state["u"], state["spikes"], state["elig"]]
    d = state.get("d") if kappa_seq is None else None
    dk, elig_k = state.get("dk"), state.get("elig_k")
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"ratebp_record_cpp: x must be a float32/float64 CPU tensor, got {x.dtype} on "
                           f"{x.device}")
    for t in (*tensors, d, dk, elig_k):
        if t is not None and (not t.is_contiguous() or t.dtype != x.dtype or t.device.type != "cpu"):
            raise RuntimeError("ratebp_record_cpp: every tensor must be a contiguous CPU tensor of x's dtype")
    if kappa_seq is None and not isinstance(d, Tensor):
        raise RuntimeError("ratebp_record_cpp: without kappa_seq the state needs a per-neuron 'd' tensor")
    if kappa_seq is not None:
        kappa_seq = kappa_seq.to(torch.float64).contiguous()
        if kappa_seq.numel() != T:
            raise RuntimeError(f"ratebp_record_cpp: kappa_seq has {kappa_seq.numel()} values for T = {T}")
    scale = shift = None
    channels, hw = 1, 1
    if channel_affine is not None:
        scale, shift, hw = channel_affine
        channels = scale.numel()
        for t in (scale, shift):
            if not t.is_contiguous() or t.dtype != x.dtype or t.device.type != "cpu" or t.numel() != channels:
                raise RuntimeError("ratebp_record_cpp: channel_affine needs two contiguous [C] CPU "
                                   "tensors of x's dtype")
        if hw < 1 or channels < 1 or N % (channels * hw) != 0:
            raise RuntimeError(f"ratebp_record_cpp: {N} neurons per step are not a multiple of C * hw = "
                               f"{channels} * {hw}")
    spikes = torch.empty((T, N), dtype=x.dtype)
    fn = lib.gsk_ratebp_record_f32 if x.dtype == torch.float32 else lib.gsk_ratebp_record_f64
    status = fn(_ptr(x), x_tstride, _ptr(scale), _ptr(shift), channels, hw, _ptr(spikes), _ptr(state["u"]),
                _ptr(d), _ptr(dk), _ptr(state["spikes"]), _ptr(state["elig"]), _ptr(elig_k), _ptr(kappa_seq),
                T, N, k, lam, k_in, threshold, surrogate.alpha, SURROGATE_IDS[surrogate.name], int(not hard),
                int(detach_reset), int(decay_input), torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"native rate-BP recording failed with status {status}")
    return spikes


def channel_moments_cpp(x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per-channel batch statistics of ``x`` ``[B, C, *]`` (contiguous float32/64 CPU tensor) in one read:
    ``(mean, m2)`` as float64 ``[C]`` tensors, :math:`m_2 = \sum (x - \mu)^2` over the batch and spatial
    positions (the biased variance is ``m2 / (B * prod(*))``). Sums of :math:`x - K` with :math:`K` the
    channel's first value, in double: accurate also when the mean is large against the spread."""
    lib = _load()
    floats = (torch.float32, torch.float64)
    if x.dim() < 2 or not x.is_contiguous() or x.device.type != "cpu" or x.dtype not in floats:
        raise RuntimeError(f"channel_moments_cpp: x must be a contiguous float32/float64 CPU tensor "
                           f"[B, C, *], got {x.dtype} {tuple(x.shape)} on {x.device}")
    if x.numel() == 0:
        raise RuntimeError(f"channel_moments_cpp: empty input {tuple(x.shape)}")
    B, C = x.shape[:2]
    hw = x[0, 0].numel()
    mean = torch.empty(C, dtype=torch.float64)
    m2 = torch.empty(C, dtype=torch.float64)
    fn = lib.gsk_channel_moments_f32 if x.dtype == torch.float32 else lib.gsk_channel_moments_f64
    fn(_ptr(x), B, C, hw, _ptr(mean), _ptr(m2), torch.get_num_threads())
    return mean, m2


class _NeuronMultiStepCpp(torch.autograd.Function):
    """Native forward/backward. Saves the input ``x`` and ``v_init`` and recomputes the membranes in the
    backward, block by block in cache (bit-identical to the forward's), instead of writing and keeping an
    ``h_seq``: the forward then writes one ``[T, N]`` tensor (the spikes) instead of two, and the saved
    ``[T, N]`` tensor is the caller's input (a view of it; a copy only when the input is not contiguous)
    rather than a new allocation. As with any saved input, modifying ``x_seq`` in place before the
    backward is then an autograd error."""

    @staticmethod
    def forward(ctx: Any, x_seq: Tensor, v_init: Tensor, decay: Tensor,
                cfg: _Config) -> tuple[Tensor, Tensor]:
        shape = x_seq.shape
        x = x_seq.detach().reshape(shape[0], -1).contiguous()
        u0 = v_init.detach().reshape(-1).to(x.dtype).contiguous()
        k = float(decay)
        spikes, _, v_last = cpp_forward_loop(x, u0, k, cfg, keep_h=False)
        ctx.cfg, ctx.consts = cfg, (k, shape, v_init.shape, decay.dtype)
        ctx.save_for_backward(x, u0)
        return spikes.view(shape), v_last.view(v_init.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_spikes: Tensor, grad_v_last: Tensor) -> tuple[Tensor | None, ...]:
        k, x_shape, v_shape, decay_dtype = ctx.consts
        x, u0 = ctx.saved_tensors
        want_k = ctx.needs_input_grad[2]
        grad_x, grad_v, grad_k = cpp_backward_loop(grad_spikes, grad_v_last, None, x, u0, k, ctx.cfg, want_k)
        return (grad_x.view(x_shape), grad_v.view(v_shape) if ctx.needs_input_grad[1] else None,
                grad_k.to(decay_dtype) if want_k else None, None)


def neuron_multistep_cpp(
    x_seq: Tensor,
    v_init: Tensor,
    decay: Tensor,
    *,
    v_threshold: float = 1.0,
    v_reset: float | None = None,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate_name: str = "sigmoid",
    alpha: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Native CPU version of :func:`~graphspike_kd.spiking.functional.neuron_multistep_torch` (same
    arguments and results; float32/float64 CPU tensors).

    Raises:
        RuntimeError: the tensors are not float32/float64 CPU tensors, or the kernel cannot be built.
    """
    check_multistep_args(x_seq, v_init, decay, v_threshold=v_threshold, v_reset=v_reset,
                         where="neuron_multistep_cpp")
    if x_seq.device.type != "cpu" or x_seq.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"backend='cpp' runs float32/float64 CPU tensors, got {x_seq.dtype} on "
                           f"{x_seq.device}")
    surrogate = get_surrogate(surrogate_name, alpha)
    if surrogate.name not in SURROGATE_IDS:
        raise RuntimeError(f"backend='cpp' has no kernel for surrogate {surrogate_name!r}; it has "
                           f"{sorted(SURROGATE_IDS)}")
    cfg = _Config(float(v_threshold), None if v_reset is None else float(v_reset), bool(decay_input),
                  bool(detach_reset), surrogate)
    if torch.compiler.is_compiling():  # one opaque custom op instead of a graph break
        from graphspike_kd.spiking.ops import neuron_multistep_op

        return neuron_multistep_op(x_seq, v_init, decay, cfg, "cpp")
    return _NeuronMultiStepCpp.apply(x_seq, v_init, decay, cfg)
