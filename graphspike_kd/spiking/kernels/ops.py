r"""The CUDA multi-step neuron (``backend="cupy"``): one forward and one backward kernel launch.

A leaf implementation of :mod:`graphspike_kd.spiking.functional`, whose ``graphspike_kd::neuron_forward``
/ ``neuron_backward`` custom ops call :func:`cupy_forward` and :func:`cupy_backward` for
``impl="cupy"`` (equations in :mod:`graphspike_kd.spiking.torch_loop` and ``neuron_math.cuh``). The
forward keeps one fp32 ``[T, ...]`` tensor (``h_seq``) for the backward; fp16 inputs are computed in fp32
and rounded once on store.

Both functions pick the launcher for the tensors' device type from :data:`LAUNCHERS`; only ``"cuda"``
(CuPy) ships, tests plug in the host-compiled arithmetic for CPU tensors.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from graphspike_kd.spiking.kernels.cupy_backend import CupyLauncher
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


def cupy_forward(x_seq: Tensor, v_init: Tensor, decay: Tensor, v_threshold: float, v_reset: float | None,
                 decay_input: bool, detach_reset: bool, surrogate_name: str, alpha: float,
                 save_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Spikes ``[T, ...]``, last membrane ``[...]`` and (if ``save_h``, else an empty tensor) the fp32
    ``h_seq`` ``[T, ...]``. ``decay`` is a 0-dim float32 tensor on the tensors' device."""
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


def cupy_backward(grad_spikes: Tensor, grad_v_last: Tensor, h_seq: Tensor, x_seq: Tensor, v_init: Tensor,
                  decay: Tensor, v_threshold: float, v_reset: float | None, decay_input: bool,
                  detach_reset: bool, surrogate_name: str, alpha: float,
                  decay_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``grad_x`` ``[T, ...]``, ``grad_v_init`` ``[...]`` and a 0-dim fp32 ``grad_decay`` (zero unless
    ``decay_grad``; ``x_seq`` is read only then with ``decay_input``, ``v_init`` only then)."""
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


def validate(x_seq: Tensor, v_init: Tensor, decay: Tensor, v_threshold: float, v_reset: float | None,
              surrogate_name: str, alpha: float) -> None:
    """Shapes, dtypes and options the kernels accept; raises ``ValueError``/``TypeError`` naming them."""
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
