r"""The multi-step neuron, one way down: backend choice, the eager/compile switch and one custom-op family.

Every IF / LIF / PLIF neuron (:mod:`graphspike_kd.spiking.neurons`) runs the generic multi-step neuron
with decay factor :math:`k` (LIF: :math:`1/\tau`, PLIF: :math:`\sigma(w)`, IF: :math:`0` with
``decay_input=False``) and :math:`V_r` = ``v_reset`` (hard reset) or 0 (soft reset):

.. math::
    H[t] &= V[t-1] + k\,\big(X[t] - (V[t-1] - V_r)\big) \;\;\text{(decay\_input)} \qquad
        H[t] = V[t-1] - k\,(V[t-1] - V_r) + X[t] \;\;\text{(otherwise)} \\
    S[t] &= \Theta(H[t] - \vartheta) \quad (\text{backward: surrogate } g'(H[t] - \vartheta)) \\
    V[t] &= H[t] - \vartheta S[t] \;\;\text{(soft)} \qquad V[t] = H[t](1 - S[t]) + V_r S[t] \;\;\text{(hard)}

(backward recursion in :mod:`graphspike_kd.spiking.torch_loop`). This module is the only place that
chooses how it runs. Three leaf implementations give the same spikes:

- ``"torch"``: :mod:`graphspike_kd.spiking.torch_loop`, the time loop in torch (every device and dtype);
- ``"cpp"``: :mod:`graphspike_kd.spiking.native`, a blocked C++ loop (float32/float64 CPU tensors);
- ``"cupy"``: :mod:`graphspike_kd.spiking.kernels`, fused CUDA kernels (float32/float16 CUDA tensors).

``"auto"`` picks the fastest one available for the tensor's device: ``"cupy"`` on CUDA, ``"cpp"`` on
CPU, ``"torch"`` when that one cannot run (logged once; warned once for a CUDA tensor). An explicit
backend never falls back: it raises with the reason.

One op family, ``graphspike_kd::neuron_forward`` and ``graphspike_kd::neuron_backward``, carries every
path that ``torch.compile`` sees, so a compiled model keeps the neuron as one node (``fullgraph=True``
works) instead of breaking the graph or unrolling the time loop:

- their default overloads (defined here, with fake kernels and an autograd formula) take the
  implementation as their ``impl`` argument; the cupy path always runs them, the torch path while
  ``torch.compile`` traces (eagerly it runs its own autograd Function, the least overhead);
- their ``cpu`` overloads, ``neuron_forward.cpu`` / ``neuron_backward.cpu``, are C++ operators built with
  the native library (:func:`graphspike_kd.spiking.native.cpp_neuron`): CPU, Meta and C++ autograd
  kernels, so the cpp path, eager or compiled, runs from the dispatcher to the loops without Python.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import Tensor

from graphspike_kd.spiking import native
from graphspike_kd.spiking.kernels import cupy_status
from graphspike_kd.spiking.kernels import ops as cuda_ops
from graphspike_kd.spiking.surrogate import CUDA_SURROGATES, KERNEL_IDS, SurrogateFunction
from graphspike_kd.spiking.torch_loop import (
    NeuronConfig,
    TorchNeuronFunction,
    check_finite_membrane,
    check_multistep_args,
    make_config,
    torch_backward_loop,
    torch_forward_loop,
)

__all__ = ["BACKENDS", "IMPLS", "NeuronConfig", "neuron_multistep", "neuron_multistep_torch",
           "neuron_multistep_cpp", "neuron_multistep_cupy", "neuron_multistep_op", "run_multistep",
           "resolve_backend", "backend_unavailable_reason", "neuron_forward", "neuron_backward"]

logger = logging.getLogger(__name__)

#: Values of ``backend`` (``"auto"`` resolves to one of :data:`IMPLS`).
BACKENDS = ("torch", "cpp", "cupy", "auto")
#: The implementations of the custom ops (the ``impl`` argument).
IMPLS = ("torch", "cpp", "cupy")
_CUPY_DTYPES = (torch.float32, torch.float16)
_CPP_DTYPES = (torch.float32, torch.float64)
_already_said: set[str] = set()


# ------------------------------------------------------------------------------------------ custom ops
def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"graphspike_kd::neuron ops: impl must be one of {IMPLS}, got {impl!r}")


@torch.library.custom_op("graphspike_kd::neuron_forward", mutates_args=())
def neuron_forward(x_seq: Tensor, v_init: Tensor, decay: Tensor, v_threshold: float, v_reset: float | None,
                   decay_input: bool, detach_reset: bool, surrogate_name: str, alpha: float, impl: str,
                   save_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(spikes [T, ...], v_last [...], h_seq)``: ``h_seq`` is the pre-fire membrane ``[T, ...]``
    when ``save_h`` (float32 for ``impl="cupy"``, else ``x_seq``'s dtype), else an empty tensor."""
    _check_impl(impl)
    if impl == "cupy":
        return cuda_ops.cupy_forward(x_seq, v_init, decay, v_threshold, v_reset, decay_input, detach_reset,
                                     surrogate_name, alpha, save_h)
    cfg = make_config(v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha)
    T = x_seq.shape[0]
    x = x_seq.reshape(T, -1)
    u0 = v_init.reshape(-1).to(x.dtype)
    if impl == "torch":
        k = float(decay)
        s, h, v = torch_forward_loop(x, u0, k, cfg)
        check_finite_membrane(v, k)
    else:  # checks the membranes itself
        s, h, v = native.cpp_forward_loop(x, u0, float(decay), cfg, keep_h=save_h)
    h_out = h.view(x_seq.shape) if save_h else x_seq.new_empty(0)
    return s.view(x_seq.shape), v.view(v_init.shape), h_out  # v is a new tensor in both loops


@neuron_forward.register_fake
def _(x_seq, v_init, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha, impl,
      save_h):
    h_dtype = torch.float32 if impl == "cupy" else x_seq.dtype
    h_seq = torch.empty(x_seq.shape if save_h else (0,), dtype=h_dtype, device=x_seq.device)
    return torch.empty_like(x_seq), torch.empty(v_init.shape, dtype=x_seq.dtype, device=v_init.device), h_seq


@torch.library.custom_op("graphspike_kd::neuron_backward", mutates_args=())
def neuron_backward(grad_spikes: Tensor, grad_v_last: Tensor, h_seq: Tensor, spikes: Tensor, x_seq: Tensor,
                    v_init: Tensor, decay: Tensor, v_threshold: float, v_reset: float | None,
                    decay_input: bool, detach_reset: bool, surrogate_name: str, alpha: float, impl: str,
                    want_k: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(grad_x, grad_v_init, grad_decay)`` (``grad_decay`` is 0 when ``want_k`` is false).

    What each implementation reads: torch ``h_seq`` (and ``spikes`` for a hard reset, ``x_seq`` and
    ``v_init`` for ``want_k``); cpp ``x_seq`` and ``v_init`` (it recomputes the membranes); cupy
    ``h_seq`` (and ``v_init``, with ``decay_input`` also ``x_seq``, for ``want_k``). The others may be
    empty tensors."""
    _check_impl(impl)
    if impl == "cupy":
        return cuda_ops.cupy_backward(grad_spikes, grad_v_last, h_seq, x_seq, v_init, decay, v_threshold,
                                      v_reset, decay_input, detach_reset, surrogate_name, alpha, want_k)
    cfg = make_config(v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha)
    T = grad_spikes.shape[0]
    k = float(decay)
    if impl == "torch":
        h = h_seq.reshape(T, -1)
        s = spikes.reshape(T, -1) if v_reset is not None else None
        x = x_seq.reshape(T, -1) if want_k else None
        u0 = v_init.reshape(-1).to(h.dtype) if want_k else None
        gx, gv, gk = torch_backward_loop(grad_spikes, grad_v_last, h, s, x, u0, k, cfg, want_k)
    else:
        x = x_seq.reshape(T, -1)
        u0 = v_init.reshape(-1).to(x.dtype)
        gx, gv, gk = native.cpp_backward_loop(grad_spikes, grad_v_last, None, x, u0, k, cfg, want_k)
    gk = torch.zeros((), dtype=decay.dtype, device=decay.device) if gk is None else gk.to(decay)
    return gx.view(grad_spikes.shape), gv.view(grad_v_last.shape), gk


@neuron_backward.register_fake
def _(grad_spikes, grad_v_last, h_seq, spikes, x_seq, v_init, decay, v_threshold, v_reset, decay_input,
      detach_reset, surrogate_name, alpha, impl, want_k):
    return torch.empty_like(grad_spikes), torch.empty_like(grad_v_last), torch.empty_like(decay)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    x_seq, v_init, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha, impl, \
        save_h = inputs
    spikes, _, h_seq = output
    want_k = bool(ctx.needs_input_grad[2])
    ctx.mark_non_differentiable(h_seq)
    ctx.set_materialize_grads(False)  # no zero-filled [T, ...] gradient for the unused h_seq output
    keep_x = impl == "cpp" or (want_k and (impl != "cupy" or decay_input))
    keep_v = impl == "cpp" or want_k
    ctx.save_for_backward(h_seq, spikes if impl == "torch" and v_reset is not None else None,
                          x_seq if keep_x else None, v_init if keep_v else None, decay)
    ctx.params = (v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha, impl)
    ctx.want_k, ctx.save_h = want_k, save_h
    ctx.shapes = (x_seq.shape, x_seq.dtype, v_init.shape)


def _backward(ctx: Any, grad_spikes: Tensor | None, grad_v_last: Tensor | None,
              grad_h: Tensor | None) -> tuple:
    h_seq, spikes, x_seq, v_init, decay = ctx.saved_tensors
    impl = ctx.params[-1]
    none = (None,) * 11
    if not ctx.save_h and impl != "cpp":
        raise RuntimeError("graphspike_kd::neuron_forward ran with save_h=False but a gradient was "
                           "requested; call it with save_h=True when its inputs require grad")
    if grad_spikes is None and grad_v_last is None:
        return none
    x_shape, dtype, v_shape = ctx.shapes
    if grad_spikes is None:
        grad_spikes = torch.zeros(x_shape, dtype=dtype, device=decay.device)
    if grad_v_last is None:
        grad_v_last = torch.zeros(v_shape, dtype=dtype, device=decay.device)
    empty = grad_spikes.new_empty(0)
    gx, gv, gk = neuron_backward(grad_spikes.contiguous(), grad_v_last.to(dtype).contiguous(), h_seq,
                                 empty if spikes is None else spikes, empty if x_seq is None else x_seq,
                                 empty if v_init is None else v_init, decay, *ctx.params, ctx.want_k)
    return (gx if ctx.needs_input_grad[0] else None, gv if ctx.needs_input_grad[1] else None,
            gk if ctx.want_k else None) + none[3:]


neuron_forward.register_autograd(_backward, setup_context=_setup_context)


def neuron_multistep_op(x_seq: Tensor, v_init: Tensor, decay: Tensor | float, cfg: NeuronConfig,
                        impl: str) -> tuple[Tensor, Tensor]:
    """``(spikes, v_last)`` through the custom op with implementation ``impl`` (no availability check;
    what runs under ``torch.compile``, and always for ``"cupy"``)."""
    _check_impl(impl)
    if not isinstance(decay, Tensor):
        decay = torch.tensor(float(decay))
    if impl == "cupy":
        cuda_ops.validate(x_seq, v_init, decay, cfg.v_threshold, cfg.v_reset, cfg.surrogate.name,
                          cfg.surrogate.alpha)
        # the kernels read k as fp32 from device memory; the cast is part of the autograd graph, so a
        # gradient reaches a decay of any dtype or device (e.g. PLIF's sigmoid(w) in fp32 under AMP)
        decay = decay.reshape(()).to(device=x_seq.device, dtype=torch.float32)
    save_h = impl != "cpp" and torch.is_grad_enabled() and any(
        t.requires_grad for t in (x_seq, v_init, decay))
    spikes, v_last, _ = neuron_forward(x_seq, v_init, decay, cfg.v_threshold, cfg.v_reset,
                                       cfg.decay_input, cfg.detach_reset, cfg.surrogate.name,
                                       cfg.surrogate.alpha, impl, save_h)
    if impl == "cupy" and not torch.compiler.is_compiling():  # the torch and cpp ops check inside
        check_finite_membrane(v_last.detach(), decay.detach())
    return spikes, v_last


# ----------------------------------------------------------------------------------- backend choice
@torch.compiler.assume_constant_result
def _cpp_build_reason() -> str:
    """Empty when the native CPU kernel is built (building it on first call), else why not. A constant
    for ``torch.compile``: the build and its lock run once, outside the traced graph."""
    ok, why = native.cpp_status()
    return "" if ok else why


@torch.compiler.assume_constant_result
def _cupy_reason() -> str:
    """Empty when the CuPy kernels can run here, else the real reason (probed once per process)."""
    ok, why = cupy_status()
    return "" if ok else f"CuPy kernels cannot run: {why}"


def backend_unavailable_reason(backend: str, x: Tensor, surrogate: SurrogateFunction) -> str | None:
    """Why ``backend`` (one of :data:`IMPLS`) cannot run ``x`` with ``surrogate``, or ``None`` if it can
    (building the native kernel, or probing CuPy, on first use)."""
    if backend == "torch":
        if type(surrogate).derivative_at is SurrogateFunction.derivative_at:
            return (f"surrogate {type(surrogate).__name__} does not implement derivative_at(), which the "
                    "multi-step path needs")
        return None
    if backend == "cpp":
        if x.device.type != "cpu" or x.dtype not in _CPP_DTYPES:
            return f"the native kernel runs float32/float64 CPU tensors, got {x.dtype} on {x.device}"
        if surrogate.kernel_id is None:
            return f"surrogate {surrogate!r} has no native kernel (kernels exist for {sorted(KERNEL_IDS)})"
        return _cpp_build_reason() or None
    if backend == "cupy":
        if x.device.type != "cuda":
            return f"the CuPy kernels need CUDA tensors, got a tensor on {x.device}"
        if x.dtype not in _CUPY_DTYPES:
            return f"the CuPy kernels support float32 and float16, got {x.dtype}"
        if not surrogate.has_cuda_kernel:
            return (f"surrogate {surrogate!r} has no CUDA kernel (kernels exist for "
                    f"{sorted(CUDA_SURROGATES)}); use backend='torch' or one of those surrogates")
        return _cupy_reason() or None
    raise ValueError(f"backend must be one of {IMPLS}, got {backend!r}")


def _say_once(message: str, *, warn: bool) -> None:
    if torch.compiler.is_compiling() or message in _already_said:
        return
    _already_said.add(message)
    if warn:
        warnings.warn(message, RuntimeWarning, stacklevel=5)
    else:
        logger.info(message)


def resolve_backend(backend: str, x: Tensor, surrogate: SurrogateFunction, who: str = "neuron") -> str:
    """The implementation that will run ``x``: an explicit backend if it can run (else ``RuntimeError``
    naming ``who`` and the reason), or ``"auto"``'s choice (``"cupy"`` on CUDA, ``"cpp"`` on CPU, else
    ``"torch"``)."""
    if backend not in BACKENDS:
        raise ValueError(f"{who}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        reason = backend_unavailable_reason(backend, x, surrogate)
        if reason is not None:
            error = TypeError if backend == "torch" else RuntimeError
            raise error(f"{who}(backend={backend!r}) cannot run: {reason}")
        return backend
    preferred = {"cuda": "cupy", "cpu": "cpp"}.get(x.device.type)
    reason = None if preferred is None else backend_unavailable_reason(preferred, x, surrogate)
    if preferred is not None and reason is None:
        _say_once(f"graphspike_kd neurons: backend='auto' chose {preferred!r} for {x.dtype} on {x.device}",
                  warn=False)
        return preferred
    torch_reason = backend_unavailable_reason("torch", x, surrogate)
    if torch_reason is not None:
        raise TypeError(f"{who}(backend='auto') cannot run: {reason or ''} {torch_reason}".strip())
    why = reason.strip().splitlines()[0] if reason else "no faster backend for this device"  # one line
    _say_once(f"graphspike_kd neurons: backend='auto' chose 'torch' for {x.device} tensors: {why}",
              warn=x.device.type == "cuda")
    return "torch"


# ------------------------------------------------------------------------------------------ entry points
_EAGER = {"torch": TorchNeuronFunction}


def run_multistep(x_seq: Tensor, v_init: Tensor, decay: Tensor, cfg: NeuronConfig, backend: str = "torch",
                  who: str = "neuron_multistep") -> tuple[Tensor, Tensor]:
    """Resolve ``backend``, check the arguments and run: the one eager/compile switch of the package."""
    impl = resolve_backend(backend, x_seq, cfg.surrogate, who)
    if impl != "cupy":  # the kernels validate their own operands (neuron_multistep_op)
        check_multistep_args(x_seq, v_init, decay, v_threshold=cfg.v_threshold, v_reset=cfg.v_reset,
                             where=who)
    if impl == "cpp":  # the C++ operator with its C++ autograd, eager and compiled alike
        return native.cpp_neuron(x_seq, v_init, decay, cfg)
    if impl == "cupy" or torch.compiler.is_compiling():  # one opaque custom op instead of a graph break
        return neuron_multistep_op(x_seq, v_init, decay, cfg, impl)
    return _EAGER[impl].apply(x_seq, v_init, decay, cfg)


def neuron_multistep(
    x_seq: Tensor,
    v_init: Tensor,
    decay: Tensor | float,
    *,
    backend: str = "torch",
    v_threshold: float = 1.0,
    v_reset: float | None = None,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate_name: str = "sigmoid",
    alpha: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Run a generic IF/LIF/PLIF neuron over ``T`` steps (equations in the module docstring).

    Args:
        x_seq (Tensor): input currents :math:`X`, shape ``[T, ...]``.
        v_init (Tensor): membrane before the first step, shape ``[...]`` (``x_seq.shape[1:]``).
        decay (Tensor or float): 0-dim decay factor :math:`k` (``1/tau`` for LIF, ``sigmoid(w)`` for PLIF,
            ``0`` for IF); may require grad, then :math:`\partial L/\partial k` is computed.
        backend (str, optional): ``"torch"``, ``"cpp"``, ``"cupy"`` or ``"auto"``. (default: ``"torch"``)
        v_threshold (float, optional): firing threshold :math:`\vartheta`. (default: ``1.0``)
        v_reset (float or None, optional): hard-reset value :math:`V_r`; ``None`` means soft reset
            (subtract the threshold). (default: ``None``)
        decay_input (bool, optional): whether the input is scaled by :math:`k`. (default: ``True``)
        detach_reset (bool, optional): stop the gradient through the spike used in the reset.
            (default: ``False``)
        surrogate_name (str, optional): surrogate of the Heaviside derivative, see
            :func:`graphspike_kd.spiking.surrogate.available_surrogates`. (default: ``"sigmoid"``)
        alpha (float or None, optional): surrogate sharpness; ``None`` uses the surrogate's default.
            (default: ``None``)

    Returns:
        ``(spikes, v_last)``: spikes ``[T, ...]`` (0/1 in ``x_seq.dtype``) and the membrane after the last
        step ``[...]``; both differentiable w.r.t. ``x_seq``, ``v_init`` and ``decay``.

    Raises:
        ValueError: bad shapes or options. RuntimeError: an explicit backend that cannot run here.
    """
    cfg = make_config(v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha)
    if not isinstance(decay, Tensor):
        decay = torch.tensor(float(decay), device=x_seq.device if isinstance(x_seq, Tensor) else None)
    return run_multistep(x_seq, v_init, decay, cfg, backend, who=f"neuron_multistep_{backend}")


def neuron_multistep_torch(
    x_seq: Tensor,
    v_init: Tensor,
    decay: Tensor | float,
    *,
    v_threshold: float = 1.0,
    v_reset: float | None = None,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate_name: str = "sigmoid",
    alpha: float | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`neuron_multistep` with ``backend="torch"``: every device and float dtype; saves only the
    pre-fire membrane ``h_seq`` (plus ``x_seq`` and ``v_init`` when ``decay`` requires grad), no
    ``T``-deep autograd graph."""
    return neuron_multistep(x_seq, v_init, decay, backend="torch", v_threshold=v_threshold, v_reset=v_reset,
                            decay_input=decay_input, detach_reset=detach_reset, surrogate_name=surrogate_name,
                            alpha=alpha)


def neuron_multistep_cpp(
    x_seq: Tensor,
    v_init: Tensor,
    decay: Tensor | float,
    *,
    v_threshold: float = 1.0,
    v_reset: float | None = None,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate_name: str = "sigmoid",
    alpha: float | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`neuron_multistep` with ``backend="cpp"``: float32/float64 CPU tensors; saves only ``x_seq``
    and ``v_init`` (the backward recomputes the membranes). Raises ``RuntimeError`` for other tensors or
    when the kernel cannot be built."""
    return neuron_multistep(x_seq, v_init, decay, backend="cpp", v_threshold=v_threshold, v_reset=v_reset,
                            decay_input=decay_input, detach_reset=detach_reset, surrogate_name=surrogate_name,
                            alpha=alpha)


def neuron_multistep_cupy(
    x_seq: Tensor,
    v_init: Tensor,
    decay: Tensor | float,
    *,
    v_threshold: float = 1.0,
    v_reset: float | None = None,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate_name: str = "sigmoid",
    alpha: float | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`neuron_multistep` with ``backend="cupy"``: float32/float16 CUDA tensors, surrogates with a
    CUDA kernel; saves one fp32 ``h_seq``. Arithmetic is fp32 for fp16 inputs too (rounded once when
    stored). Raises ``RuntimeError`` for non-CUDA tensors or when CuPy cannot run (with its reason)."""
    if not isinstance(x_seq, Tensor) or x_seq.device.type != "cuda":
        where = x_seq.device if isinstance(x_seq, Tensor) else type(x_seq).__name__
        raise RuntimeError(f"neuron_multistep_cupy needs CUDA tensors, got x_seq on {where}; use "
                           "backend='torch' for CPU tensors")
    return neuron_multistep(x_seq, v_init, decay, backend="cupy", v_threshold=v_threshold, v_reset=v_reset,
                            decay_input=decay_input, detach_reset=detach_reset, surrogate_name=surrogate_name,
                            alpha=alpha)
