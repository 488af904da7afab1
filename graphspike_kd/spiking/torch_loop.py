r"""The torch multi-step neuron (``backend="torch"``): the time loop in torch, one autograd Function.

A leaf implementation of :mod:`graphspike_kd.spiking.functional`, which dispatches to it; it runs on every
device and float dtype and is the reference the native CPU and CUDA kernels are tested against. The
generic neuron has decay factor :math:`k` (LIF: :math:`1/\tau`, PLIF: :math:`\sigma(w)`,
IF: :math:`0` with ``decay_input=False``) and :math:`V_r` = ``v_reset`` (hard reset) or 0 (soft reset):

.. math::
    H[t] &= V[t-1] + k\,\big(X[t] - (V[t-1] - V_r)\big) && \text{decay\_input=True} \\
    H[t] &= V[t-1] - k\,(V[t-1] - V_r) + X[t] && \text{decay\_input=False} \\
    S[t] &= \Theta(H[t] - \vartheta) \quad (\text{backward: } g'(H[t] - \vartheta)) \\
    V[t] &= H[t] - \vartheta S[t] \;\;\text{(soft)} \qquad V[t] = H[t](1 - S[t]) + V_r S[t]
        \;\;\text{(hard)}

Backward is the reverse-time recursion (per neuron, :math:`t = T-1 \dots 0`, with
:math:`\bar S = S` detached when ``detach_reset``):

.. math::
    \frac{\partial V[t]}{\partial H[t]} &= 1 - \vartheta\, g'_t\,[\neg\text{detach}] \;\;\text{(soft)},
    \qquad 1 - S[t] + (V_r - H[t])\, g'_t\,[\neg\text{detach}] \;\;\text{(hard)} \\
    \frac{\partial L}{\partial H[t]} &= \frac{\partial L}{\partial V[t]}\frac{\partial V[t]}{\partial H[t]}
        + \frac{\partial L}{\partial S[t]}\, g'_t, \qquad
    \frac{\partial L}{\partial V[t-1]} = \frac{\partial L}{\partial H[t]}\,(1 - k), \qquad
    \frac{\partial L}{\partial X[t]} = \frac{\partial L}{\partial H[t]} \cdot (k \text{ or } 1) \\
    \frac{\partial L}{\partial k} &= \sum_{t, n} \frac{\partial L}{\partial H[t]}
        \big(X[t] - (V[t-1] - V_r)\big) \;\;\text{(decay\_input)}, \qquad
        -\sum_{t,n} \frac{\partial L}{\partial H[t]} (V[t-1] - V_r) \;\;\text{(otherwise)}

Internally the membrane is tracked relative to the reset value (:math:`U = V - V_r`, threshold
:math:`\vartheta - V_r`), which makes the hard reset a single multiply and keeps the soft reset
unchanged (:math:`V_r = 0`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from graphspike_kd.spiking.surrogate import SurrogateFunction, get_surrogate

__all__ = ["NeuronConfig", "TorchNeuronFunction", "check_multistep_args", "make_config", "torch_forward_loop",
           "torch_backward_loop", "check_finite_membrane", "non_finite_message", "CHECK_FINITE_CUDA"]

#: Whether the torch and CuPy paths also check CUDA membranes for NaN/inf (see
#: :func:`check_finite_membrane`). Off by default: on CUDA the check is a host synchronisation per neuron
#: call. CPU membranes are always checked (the native kernel counts them while writing them; the torch path
#: reads the ``[N]`` last membrane once, against ``T`` passes over ``[N]`` for the loop itself).
CHECK_FINITE_CUDA = False


class NeuronConfig(NamedTuple):
    """The constant options of one multi-step neuron call (shared by every implementation)."""

    v_threshold: float
    v_reset: float | None
    decay_input: bool
    detach_reset: bool
    surrogate: SurrogateFunction


def check_multistep_args(x_seq: Tensor, v_init: Tensor, decay: Tensor, *, v_threshold: float,
                         v_reset: float | None, where: str) -> None:
    """Validate the shared multi-step arguments; raises ``ValueError`` naming the offending value."""
    if not isinstance(x_seq, Tensor) or x_seq.dim() < 1:
        raise ValueError(f"{where}: x_seq must be a tensor of shape [T, ...], got {type(x_seq).__name__} "
                         f"{tuple(getattr(x_seq, 'shape', ()))}")
    if x_seq.shape[0] < 1:
        raise ValueError(f"{where}: x_seq has T = 0 time steps (shape {tuple(x_seq.shape)})")
    if not x_seq.is_floating_point():
        raise ValueError(f"{where}: x_seq must be floating point, got {x_seq.dtype}")
    if tuple(v_init.shape) != tuple(x_seq.shape[1:]):
        raise ValueError(f"{where}: v_init has shape {tuple(v_init.shape)} but x_seq {tuple(x_seq.shape)} "
                         f"needs {tuple(x_seq.shape[1:])}")
    if decay.dim() != 0:
        raise ValueError(f"{where}: decay must be a 0-dim tensor, got shape {tuple(decay.shape)}")
    if v_init.device != x_seq.device or decay.device != x_seq.device:
        raise ValueError(f"{where}: x_seq ({x_seq.device}), v_init ({v_init.device}) and decay "
                         f"({decay.device}) must be on one device")
    if v_reset is not None and not float(v_reset) < float(v_threshold):
        raise ValueError(f"{where}: v_reset ({v_reset}) must be below v_threshold ({v_threshold})")


def non_finite_message(count: int, n: int, k: float) -> str:
    """The ``ValueError`` text for ``count`` of ``n`` final membranes that are NaN or inf."""
    cause = f"the decay factor k = {k} (PLIF: sigmoid(w))" if not math.isfinite(k) else \
        "the input x_seq or the initial membrane v_init"
    return (f"neuron: {count} of {n} membranes are NaN or inf after the last step: {cause} contains NaN or "
            "inf (or the input overflowed); spikes from it would be silently all zero")


def check_finite_membrane(v_last: Tensor, k: float | Tensor) -> None:
    r"""Raise ``ValueError`` if the last membrane ``v_last`` has a NaN or inf (CUDA tensors only when
    :data:`CHECK_FINITE_CUDA`). A NaN or inf anywhere in :math:`X`, :math:`V[0]` or :math:`k` reaches the
    last membrane (``NaN >= th`` is false, so neither reset removes it; :math:`\infty - \infty` is NaN),
    so this ``[N]`` check covers the whole ``[T, N]`` input."""
    if v_last.device.type != "cpu" and not CHECK_FINITE_CUDA:
        return
    # screen with one sum (no [N] boolean temporary; NaN and inf reach it), confirm element-wise only when it
    # is not finite (a finite sum that overflowed is not an error)
    if v_last.numel() and not math.isfinite(float(v_last.sum())):
        bad = int((~torch.isfinite(v_last)).sum())
        if bad:
            raise ValueError(non_finite_message(bad, v_last.numel(), float(k)))


@functools.lru_cache(maxsize=256)
def make_config(v_threshold: float, v_reset: float | None, decay_input: bool, detach_reset: bool,
                surrogate_name: str, alpha: float | None) -> NeuronConfig:
    """A :class:`NeuronConfig` from plain values (``alpha=None``: the surrogate's default); cached, so
    equal values share one surrogate object."""
    return NeuronConfig(float(v_threshold), None if v_reset is None else float(v_reset), bool(decay_input),
                        bool(detach_reset), get_surrogate(surrogate_name, alpha))


def _reset_into(out: Tensor, h: Tensor, s: Tensor, threshold: float, soft: bool) -> Tensor:
    """Membrane after firing, relative to the reset value: soft ``h - th*s``, hard ``h*(1 - s)``."""
    if soft:
        return torch.sub(h, s, alpha=threshold, out=out)
    return torch.addcmul(h, h, s, value=-1.0, out=out)


class TorchNeuronFunction(torch.autograd.Function):
    """Forward/backward over the whole ``[T, N]`` sequence (see the module docstring).

    Saved for backward: ``h_seq`` (the pre-fire membrane, ``[T, N]``), the output spikes for a hard reset
    (soft reset recomputes what it needs from ``h_seq``) and, only when the decay needs a gradient (PLIF),
    ``x_seq`` and ``v_init``. Alive across forward + backward
    at most: ``x_seq`` (caller's), spikes (output), ``h_seq``, incoming ``grad_spikes`` and the returned
    ``grad_x`` -- four ``[T, N]`` tensors besides the input; everything else is ``[N]``.

    Each step is a handful of allocation-free elementwise passes (``out=`` into reused ``[N]`` buffers,
    which stay in cache); the decay is read once as a Python number (one device synchronisation per call
    on CUDA), and the hard-reset masks are float spikes, since boolean masks are several times slower on
    CPU. Under ``torch.compile`` the same loops run inside the custom op of
    :mod:`graphspike_kd.spiking.functional`. ``TorchNeuronFunction.apply(x_seq, v_init, decay, cfg)``.
    """

    @staticmethod
    def forward(ctx: Any, x_seq: Tensor, v_init: Tensor, decay: Tensor,
                cfg: NeuronConfig) -> tuple[Tensor, Tensor]:
        shape = x_seq.shape
        x = x_seq.detach().reshape(shape[0], -1)
        u0 = v_init.detach().reshape(-1).to(x.dtype)
        k = float(decay)
        want_k = ctx.needs_input_grad[2]
        s_seq, h_seq, v_last = torch_forward_loop(x, u0, k, cfg)
        check_finite_membrane(v_last, k)
        ctx.cfg = cfg
        ctx.consts = (k, shape, v_init.shape, decay.dtype)
        # a hard reset needs the spikes in backward: keep the output (alive anyway) instead of recomputing
        s_saved = s_seq if cfg.v_reset is not None else None
        if want_k:
            ctx.save_for_backward(h_seq, s_saved, x, u0)
        else:
            ctx.save_for_backward(h_seq, s_saved)
        return s_seq.view(shape), v_last.view(v_init.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_spikes: Tensor, grad_v_last: Tensor) -> tuple[Tensor | None, ...]:
        k, x_shape, v_shape, decay_dtype = ctx.consts
        saved = ctx.saved_tensors
        want_k = ctx.needs_input_grad[2]
        x, u0 = (saved[2], saved[3]) if want_k else (None, None)
        grad_x, grad_v, grad_k = torch_backward_loop(grad_spikes, grad_v_last, saved[0], saved[1], x, u0, k,
                                                     ctx.cfg, want_k)
        return (grad_x.view(x_shape), grad_v.view(v_shape) if ctx.needs_input_grad[1] else None,
                grad_k.to(decay_dtype) if want_k else None, None)


def torch_forward_loop(x: Tensor, u0: Tensor, k: float, cfg: NeuronConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Forward time loop on ``x`` ``[T, N]`` from the membrane ``u0`` ``[N]`` with decay ``k``; returns
    ``(spikes, h_seq, v_last)`` (``h_seq`` relative to the reset value). No autograd."""
    T = x.shape[0]
    if not x.is_contiguous():
        x = x.contiguous()
    v_r = 0.0 if cfg.v_reset is None else float(cfg.v_reset)
    th = float(cfg.v_threshold) - v_r
    soft = cfg.v_reset is None
    u = u0 - v_r if v_r != 0.0 else u0.clone()
    h_seq = torch.empty_like(x)
    s_seq = torch.empty_like(x)
    for t in range(T):
        ht = h_seq[t]
        if cfg.decay_input:
            torch.lerp(u, x[t], k, out=ht)
        else:
            torch.add(x[t], u, alpha=1.0 - k, out=ht)
        st = s_seq[t]
        torch.ge(ht, th, out=st)
        _reset_into(u, ht, st, th, soft)
    v_last = u.add_(v_r) if v_r != 0.0 else u
    return s_seq, h_seq, v_last


def torch_backward_loop(grad_spikes: Tensor, grad_v_last: Tensor, h_seq: Tensor, s_seq: Tensor | None,
                        x: Tensor | None, u0: Tensor | None, k: float, cfg: NeuronConfig,
                        want_k: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Reverse-time loop; returns ``(grad_x [T, N], grad_v_init [N], grad_k (0-dim) or None)``.
    ``s_seq`` is needed for a hard reset (recomputed from ``h_seq`` when ``None``), ``x`` and ``u0`` for
    ``want_k``."""
    T, N = h_seq.shape
    dtype = h_seq.dtype
    v_r = 0.0 if cfg.v_reset is None else float(cfg.v_reset)
    th = float(cfg.v_threshold) - v_r
    soft = cfg.v_reset is None
    detach = cfg.detach_reset
    surrogate = cfg.surrogate
    omk = 1.0 - k
    is_if = not cfg.decay_input and k == 0.0 and not want_k  # gradient carried unscaled
    if not soft and s_seq is None:
        s_seq = torch.ge(h_seq, th).to(dtype)

    gs = grad_spikes.reshape(T, N).to(dtype)
    if not gs.is_contiguous():
        gs = gs.contiguous()
    c = grad_v_last.reshape(N).to(dtype).clone()  # dL/dU[t], carried backwards in time
    c_next = torch.empty_like(c)
    m = torch.empty_like(c)
    fired = torch.empty_like(c)
    sg = torch.empty_like(c)
    grad_x = torch.empty_like(h_seq)
    if want_k:
        assert x is not None and u0 is not None
        u_prev = torch.empty_like(c)
        acc = torch.zeros_like(c)
    for t in range(T - 1, -1, -1):
        ht = h_seq[t]
        gh = grad_x[t]  # dL/dH[t] is written here, scaled to dL/dX after the loop
        surrogate.derivative_at(ht, th, out=sg)
        if soft:
            if detach:
                torch.addcmul(c, gs[t], sg, out=gh)
            else:  # dL/dH = c (1 - th g') + gs g' = c + g' (gs - th c)
                torch.addcmul(c, sg, torch.add(gs[t], c, alpha=-th, out=m), out=gh)
        else:  # dL/dH = c (1 - s) + g' (gs + [not detach] (V_r - H) c)
            mt = gs[t] if detach else torch.addcmul(gs[t], ht, c, value=-1.0, out=m)
            torch.addcmul(c, c, s_seq[t], value=-1.0, out=fired)
            torch.addcmul(fired, sg, mt, out=gh)
        if want_k:
            if t == 0:
                torch.sub(u0, v_r, out=u_prev)
            else:
                hp = h_seq[t - 1]
                sp = torch.ge(hp, th, out=m) if soft else s_seq[t - 1]
                _reset_into(u_prev, hp, sp, th, soft)
            if cfg.decay_input:  # dH/dk = X - U[t-1]
                acc.addcmul_(gh, torch.sub(x[t], u_prev, out=m))
            else:  # dH/dk = -U[t-1]
                acc.addcmul_(gh, u_prev, value=-1.0)
        if is_if:
            c = gh
        else:
            c, c_next = torch.mul(gh, omk, out=c_next), c
    if cfg.decay_input:
        grad_x.mul_(k)
    grad_v = c.clone() if is_if else c
    return grad_x, grad_v, acc.sum() if want_k else None

