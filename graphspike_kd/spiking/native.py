r"""The native CPU multi-step neuron (``backend="cpp"``): a blocked C++ loop, built at first use.

A leaf implementation of :mod:`graphspike_kd.spiking.functional`, which dispatches to it. The forward and
the backward are one pass each over the ``[T, N]`` tensors (equations in
:mod:`graphspike_kd.spiking.torch_loop`): neurons in cache-sized blocks with the time loop inside, blocks
in parallel over ``torch.get_num_threads()`` OpenMP threads. Spikes are bit-identical to the torch path;
the backward recomputes the membranes block by block from the saved input instead of keeping ``h_seq``.

The loops are ``csrc/neuron_cpu.cpp`` (a plain C ABI, also called through :mod:`ctypes` by the rate-BP
recording pass and :class:`CppNeuronFunction`); ``csrc/neuron_ops.cpp`` registers them as the operators
``graphspike_kd::neuron_forward.cpu`` / ``neuron_backward.cpu`` with CPU, Meta and C++ autograd kernels
(:func:`cpp_neuron`, what the neurons run, eager and under ``torch.compile``). Both are built into one
library with :func:`torch.utils.cpp_extension.load` (ninja and ``$CXX``, default ``c++``; without either
the build fails with a one-line reason and ``backend="auto"`` uses the torch path) with
``-march=native`` into ``$GRAPHSPIKE_KD_CACHE/native`` (default ``~/.cache/graphspike_kd/native``), in a
private build folder, and then moved to a file named by a key over the source, the compiler and its
version, the flags, the torch version and the CPU's instruction-set flags, so a cache shared between
machines never hands one CPU's binary to another. Beside it a manifest records the library's SHA-256: a
cached library is loaded only when its manifest's key and hash match (a file planted in the cache is
rebuilt over, never loaded), and the cache folder must belong to the user and not be writable by others.
float32 and float64 CPU tensors; every surrogate with a ``kernel_id``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from graphspike_kd._cache import cache_root
from graphspike_kd.spiking.surrogate import KERNEL_IDS, SurrogateFunction
from graphspike_kd.spiking.torch_loop import NeuronConfig, non_finite_message

__all__ = ["CppNeuronFunction", "cpp_neuron", "cpp_status", "build_native_library", "cpp_forward_loop",
           "cpp_backward_loop", "ratebp_record_cpp", "channel_moments_cpp", "native_cache_dir", "build_key"]

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "neuron_cpu.cpp"
#: The operator registrations (``graphspike_kd::neuron_forward.cpu`` / ``neuron_backward.cpu``: the "cpu"
#: overloads of the op family), built into the same library.
OPS_SOURCE = Path(__file__).with_name("csrc") / "neuron_ops.cpp"
#: Compiler flags besides what :func:`torch.utils.cpp_extension.load` adds (``-fPIC``, ``-std=c++17``). On
#: x86-64, ``-mprefer-vector-width=512`` lets the vectoriser use 512-bit registers where ``-march=native``
#: enables AVX-512 (GCC and Clang otherwise stop at 256 bits); without AVX-512 it changes nothing. The
#: element-wise arithmetic, and so every spike, is the same at any vector width.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math") + (
    ("-mprefer-vector-width=512",) if platform.machine().lower() in ("x86_64", "amd64") else ())
_OPENMP = ("-fopenmp",)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_library_path: str | None = None


def native_cache_dir() -> Path:
    """Where the built libraries live: ``<cache root>/native``."""
    return cache_root() / "native"


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


@lru_cache(maxsize=8)
def _compiler_identity(compiler: str) -> str:
    """The compiler's resolved path and the first line of ``--version``."""
    path = shutil.which(compiler)
    if path is None:
        raise RuntimeError(f"backend='cpp' needs a C++ compiler: {compiler!r} was not found on PATH "
                           "(set $CXX or install g++), or use backend='torch'")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"backend='cpp': running {path} --version failed: {exc}") from exc
    return f"{path} {out.splitlines()[0] if out else ''}"


@lru_cache(maxsize=1)
def _cpu_signature() -> str:
    """The machine type and the CPU's instruction-set flags (``/proc/cpuinfo`` on Linux)."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[-1] for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    if not flags:  # macOS and others: the brand string and features the OS reports
        try:
            flags = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string", "machdep.cpu.features"],
                                   capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            flags = platform.processor()
    return f"{platform.machine()} {' '.join(sorted(flags.split()))}"


def build_key() -> str:
    """Hex SHA-256 over what the binary depends on: the sources, the compiler and its version, the flags,
    the torch version (the operators are compiled against its headers) and the CPU's instruction-set
    flags."""
    parts = [SOURCE.read_bytes(), OPS_SOURCE.read_bytes(), _compiler_identity(_compiler()).encode(),
             " ".join(FLAGS + _OPENMP).encode(), torch.__version__.encode(), _cpu_signature().encode()]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()


def _private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) or check that the existing folder is the user's and not writable by
    others: a library loaded from a folder others can write to would run their code."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix":
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise RuntimeError(f"backend='cpp': the build cache {path} is owned by another user or writable "
                               "by group/others, so a library there cannot be trusted; run `chmod go-w` on "
                               "it or point $GRAPHSPIKE_KD_CACHE at a private folder")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(library: Path, manifest: Path, key: str) -> bool:
    """Whether ``library`` is the one recorded in ``manifest`` for ``key`` (same SHA-256)."""
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
        return record.get("key") == key and record.get("sha256") == _sha256(library)
    except (OSError, ValueError, AttributeError):
        return False


def build_native_library(verbose: bool = False) -> Path:
    """Build ``csrc/neuron_cpu.cpp`` and ``csrc/neuron_ops.cpp`` into one library (or reuse the verified
    cached build) and return its path.

    Args:
        verbose (bool, optional): print the compiler commands. (default: ``False``)

    Raises:
        RuntimeError: no compiler or no ninja (a one-line reason), the compiler failed (its output is in
            the message), or the cache folder is not private.
    """
    key = build_key()
    folder = _private_dir(native_cache_dir())
    name = f"gsk_neuron_cpu_{key[:24]}"
    target, manifest = folder / f"{name}.so", folder / f"{name}.json"
    if target.exists() and _verified(target, manifest, key):
        return target
    from torch.utils import cpp_extension

    ninja_dir = _ninja_dir()
    logger.warning("graphspike_kd: compiling the native CPU neuron kernel (backend='cpp', once per machine "
                   "and version, about a minute) into %s", folder)
    errors = []
    saved_path = os.environ.get("PATH")
    if ninja_dir is not None:  # pip's ninja beside this interpreter, not on PATH (a venv used unactivated)
        os.environ["PATH"] = ninja_dir + os.pathsep + (saved_path or "")
    try:
        return _build(cpp_extension, name, folder, target, manifest, key, verbose, errors)
    finally:
        if ninja_dir is not None:
            if saved_path is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = saved_path


def _ninja_dir() -> str | None:
    """``None`` when ``ninja`` runs from ``PATH``; else the folder holding the ``ninja`` of the ``ninja``
    Python package or of this interpreter's scripts folder (to put on ``PATH`` for the build). Raises a
    one-line ``RuntimeError`` when there is none: :func:`torch.utils.cpp_extension.load` builds with ninja."""
    if shutil.which("ninja") is not None:
        return None
    candidates = [Path(sys.executable).parent]
    try:
        import ninja  # the PyPI package ships the binary

        candidates.insert(0, Path(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    for folder in candidates:
        if shutil.which("ninja", path=str(folder)) is not None:
            return str(folder)
    raise RuntimeError("backend='cpp' needs the ninja build tool to compile the native kernel "
                       "(torch.utils.cpp_extension builds with it) and none was found: `pip install ninja` "
                       "or install the system package, or use backend='torch'")


def _build(cpp_extension: Any, name: str, folder: Path, target: Path, manifest: Path, key: str, verbose: bool,
           errors: list[str]) -> Path:
    for extra in (_OPENMP, ()):  # OpenMP if the toolchain has it, else single-threaded
        build_dir = tempfile.mkdtemp(prefix="build-", dir=folder)
        try:
            built = cpp_extension.load(name=name, sources=[str(SOURCE), str(OPS_SOURCE)],
                                       extra_cflags=[*FLAGS, *extra],
                                       extra_ldflags=list(extra), build_directory=build_dir,
                                       is_python_module=False, verbose=verbose)
            digest = _sha256(Path(built))
            os.replace(built, target)  # atomic: a concurrent builder never sees a half-written file
            tmp_manifest = Path(build_dir) / "manifest.json"
            tmp_manifest.write_text(json.dumps({"key": key, "sha256": digest, "torch": torch.__version__,
                                                "compiler": _compiler_identity(_compiler()),
                                                "flags": [*FLAGS, *extra]}), encoding="utf-8")
            os.replace(tmp_manifest, manifest)
            return target
        except Exception as exc:  # the build's own error text is the message
            errors.append(f"with flags {[*FLAGS, *extra]}: {exc}")
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
    raise RuntimeError("backend='cpp': compiling the native CPU kernel failed:\n" + "\n".join(errors))


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"gsk_neuron_forward_{suffix}")
        fwd.argtypes = [p, p, p, p, p, i64, i64, f64, f64, f64, i32, i32, i32]
        fwd.restype = i64  # the number of non-finite final membranes
        bwd = getattr(lib, f"gsk_neuron_backward_{suffix}")
        bwd.argtypes = [p, p, p, p, p, p, p, p, i64, i64, f64, f64, f64, f64, i32, i32, i32, i32, i32, i32]
        bwd.restype = i32
        rec = getattr(lib, f"gsk_ratebp_record_{suffix}")
        rec.argtypes = ([p, i64, p, p, i64, i64] + [p] * 8
                        + [i64, i64, f64, f64, f64, f64, f64, i32, i32, i32, i32, i32])
        rec.restype = i32
        mom = getattr(lib, f"gsk_channel_moments_{suffix}")
        mom.argtypes = [p, i64, i64, i64, p, p, i32]
        mom.restype = i32
    return lib


def _load() -> ctypes.CDLL:
    global _library, _library_path
    if _library is not None:
        return _library
    with _lock:
        if _library is None:
            path = build_native_library()
            torch.ops.load_library(str(path))  # registers the operators (verified file, see above)
            _library, _library_path = _bind(ctypes.CDLL(str(path))), str(path)
    return _library


def cpp_status() -> tuple[bool, str]:
    """``(True, path)`` when the native CPU kernel is built (building it if needed), else
    ``(False, reason)``."""
    try:
        _load()
    except (RuntimeError, OSError) as exc:
        return False, str(exc)
    return True, str(_library_path)


def _kernel_id(surrogate: SurrogateFunction) -> int:
    if surrogate.kernel_id is None:
        raise RuntimeError(f"backend='cpp' has no kernel for surrogate {surrogate!r}; it has "
                           f"{sorted(KERNEL_IDS)}")
    return surrogate.kernel_id


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def cpp_forward_loop(x: Tensor, u0: Tensor, k: float, cfg: NeuronConfig,
                     keep_h: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    """Native forward on ``x`` ``[T, N]`` from ``u0`` ``[N]``; returns ``(spikes, h_seq, v_last)``
    (``h_seq`` is ``None`` with ``keep_h=False``: the backward then recomputes it from ``x``). Raises
    ``ValueError`` when a final membrane is NaN or inf, i.e. ``x``, ``u0`` or ``k`` is not finite (counted
    inside the kernel, no extra pass)."""
    lib = _load()
    x, u0 = x.contiguous(), u0.to(x.dtype).contiguous()
    T, N = x.shape
    v_r = 0.0 if cfg.v_reset is None else cfg.v_reset
    spikes, v_last = torch.empty_like(x), torch.empty_like(u0)
    h_seq = torch.empty_like(x) if keep_h else None
    fn = lib.gsk_neuron_forward_f32 if x.dtype == torch.float32 else lib.gsk_neuron_forward_f64
    non_finite = fn(_ptr(x), _ptr(u0), _ptr(spikes), _ptr(h_seq), _ptr(v_last), T, N, k,
                    cfg.v_threshold - v_r, v_r, int(cfg.decay_input), int(cfg.v_reset is None),
                    torch.get_num_threads())
    if non_finite:
        raise ValueError(non_finite_message(int(non_finite), N, k))
    return spikes, h_seq, v_last


def cpp_backward_loop(grad_spikes: Tensor, grad_v_last: Tensor, h_seq: Tensor | None, x: Tensor | None,
                      u0: Tensor | None, k: float, cfg: NeuronConfig,
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
                _kernel_id(cfg.surrogate), int(cfg.v_reset is None), int(cfg.detach_reset),
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
    surrogate_id = _kernel_id(surrogate)
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
                T, N, k, lam, k_in, threshold, surrogate.alpha, surrogate_id, int(not hard),
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


def cpp_neuron(x_seq: Tensor, v_init: Tensor, decay: Tensor, cfg: NeuronConfig) -> tuple[Tensor, Tensor]:
    """``(spikes, v_last)`` through the operator ``graphspike_kd::neuron_forward.cpu``
    (``csrc/neuron_ops.cpp``): CPU kernel, C++ autograd (the backward is
    ``graphspike_kd::neuron_backward.cpu``, recomputing the membranes from the saved ``x_seq``) and shape
    kernels for ``torch.compile``, so neither eager nor compiled calls go through Python between the
    dispatcher and the loops. Same arithmetic as :class:`CppNeuronFunction` (bit-identical spikes and
    gradients). The library must be loaded (:func:`cpp_status`); raises ``ValueError`` on a NaN/inf
    membrane as :func:`cpp_forward_loop`."""
    return torch.ops.graphspike_kd.neuron_forward.cpu(x_seq, v_init, decay, cfg.v_threshold, cfg.v_reset,
                                                      cfg.decay_input, cfg.detach_reset,
                                                      _kernel_id(cfg.surrogate), cfg.surrogate.alpha)


class CppNeuronFunction(torch.autograd.Function):
    """Native forward/backward. Saves the input ``x`` and ``v_init`` and recomputes the membranes in the
    backward, block by block in cache (bit-identical to the forward's), instead of writing and keeping an
    ``h_seq``: the forward then writes one ``[T, N]`` tensor (the spikes) instead of two, and the saved
    ``[T, N]`` tensor is the caller's input (a view of it; a copy only when the input is not contiguous)
    rather than a new allocation. As with any saved input, modifying ``x_seq`` in place before the
    backward is then an autograd error. ``CppNeuronFunction.apply(x_seq, v_init, decay, cfg)``."""

    @staticmethod
    def forward(ctx: Any, x_seq: Tensor, v_init: Tensor, decay: Tensor,
                cfg: NeuronConfig) -> tuple[Tensor, Tensor]:
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
