"""``torch.library`` custom ops for the multi-step neuron, so ``torch.compile`` sees one opaque op.

In eager mode :func:`~graphspike_kd.spiking.functional.neuron_multistep_torch` and
:func:`~graphspike_kd.spiking.native.neuron_multistep_cpp` run their autograd Functions directly (least
overhead). While ``torch.compile`` traces, they call these ops instead: ``graphspike_kd::neuron_forward``
and ``graphspike_kd::neuron_backward``, with fake (meta) implementations and an autograd formula, so a
compiled model keeps the fused neuron as one node instead of breaking the graph (the torch path reads the
decay as a Python number, which Dynamo cannot trace) or unrolling the time loop.

``impl`` selects the time loop: ``"torch"`` (any device) or ``"cpp"`` (native CPU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from graphspike_kd.spiking.functional import _Config, torch_backward_loop, torch_forward_loop
from graphspike_kd.spiking.surrogate import get_surrogate

__all__ = ["neuron_forward", "neuron_backward", "neuron_multistep_op"]


def _cfg(v_threshold: float, v_reset: float | None, decay_input: bool, detach_reset: bool,
         surrogate_name: str, alpha: float) -> _Config:
    return _Config(v_threshold, v_reset, decay_input, detach_reset, get_surrogate(surrogate_name, alpha))


def _loops(impl: str):
    if impl == "torch":
        return torch_forward_loop, torch_backward_loop
    if impl == "cpp":
        from graphspike_kd.spiking.native import cpp_backward_loop, cpp_forward_loop

        def backward(gs, gv, h, s, x, u0, k, cfg, want_k):  # the native loop recomputes spikes from h
            return cpp_backward_loop(gs, gv, h, x, u0, k, cfg, want_k)

        return cpp_forward_loop, backward
    raise ValueError(f"graphspike_kd::neuron ops: impl must be 'torch' or 'cpp', got {impl!r}")


@torch.library.custom_op("graphspike_kd::neuron_forward", mutates_args=())
def neuron_forward(x_seq: Tensor, v_init: Tensor, decay: Tensor, v_threshold: float, v_reset: float | None,
                   decay_input: bool, detach_reset: bool, surrogate_name: str, alpha: float,
                   impl: str) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(spikes [T, ...], v_last [...], h_seq [T, ...])``."""
    forward, _ = _loops(impl)
    T = x_seq.shape[0]
    x = x_seq.reshape(T, -1)
    s, h, v = forward(x, v_init.reshape(-1).to(x.dtype), float(decay),
                      _cfg(v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha))
    return s.view(x_seq.shape), v.view(v_init.shape).clone(), h.view(x_seq.shape)


@neuron_forward.register_fake
def _(x_seq, v_init, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha, impl):
    return torch.empty_like(x_seq), torch.empty_like(v_init), torch.empty_like(x_seq)


@torch.library.custom_op("graphspike_kd::neuron_backward", mutates_args=())
def neuron_backward(grad_spikes: Tensor, grad_v_last: Tensor, h_seq: Tensor, spikes: Tensor, x_seq: Tensor,
                    v_init: Tensor, decay: Tensor, v_threshold: float, v_reset: float | None,
                    decay_input: bool, detach_reset: bool, surrogate_name: str, alpha: float, impl: str,
                    want_k: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(grad_x, grad_v_init, grad_decay)`` (``grad_decay`` is 0 when ``want_k`` is false)."""
    _, backward = _loops(impl)
    T = h_seq.shape[0]
    h = h_seq.reshape(T, -1)
    cfg = _cfg(v_threshold, v_reset, decay_input, detach_reset, surrogate_name, alpha)
    x = x_seq.reshape(T, -1) if want_k else None
    u0 = v_init.reshape(-1).to(h.dtype) if want_k else None
    s = spikes.reshape(T, -1) if v_reset is not None else None
    gx, gv, gk = backward(grad_spikes, grad_v_last, h, s, x, u0, float(decay), cfg, want_k)
    gk = torch.zeros((), dtype=decay.dtype, device=decay.device) if gk is None else gk.to(decay)
    return gx.view(h_seq.shape), gv.view(v_init.shape).to(v_init.dtype), gk


@neuron_backward.register_fake
def _(grad_spikes, grad_v_last, h_seq, spikes, x_seq, v_init, decay, v_threshold, v_reset, decay_input,
      detach_reset, surrogate_name, alpha, impl, want_k):
    return torch.empty_like(h_seq), torch.empty_like(v_init), torch.empty_like(decay)


_ARG_NAMES = ("v_threshold", "v_reset", "decay_input", "detach_reset", "surrogate_name", "alpha", "impl")


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    x_seq, v_init, decay, *params = inputs
    spikes, _, h_seq = output
    ctx.params = params
    ctx.want_k = bool(ctx.needs_input_grad[2])
    ctx.mark_non_differentiable(h_seq)
    if not ctx.want_k:  # x and v_init are needed only for the decay gradient
        x_seq, v_init = x_seq.new_empty(0), v_init.new_empty(v_init.shape)
    ctx.save_for_backward(h_seq, spikes, x_seq, v_init, decay)


def _backward(ctx: Any, grad_spikes: Tensor, grad_v_last: Tensor, grad_h: Tensor | None) -> tuple:
    h_seq, spikes, x_seq, v_init, decay = ctx.saved_tensors
    gx, gv, gk = neuron_backward(grad_spikes.contiguous(), grad_v_last.contiguous(), h_seq, spikes, x_seq,
                                 v_init, decay, *ctx.params, ctx.want_k)
    return (gx, gv, gk if ctx.want_k else None) + (None,) * len(_ARG_NAMES)


neuron_forward.register_autograd(_backward, setup_context=_setup_context)


def neuron_multistep_op(x_seq: Tensor, v_init: Tensor, decay: Tensor, cfg: _Config,
                        impl: str) -> tuple[Tensor, Tensor]:
    """``(spikes, v_last)`` through the custom op (what the functional API uses under ``torch.compile``)."""
    spikes, v_last, _ = neuron_forward(x_seq, v_init, decay, cfg.v_threshold, cfg.v_reset, cfg.decay_input,
                                       cfg.detach_reset, cfg.surrogate.name, cfg.surrogate.alpha, impl)
    return spikes, v_last
