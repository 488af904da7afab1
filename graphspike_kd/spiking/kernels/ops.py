r"""The multi-step neuron kernels as ``torch.library`` custom ops (visible to ``torch.compile``).

Two ops, both functional (no mutated arguments):

- ``graphspike_kd::neuron_multistep_forward(x_seq, v_init, decay, ...) -> (spikes, v_last, h_seq)``
- ``graphspike_kd::neuron_multistep_backward(grad_spikes, grad_v_last, h_seq, x_seq, v_init, decay, ...)
  -> (grad_x, grad_v_init, grad_decay)``

The forward is differentiable through ``register_autograd`` (its backward calls the backward op), and
both have fake (meta) implementations, so ``torch.compile(fullgraph=True)`` traces them without a graph
break. Memory: the forward keeps one fp32 ``[T, ...]`` tensor (``h_seq``) for the backward, plus a
reference to ``x_seq`` only when ``dL/d decay`` is needed with ``decay_input=True``.

The ops dispatch on the device type through :data:`LAUNCHERS`; only ``"cuda"`` (CuPy) is registered.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from graphspike_kd.spiking.kernels.cupy_backend import CupyLauncher, require_cupy
from graphspike_kd.spiking.kernels.sources import KernelConfig, surrogate_id

_DTYPES = {torch.float32: "float32", torch.float16: "float16"}


class Launcher(Protocol):
    def forward(self, config: KernelConfig, x: Tensor, v_init: Tensor, decay: Tensor, spikes: Tensor,
                h_seq: Tensor | None, v_last: Tensor, *, v_threshold: float, v_reset: float) -> None: ...

    def backward(self, config: KernelConfig, grad_spikes: Tensor, grad_v_last: Tensor, h_seq: Tensor,
                 x: Tensor | None, v_init: Tensor | None, decay: Tensor, grad_x: Tensor, grad_v_init: Tensor,
                 *, v_threshold: float, v_reset: float, alpha: float, decay_grad: bool) -> Tensor: ...


#: Device type -> kernel launcher. Only CUDA (CuPy) ships; tests plug in the host-compiled arithmetic.
LAUNCHERS: dict[str, Launcher] = {"cuda": CupyLauncher()}


def _launcher(device: torch.device) -> Launcher:
    launcher = LAUNCHERS.get(device.type)
    if launcher is None:
        raise RuntimeError(
            f"the CuPy neuron kernels run on CUDA tensors only, got a tensor on {device}; "
            "use backend='torch' for CPU tensors"
        )
    return launcher


def _check_operands(device: torch.device, decay: Tensor, **tensors: Tensor) -> None:
    """The kernels dereference every pointer on ``device`` and read k as one fp32 value."""
    if decay.dtype != torch.float32 or decay.numel() != 1 or decay.device != device:
        raise ValueError(
            f"decay must be a single float32 value on {device}, got dtype {decay.dtype}, shape "
            f"{tuple(decay.shape)} on {decay.device} (neuron_multistep_cupy converts it for you)"
        )
    for name, tensor in tensors.items():
        if tensor.device != device:
            raise ValueError(f"{name} is on {tensor.device} but the kernels run on {device}")


def _config(dtype: torch.dtype, surrogate_name: str, v_reset: float | None, detach_reset: bool,
            decay_input: bool) -> KernelConfig:
    if dtype not in _DTYPES:
        raise TypeError(
            f"the CuPy neuron kernels support float32 and float16 inputs, got {dtype}; "
            "cast the input (bfloat16 is not supported by CuPy) or use backend='torch'"
        )
    return KernelConfig(_DTYPES[dtype], surrogate_name, v_reset is not None, detach_reset, decay_input)


@torch.library.custom_op("graphspike_kd::neuron_multistep_forward", mutates_args=())
def neuron_multistep_forward(
    x_seq: Tensor,
    v_init: Tensor,
    decay: Tensor,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate_name: str,
    alpha: float,
    save_h: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Spikes ``[T, ...]``, last membrane ``[...]`` and (if ``save_h``) fp32 ``h_seq`` ``[T, ...]``."""
    config = _config(x_seq.dtype, surrogate_name, v_reset, detach_reset, decay_input)
    launcher = _launcher(x_seq.device)
    _check_operands(x_seq.device, decay, v_init=v_init)
    x = x_seq.contiguous()
    v0 = v_init.contiguous()
    spikes = torch.empty_like(x)
    v_last = torch.empty_like(v0)
    h_seq = torch.empty(x.shape if save_h else (0,), dtype=torch.float32, device=x.device)
    launcher.forward(config, x, v0, decay.contiguous(), spikes, h_seq if save_h else None, v_last,
                     v_threshold=v_threshold, v_reset=0.0 if v_reset is None else v_reset)
    return spikes, v_last, h_seq


@neuron_multistep_forward.register_fake
def _(x_seq, v_init, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha, save_h):
    spikes = torch.empty(x_seq.shape, dtype=x_seq.dtype, device=x_seq.device)
    v_last = torch.empty(v_init.shape, dtype=v_init.dtype, device=v_init.device)
    h_seq = torch.empty(x_seq.shape if save_h else (0,), dtype=torch.float32, device=x_seq.device)
    return spikes, v_last, h_seq


@torch.library.custom_op("graphspike_kd::neuron_multistep_backward", mutates_args=())
def neuron_multistep_backward(
    grad_spikes: Tensor,
    grad_v_last: Tensor,
    h_seq: Tensor,
    x_seq: Tensor,
    v_init: Tensor,
    decay: Tensor,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate_name: str,
    alpha: float,
    decay_grad: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``grad_x`` ``[T, ...]``, ``grad_v_init`` ``[...]`` and a 0-dim fp32 ``grad_decay``."""
    config = _config(grad_spikes.dtype, surrogate_name, v_reset, detach_reset, decay_input)
    launcher = _launcher(h_seq.device)
    _check_operands(h_seq.device, decay, grad_spikes=grad_spikes, grad_v_last=grad_v_last, x_seq=x_seq,
                    v_init=v_init)
    if h_seq.dtype != torch.float32 or h_seq.shape != grad_spikes.shape:
        raise ValueError(
            f"h_seq must be the float32 [T, ...] tensor saved by the forward "
            f"(shape {tuple(grad_spikes.shape)}), got {h_seq.dtype} {tuple(h_seq.shape)}"
        )
    g_s = grad_spikes.contiguous()
    g_v = grad_v_last.contiguous()
    grad_x = torch.empty_like(g_s)
    grad_v_init = torch.empty_like(g_v)
    grad_decay = launcher.backward(
        config, g_s, g_v, h_seq.contiguous(),
        x_seq.contiguous() if decay_grad and decay_input else None,
        v_init.contiguous() if decay_grad else None,
        decay.contiguous(), grad_x, grad_v_init,
        v_threshold=v_threshold, v_reset=0.0 if v_reset is None else v_reset, alpha=alpha,
        decay_grad=decay_grad,
    )
    return grad_x, grad_v_init, grad_decay


@neuron_multistep_backward.register_fake
def _(grad_spikes, grad_v_last, h_seq, x_seq, v_init, decay, v_threshold, v_reset, decay_input,
      detach_reset, surrogate_name, alpha, decay_grad):
    grad_x = torch.empty(grad_spikes.shape, dtype=grad_spikes.dtype, device=grad_spikes.device)
    grad_v_init = torch.empty(grad_v_last.shape, dtype=grad_v_last.dtype, device=grad_v_last.device)
    grad_decay = torch.empty((), dtype=torch.float32, device=grad_spikes.device)
    return grad_x, grad_v_init, grad_decay


def _setup_context(ctx, inputs, output) -> None:
    (x_seq, v_init, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha,
     save_h) = inputs
    _, _, h_seq = output
    decay_grad = bool(ctx.needs_input_grad[2])
    ctx.mark_non_differentiable(h_seq)
    ctx.set_materialize_grads(False)  # no zero-filled [T, ...] gradient for the unused h_seq output
    ctx.save_for_backward(
        h_seq,
        x_seq if decay_grad and decay_input else None,
        v_init if decay_grad else None,
        decay,
    )
    ctx.options = (v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha, save_h)
    ctx.shapes = (x_seq.shape, x_seq.dtype, v_init.shape)


def _backward(ctx, grad_spikes, grad_v_last, grad_h_seq):
    h_seq, x_seq, v_init, decay = ctx.saved_tensors
    v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha, save_h = ctx.options
    x_shape, dtype, v_shape = ctx.shapes
    if not save_h:
        raise RuntimeError(
            "graphspike_kd::neuron_multistep_forward ran with save_h=False but a gradient was requested; "
            "call it with save_h=True when its inputs require grad"
        )
    if grad_spikes is None and grad_v_last is None:
        return None, None, None, None, None, None, None, None, None, None
    if grad_spikes is None:
        grad_spikes = torch.zeros(x_shape, dtype=dtype, device=h_seq.device)
    if grad_v_last is None:
        grad_v_last = torch.zeros(v_shape, dtype=dtype, device=h_seq.device)
    decay_grad = bool(ctx.needs_input_grad[2])
    empty = h_seq.new_empty(0, dtype=dtype)
    grad_x, grad_v_init, grad_decay = neuron_multistep_backward(
        grad_spikes, grad_v_last.to(dtype), h_seq,
        x_seq if x_seq is not None else empty, v_init if v_init is not None else empty, decay,
        v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha, decay_grad,
    )
    return (
        grad_x if ctx.needs_input_grad[0] else None,
        grad_v_init if ctx.needs_input_grad[1] else None,
        grad_decay if decay_grad else None,
        None, None, None, None, None, None, None,
    )


neuron_multistep_forward.register_autograd(_backward, setup_context=_setup_context)


def _validate(x_seq: Tensor, v_init: Tensor, decay: Tensor, v_threshold: float, v_reset: float | None,
              surrogate_name: str, alpha: float) -> None:
    if x_seq.dim() < 1 or x_seq.shape[0] < 1:
        raise ValueError(f"x_seq must be [T, ...] with T >= 1, got shape {tuple(x_seq.shape)}")
    if tuple(v_init.shape) != tuple(x_seq.shape[1:]):
        raise ValueError(
            f"v_init must have shape x_seq.shape[1:] = {tuple(x_seq.shape[1:])}, got {tuple(v_init.shape)}"
        )
    if v_init.dtype != x_seq.dtype:
        raise TypeError(f"v_init dtype {v_init.dtype} must match x_seq dtype {x_seq.dtype}")
    if v_init.device != x_seq.device:
        raise ValueError(f"v_init is on {v_init.device} but x_seq is on {x_seq.device}")
    if decay.numel() != 1:
        raise ValueError(f"decay must be a single value (0-dim tensor), got shape {tuple(decay.shape)}")
    if not decay.is_floating_point():
        raise TypeError(f"decay must be a floating-point tensor, got {decay.dtype}")
    surrogate_id(surrogate_name)
    if not alpha > 0:
        raise ValueError(f"surrogate alpha must be > 0, got {alpha}")
    if v_reset is not None and v_reset >= v_threshold:
        raise ValueError(f"v_reset ({v_reset}) must be below v_threshold ({v_threshold})")


def neuron_multistep(
    x_seq: Tensor,
    v_init: Tensor,
    decay: Tensor | float,
    *,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate_name: str,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    """Device-dispatching core of :func:`neuron_multistep_cupy` (no CUDA/CuPy check of its own)."""
    if not isinstance(decay, Tensor):
        decay = torch.tensor(float(decay))
    _validate(x_seq, v_init, decay, v_threshold, v_reset, surrogate_name, alpha)
    # The kernels read k as fp32 from device memory; the cast is part of the autograd graph, so a
    # gradient reaches a decay of any dtype or device (e.g. PLIF's sigmoid(w) in fp32 under AMP).
    decay32 = decay.reshape(()).to(device=x_seq.device, dtype=torch.float32)
    save_h = torch.is_grad_enabled() and any(t.requires_grad for t in (x_seq, v_init, decay32))
    spikes, v_last, _ = neuron_multistep_forward(
        x_seq, v_init, decay32, float(v_threshold), None if v_reset is None else float(v_reset),
        bool(decay_input), bool(detach_reset), surrogate_name, float(alpha), save_h,
    )
    return spikes, v_last


def neuron_multistep_cupy(
    x_seq: Tensor,
    v_init: Tensor,
    decay: Tensor | float,
    *,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate_name: str,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    r"""Multi-step IF / LIF / PLIF neuron on the GPU with fused CuPy kernels.

    .. math::
        h_t &= v_{t-1} + k\,(x_t - (v_{t-1} - v_r)) \quad (\text{decay\_input}) \qquad
        h_t = v_{t-1} - k\,(v_{t-1} - v_r) + x_t \quad (\text{otherwise}) \\
        s_t &= \Theta(h_t - \vartheta) \\
        v_t &= h_t - \vartheta s_t \ (\text{soft}) \qquad
        v_t = h_t (1 - s_t) + v_{\text{reset}} s_t \ (\text{hard})

    with :math:`v_r = v_{\text{reset}}` (hard reset) or 0 (soft reset) and :math:`v_{-1}` = ``v_init``.
    LIF uses :math:`k = 1/\tau`, PLIF :math:`k = \mathrm{sigmoid}(w)` (pass the tensor; the gradient
    :math:`\partial L/\partial k` flows back to it), IF :math:`k = 0` with ``decay_input=False``. The
    backward uses the surrogate derivative at :math:`h_t - \vartheta`; with ``detach_reset`` the spike in
    the reset carries no gradient. Arithmetic is fp32 for fp16 inputs too (rounded once when stored).

    Args:
        x_seq: input current ``[T, ...]``, CUDA, float32 or float16 (any strides).
        v_init: membrane before step 0, shape ``x_seq.shape[1:]``, same dtype and device.
        decay: the decay factor :math:`k` (0-dim tensor, may require grad, or a float).
        v_threshold: firing threshold :math:`\vartheta`.
        v_reset: reset value (hard reset) or ``None`` (soft reset).
        decay_input: whether the input is scaled by :math:`k`.
        detach_reset: whether the reset's spike is detached from the graph.
        surrogate_name: ``"sigmoid"``, ``"atan"``, ``"rectangle"``, ``"triangle"`` or ``"fast_sigmoid"``.
        alpha: the surrogate's sharpness parameter.

    Returns:
        ``(spikes [T, ...] in x_seq's dtype, v_last [...])``, both differentiable w.r.t. ``x_seq``,
        ``v_init`` and ``decay``.

    Raises:
        RuntimeError: for non-CUDA tensors, or when :func:`cupy_status` is ``False`` (with its reason).
        ValueError / TypeError: for bad shapes, dtypes, surrogate names or parameters.
    """
    if x_seq.device.type != "cuda":
        raise RuntimeError(
            f"neuron_multistep_cupy needs CUDA tensors, got x_seq on {x_seq.device}; "
            "use backend='torch' for CPU tensors"
        )
    require_cupy()
    return neuron_multistep(
        x_seq, v_init, decay, v_threshold=v_threshold, v_reset=v_reset, decay_input=decay_input,
        detach_reset=detach_reset, surrogate_name=surrogate_name, alpha=alpha,
    )
