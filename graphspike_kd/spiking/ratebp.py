r"""Rate-based backpropagation (rate-BP): a no-graph spike pass plus one differentiable rate pass.

Yu, Liu, Wang, Li, Wang, "Advancing Training Efficiency of Deep Spiking Neural Networks through Rate-based
Backpropagation", NeurIPS 2024 (official code ``Tab-ct/rate-based-backpropagation``, which subclasses
spikingjelly 0.0.0.0.14 internals; this module runs on :mod:`graphspike_kd.spiking.neurons`).

A training step has two passes over the same model:

1. **Spike pass** (:func:`spike_pass`, no autograd graph): the ordinary ``T``-step SNN. Every
   :class:`RateBPNeuron` records, per neuron, its firing rate and eligibility

   .. math::
       r = \frac{1}{T}\sum_t S[t], \qquad e = \frac{1}{T}\sum_t g'(H[t] - \vartheta)\,\kappa_t,
       \qquad \kappa_t = \frac{\partial H[t]}{\partial \bar c}

   where :math:`\kappa_t` is the derivative of the membrane w.r.t. a *constant* input current
   :math:`\bar c`, carried forward in time (:math:`k` = decay, :math:`k_{in} = k` with ``decay_input``
   else 1, :math:`\lambda = 1 - k`, :math:`D_t = \partial V[t]/\partial \bar c`, :math:`D_0 = 0`):

   .. math::
       \kappa_t &= k_{in} + \lambda D_{t-1}, \qquad D_t = \kappa_t\,\rho_t, \\
       \rho_t &= 1 - [\neg\text{detach}]\,\vartheta\, g'_t \;\;\text{(soft reset)}, \qquad
       \rho_t = 1 - S[t] + [\neg\text{detach}]\,(V_r - H[t])\, g'_t \;\;\text{(hard reset)}.

   With the official neuron (``decay_input=False``, soft reset, ``detach_reset=True``) this is
   :math:`\kappa_t = 1 + \lambda\kappa_{t-1}`; soft, not detached, :math:`\kappa_t = 1 + \lambda
   \kappa_{t-1}(1 - \vartheta g'_{t-1})`; hard reset, :math:`\kappa_t = 1 + \lambda\kappa_{t-1}(1 - S[t-1]
   - [\neg\text{detach}] (H[t-1] - V_r) g'_{t-1})` (the exact derivative of the neuron, with the
   pre-reset membrane :math:`H[t-1]`). For a PLIF neuron the same recursion with
   :math:`\partial H[t]/\partial k` gives an eligibility :math:`e_k` of the learnable decay (our
   extension; the official code has no learnable decay). Every :class:`RateBPBatchNorm2d` normalises
   with the batch statistics of the time-flattened batch ``[T*N, C, H, W]``, records them, and updates
   its running statistics -- **only in this pass**.

2. **Rate pass** (:func:`rate_pass`, with graph): the network runs **once** (one "time step") on the
   time-averaged input :math:`\bar x` (static images: :math:`\bar x = x`). Linear layers act on rates;
   each BatchNorm uses the spike-pass statistics in value and the rate-batch statistics in gradient,
   :math:`\mu = \mathrm{sg}(\mu_{spike}) + \mu_{rate} - \mathrm{sg}(\mu_{rate})` (same for the
   variance); each neuron outputs

   .. math::
       \mathrm{out} = \mathrm{sg}(r) + e \odot \bar c - \mathrm{sg}(e \odot \bar c)
       \;\big(+\, e_k (k - \mathrm{sg}(k)) \text{ for PLIF}\big),

   i.e. the spike-pass rate in value and :math:`\mathrm{diag}(e)` as Jacobian. The readout is the
   classifier on the rates (= the mean over time of the logits, since the head is linear).

3. **Loss**: the gradient of the loss is scaled by :math:`1/T`, its value unchanged
   (:func:`scale_grad`), as in the official code: a convention that changes the effective learning
   rate (``grad_scale=1`` removes it). :func:`ratebp_loss` keeps the papers' :math:`1/T` by default;
   :class:`graphspike_kd.spiking.train.Trainer` defaults to ``grad_scale=1`` for rate-BP (see
   :data:`graphspike_kd.spiking.train.DEFAULT_GRAD_SCALE`).

Evaluation is the plain ``T``-step SNN (modules in ``"plain"`` mode, BN with running statistics). The
same model object also trains with BPTT (:func:`bptt_loss`, ``"plain"`` mode), so the two can be compared.

Execution modes of the spike pass: by default each layer runs over the whole ``[T*N, ...]`` batch
(the official ``rate_M``; transient memory grows with ``T``); ``lean=True`` calls the model ``T`` times
with one step each (``rate_S``; memory flat in ``T``); ``steps_per_call=c`` calls it ``ceil(T / c)``
times with ``c`` steps each (memory bounded by ``c`` steps, while the convolutions still see ``c*N``
samples per call). When the model is called on part of the time steps, every BatchNorm normalises that
call's steps with their own batch statistics (``lean``: a single-step SNN, as the official rate_S), while
the statistics recorded for the rate pass and the running statistics are pooled exactly over all ``T*N``
samples (inferred: the official rate_S normalises per step; the pooling for the rate pass is this
module's choice).

Rate-pass exactness needs only linear operations between neurons (conv, BN, avg-pool, add, flatten,
linear); :func:`check_rate_compatible` rejects max-pool and dropout.

With ``T = 1`` the rate-BP gradient equals the BPTT gradient; for one neuron layer driven by a constant
input it equals BPTT's gradient divided by ``T``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphspike_kd.spiking import native
from graphspike_kd.spiking.neurons import BaseNeuron, reset_net
from graphspike_kd.spiking.torch_loop import check_finite_membrane

__all__ = [
    "MODES",
    "RateBPModule",
    "RateBPNeuron",
    "RateBPBatchNorm1d",
    "RateBPBatchNorm2d",
    "fused_bn_neuron",
    "set_mode",
    "mode",
    "spike_pass",
    "rate_pass",
    "time_average",
    "scale_grad",
    "ratebp_loss",
    "bptt_loss",
    "convert_to_ratebp",
    "check_rate_compatible",
]

#: ``"plain"``: the ordinary SNN (BPTT training, evaluation); ``"spike"``: recording spike pass;
#: ``"rate"``: differentiable rate pass.
MODES = ("plain", "spike", "rate")


class RateBPModule(nn.Module):
    """Base of the modules whose behaviour depends on the rate-BP mode (set with :func:`set_mode`)."""

    ratebp_mode: str = "plain"

    def begin_spike_pass(self) -> None:  # clear what the previous spike pass recorded
        raise NotImplementedError

    def end_spike_pass(self) -> None:  # finalise what this spike pass recorded
        raise NotImplementedError


def _check_mode(value: str) -> str:
    if value not in MODES:
        raise ValueError(f"rate-BP mode must be one of {MODES}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- neuron
class _RateOutput(torch.autograd.Function):
    r"""The rate-pass neuron: value the recorded rate :math:`r`, Jacobian :math:`\mathrm{diag}(e)` w.r.t.
    the current, i.e. :math:`\mathrm{sg}(r) + e \odot c - \mathrm{sg}(e \odot c)` as one node (one output
    tensor and one product in the backward instead of three forward tensors and their graph)."""

    @staticmethod
    def forward(ctx: Any, c: Tensor, rate: Tensor, elig: Tensor) -> Tensor:
        ctx.save_for_backward(elig)
        return rate.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (elig,) = ctx.saved_tensors
        return grad * elig, None, None


class RateBPNeuron(RateBPModule):
    r"""A neuron of :mod:`graphspike_kd.spiking.neurons` made trainable by rate-BP.

    In ``"plain"`` mode it is the wrapped neuron (multi-step, ``[T, N, ...]``). In ``"spike"`` mode it
    simulates the same neuron without autograd, bit-identical spikes, reading the neuron's parameters
    (decay, ``v_threshold``, ``v_reset``, ``decay_input``, ``detach_reset``, surrogate), carries its
    membrane across calls (so the model can be stepped one time step at a time) and accumulates
    :math:`\sum_t S[t]` and the eligibility :math:`\sum_t g'_t \kappa_t` (module docstring). In
    ``"rate"`` mode it maps the time-averaged input current :math:`\bar c` to the recorded rate with
    Jacobian :math:`\mathrm{diag}(e)`. The spike pass follows the wrapped neuron's ``backend``:
    ``"cpp"`` records with the native CPU kernel (:func:`graphspike_kd.spiking.native.ratebp_record_cpp`,
    one pass over each layer's ``[T, N]`` input; same spikes, eligibilities equal to float rounding),
    every other backend with torch operations (on any device).

    With the ``"cpp"`` backend, a conv -> :class:`RateBPBatchNorm2d` -> neuron sequence of the library's
    models (``ConvBNNeuron``, the ResNet block's first half, the stem) runs its spike pass through
    :func:`fused_bn_neuron`: the BatchNorm is applied inside the recording kernel. Set ``fuse_bn = False``
    on a neuron to run its BatchNorm separately.

    Args:
        neuron (BaseNeuron): an :class:`~graphspike_kd.spiking.neurons.IF`, ``LIF`` or ``PLIF`` in
            multi-step mode.

    Shapes:
        - **input:** :math:`(T, N, *)` (plain / spike; spike mode accepts any number of steps per call),
          :math:`(1, N, *)` (rate: the time-averaged current)
        - **output:** spikes :math:`(T, N, *)`; rate mode: the rates :math:`(1, N, *)`
    """

    #: let :func:`fused_bn_neuron` apply the preceding BatchNorm inside the native recording kernel
    fuse_bn: bool = True

    def __init__(self, neuron: BaseNeuron) -> None:
        super().__init__()
        if not isinstance(neuron, BaseNeuron):
            raise TypeError(f"RateBPNeuron wraps a graphspike_kd.spiking.neurons.BaseNeuron, got "
                            f"{type(neuron).__name__}")
        if neuron.step_mode != "m":
            raise ValueError(f"RateBPNeuron needs a multi-step neuron (step_mode='m'), got {neuron!r}")
        self.neuron = neuron
        self._state: dict[str, Tensor] | None = None
        self._steps = 0
        self.rate: Tensor | None = None
        self.eligibility: Tensor | None = None
        self.decay_eligibility: Tensor | None = None

    # ------------------------------------------------------------------------------------- spike pass
    def begin_spike_pass(self) -> None:
        self._state = None
        self._steps = 0
        self.rate = self.eligibility = self.decay_eligibility = None

    def end_spike_pass(self) -> None:
        if self._state is None:
            raise RuntimeError("RateBPNeuron: the spike pass never reached this neuron; every neuron must "
                               "run in the spike pass before the rate pass")
        st = self._state
        self.rate = st["spikes"] / self._steps
        self.eligibility = st["elig"] / self._steps
        self.decay_eligibility = st["elig_k"] / self._steps if "elig_k" in st else None
        self._state = None

    def _decay_value(self, like: Tensor) -> float:
        return float(self.neuron.decay(like).detach())

    @torch.no_grad()
    def _spike_forward(self, x_seq: Tensor,
                       channel_affine: tuple[Tensor, Tensor, int] | None = None) -> Tensor:
        nrn = self.neuron
        if x_seq.dim() < 2 or x_seq.shape[0] < 1 or x_seq[0].numel() < 1:
            raise ValueError(f"RateBPNeuron: the spike pass needs input [T, N, ...] with T >= 1 steps and at "
                             f"least one neuron per step, got shape {tuple(x_seq.shape)}")
        T = x_seq.shape[0]
        x = x_seq.detach().reshape(T, -1)
        v_r = nrn.v_rest
        hard = nrn.v_reset is not None
        th = nrn.v_threshold - v_r  # the membrane is tracked relative to v_r, as the neuron's torch path
        k = self._decay_value(x)
        k_in = k if nrn.decay_input else 1.0
        lam = 1.0 - k
        detach = nrn.detach_reset
        want_k = isinstance(getattr(nrn, "w", None), nn.Parameter) and nrn.w.requires_grad
        # soft reset with a detached reset: dV/dH = 1, so kappa_t = k_in + lam * kappa_{t-1} is one number
        # for every neuron (the official neuron's case); otherwise it is carried per neuron
        scalar_kappa = detach and not hard
        st = self._state
        if st is None:
            zeros = torch.zeros_like(x[0])
            st = {"u": zeros.clone(), "spikes": zeros.clone(), "elig": zeros.clone()}
            st["d"] = 0.0 if scalar_kappa else zeros.clone()
            if want_k:
                st["dk"] = zeros.clone()
                st["elig_k"] = zeros.clone()
            self._state = st
        elif st["u"].shape != x[0].shape:
            raise ValueError(f"RateBPNeuron: step input has {x[0].numel()} neurons per step but the spike "
                             f"pass started with {st['u'].numel()}; call begin_spike_pass() between batches")
        if nrn.resolve_backend(x) == "cpp":  # the same arithmetic in one native pass per layer
            out = self._spike_forward_cpp(x, x_seq.shape, k, k_in, lam, th, hard, scalar_kappa,
                                          channel_affine)
            check_finite_membrane(st["u"], k)
            return out
        if channel_affine is not None:
            raise RuntimeError("RateBPNeuron: a channel affine input (fused BatchNorm) needs backend='cpp'")
        u = st["u"]
        out = torch.empty_like(x)
        g = torch.empty_like(u)
        h = torch.empty_like(u)
        if not scalar_kappa:
            kappa = torch.empty_like(u)
            rho = torch.empty_like(u)
        for t in range(T):
            if nrn.decay_input:  # same arithmetic as the neuron's torch path -> identical spikes
                torch.lerp(u, x[t], k, out=h)
            else:
                torch.add(x[t], u, alpha=lam, out=h)
            s = out[t]
            torch.ge(h, th, out=s)
            nrn.surrogate.derivative_at(h, th, out=g)
            st["spikes"].add_(s)
            # kappa_t = dH/dc = k_in + lam * D_{t-1};  D_t = kappa_t * rho_t,  rho_t = dV/dH
            if scalar_kappa:
                kappa_t = k_in + lam * st["d"]
                st["elig"].add_(g, alpha=kappa_t)
                st["d"] = kappa_t
            else:
                d = st["d"]
                if lam != 0.0:
                    torch.add(d.mul(lam), k_in, out=kappa)
                else:
                    kappa.fill_(k_in)
                st["elig"].addcmul_(g, kappa)
                if hard:
                    torch.sub(1.0, s, out=rho)
                    if not detach:
                        rho.addcmul_(h, g, value=-1.0)  # (V_r - H) g' with H - V_r = h
                else:  # soft, reset not detached
                    torch.sub(1.0, g, alpha=th, out=rho)
                torch.mul(kappa, rho, out=d)
            if want_k:  # dH/dk = (X - U or -U) + lam * dU_{t-1}/dk ; dU/dk = dH/dk * rho
                dk = st["dk"]
                dh_dk = (x[t] - u if nrn.decay_input else -u) + lam * dk
                st["elig_k"].addcmul_(g, dh_dk)
                if scalar_kappa:
                    dk.copy_(dh_dk)
                else:
                    torch.mul(dh_dk, rho, out=dk)
            # reset (relative membrane): soft h - th*s, hard h*(1 - s)
            if hard:
                torch.addcmul(h, h, s, value=-1.0, out=u)
            else:
                torch.sub(h, s, alpha=th, out=u)
        self._steps += T
        check_finite_membrane(u, k)  # a NaN/inf input, membrane or decay stays in u (see the neuron's check)
        return out.view(x_seq.shape)

    def _spike_forward_cpp(self, x: Tensor, shape: torch.Size, k: float, k_in: float, lam: float, th: float,
                           hard: bool, scalar_kappa: bool,
                           channel_affine: tuple[Tensor, Tensor, int] | None) -> Tensor:
        nrn, st = self.neuron, self._state
        assert st is not None
        T = x.shape[0]
        kappa_seq = None
        if scalar_kappa:  # kappa_t = k_in + lam * kappa_{t-1}, in double exactly as the torch loop
            seq, d = [], st["d"]
            for _ in range(T):
                d = k_in + lam * d
                seq.append(d)
            st["d"] = d
            kappa_seq = torch.tensor(seq, dtype=torch.float64)
        if not (T > 1 and x.stride(0) == 0 and x[0].is_contiguous()):  # keep a time-repeated input uncopied
            x = x.contiguous()
        out = native.ratebp_record_cpp(x, st, kappa_seq, k=k, lam=lam, k_in=k_in, threshold=th,
                                       surrogate=nrn.surrogate, hard=hard, detach_reset=nrn.detach_reset,
                                       decay_input=nrn.decay_input, channel_affine=channel_affine)
        self._steps += T
        return out.view(shape)

    # -------------------------------------------------------------------------------------- rate pass
    def _rate_forward(self, c: Tensor) -> Tensor:
        if self.rate is None or self.eligibility is None:
            raise RuntimeError("RateBPNeuron: rate pass without a finished spike pass (run spike_pass first)")
        if c.shape[0] != 1 or c[0].numel() != self.rate.numel():
            raise ValueError(f"RateBPNeuron: the rate pass expects the time-averaged current of shape "
                             f"(1, N, ...) with {self.rate.numel()} values per step, got {tuple(c.shape)}")
        rate = self.rate.view(c.shape).to(c.dtype)
        elig = self.eligibility.view(c.shape).to(c.dtype)
        out = _RateOutput.apply(c, rate, elig)
        if self.decay_eligibility is not None:
            k = self.neuron.decay(c)
            term = (self.decay_eligibility.view(c.shape).to(c.dtype) * (k - k.detach())).to(c.dtype)
            out = out + term
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.ratebp_mode == "plain":
            return self.neuron(x)
        if self.ratebp_mode == "spike":
            return self._spike_forward(x)
        return self._rate_forward(x)

    def __repr__(self) -> str:
        return f"RateBPNeuron({self.neuron!r})"


# ------------------------------------------------------------------------------------------ batch norm
class _RateBPBatchNorm(RateBPModule):
    """Mode-dependent batch norm over the time-flattened batch (mixin for the BatchNorm classes)."""

    _reduce_dims: tuple[int, ...]

    def _init_ratebp(self) -> None:
        self._acc: tuple[float, Tensor, Tensor] | None = None
        self._spike_stats: tuple[Tensor, Tensor] | None = None

    def begin_spike_pass(self) -> None:
        self._acc = None
        self._spike_stats = None

    def _record_batch_stats(self, count: float, mean: Tensor, var: Tensor) -> None:
        """Pool one call's batch statistics (``count`` samples per channel, float64 mean and biased
        variance) into the spike pass's, exactly (Chan et al.'s parallel update)."""
        if self._acc is None:
            self._acc = (count, mean, var * count)
        else:
            n_a, mean_a, m2_a = self._acc
            n = n_a + count
            delta = mean - mean_a
            self._acc = (n, mean_a + delta * (count / n),
                         m2_a + var * count + delta * delta * (n_a * count / n))

    def end_spike_pass(self) -> None:
        if self._acc is None:
            raise RuntimeError(f"{type(self).__name__}: the spike pass never reached this layer")
        n, mean, m2 = self._acc
        var = m2 / n
        self._spike_stats = (mean.float(), var.float())
        self._acc = None
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        if self.training and bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                if bn.num_batches_tracked is not None:
                    bn.num_batches_tracked.add_(1)
                momentum = bn.momentum
                if momentum is None:  # cumulative moving average, as nn.BatchNorm
                    momentum = 1.0 / float(bn.num_batches_tracked)
                unbiased = var * (n / max(n - 1.0, 1.0))
                bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
                bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), momentum)

    def _spike_forward(self, x: Tensor) -> Tensor:
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        if not self.training:
            raise RuntimeError(f"{type(self).__name__}: the rate-BP spike pass needs train mode")
        with torch.no_grad():
            # one fused pass: normalised output, batch mean and 1/sqrt(var + eps) (much faster on CPU than
            # var_mean followed by a normalisation)
            y, mean, invstd = torch.native_batch_norm(x.detach(), bn.weight, bn.bias, None, None, True, 0.0,
                                                      bn.eps)
            var = (invstd.double().pow(-2) - bn.eps).clamp_(min=0.0)
            self._record_batch_stats(float(x.numel() // x.shape[1]), mean.double(), var)
            return y

    @torch.no_grad()
    def _spike_affine(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The spike pass's BatchNorm as a per-channel map ``x * scale + shift`` for a fused neuron: batch
        statistics of ``x`` ``[B, C, *]`` (contiguous CPU float) taken natively in one read and recorded
        as :meth:`_spike_forward` records them; returns ``(scale, shift)`` ``[C]`` in ``x``'s dtype."""
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        if not self.training:
            raise RuntimeError(f"{type(self).__name__}: the rate-BP spike pass needs train mode")
        mean, m2 = native.channel_moments_cpp(x.detach())
        count = float(x.numel() // x.shape[1])
        var = m2 / count
        self._record_batch_stats(count, mean, var)
        scale = torch.rsqrt(var + bn.eps)
        if bn.affine:
            scale = scale * bn.weight.detach().double()
            shift = bn.bias.detach().double() - mean * scale
        else:
            shift = -mean * scale
        return scale.to(x.dtype), shift.to(x.dtype)

    def _rate_forward(self, x: Tensor) -> Tensor:
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        if self._spike_stats is None:
            raise RuntimeError(f"{type(self).__name__}: rate pass without a finished spike pass")
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean_s, var_s = (t.to(x.dtype) for t in self._spike_stats)
        mean_r = x.mean(self._reduce_dims)
        var_r = x.var(self._reduce_dims, unbiased=False)
        mean = mean_s + (mean_r - mean_r.detach())
        var = F.relu(var_s + (var_r - var_r.detach()))
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
        if bn.affine:
            y = y * bn.weight.view(shape) + bn.bias.view(shape)
        return y

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.ratebp_mode == "plain":
            return super().forward(x)  # type: ignore[misc]
        if self.ratebp_mode == "spike":
            return self._spike_forward(x)
        return self._rate_forward(x)


class RateBPBatchNorm2d(_RateBPBatchNorm, nn.BatchNorm2d):
    r"""``nn.BatchNorm2d`` with the rate-BP spike/rate behaviour (module docstring); input
    ``[T*N, C, H, W]`` (time flattened into the batch), so the statistics are taken over
    :math:`(T \cdot N, H, W)`. In ``"plain"`` mode and in eval mode it is ``nn.BatchNorm2d``.

    Args: as :class:`torch.nn.BatchNorm2d`.
    """

    _reduce_dims = (0, 2, 3)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_ratebp()


class RateBPBatchNorm1d(_RateBPBatchNorm, nn.BatchNorm1d):
    r"""``nn.BatchNorm1d`` with the rate-BP behaviour, for ``[T*N, C]`` inputs (see
    :class:`RateBPBatchNorm2d`).

    Args: as :class:`torch.nn.BatchNorm1d`.
    """

    _reduce_dims = (0,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_ratebp()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"RateBPBatchNorm1d expects [T*N, C], got {tuple(x.shape)}")
        return super().forward(x)


# ----------------------------------------------------------------------------------- fused BN + neuron
def fused_bn_neuron(bn: nn.Module, neuron: nn.Module, c: Tensor, T: int,
                    repeat: bool = False) -> Tensor | None:
    r"""Spike pass of ``bn`` then ``neuron`` on a conv output ``c`` in one native kernel, or ``None`` when
    the fused path does not apply (then run them as usual).

    It applies when ``bn`` is a :class:`RateBPBatchNorm2d` / ``1d`` and ``neuron`` a :class:`RateBPNeuron`
    with ``fuse_bn`` set, both in ``"spike"`` mode and training, the neuron's backend resolves to ``"cpp"``
    and ``c`` is a contiguous float32/64 CPU tensor. The BatchNorm's batch statistics are taken in one read
    of ``c`` (:func:`~graphspike_kd.spiking.native.channel_moments_cpp`, float64) and recorded exactly as
    its own spike pass records them (rate-pass statistics, running statistics); the recording kernel then
    applies :math:`\gamma (c - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta` per element as it reads ``c``.
    BatchNorm's separate pass reads ``c`` twice and writes its output for the neuron to read again: the
    fused pass moves about 40 % fewer bytes through memory, which bounds these elementwise passes on CPU.
    The normalised current can differ from ``nn.BatchNorm2d``'s in the last bits (other summation order
    and rounding of the statistics), so a membrane within rounding of the threshold may spike in one and
    not the other; statistics and rates agree to float rounding (``tests/spiking/test_ratebp_fused.py``).

    Args:
        bn (nn.Module): the BatchNorm after the convolution.
        neuron (nn.Module): the neuron after the BatchNorm.
        c (Tensor): conv output ``[T*N, C, *]``, or ``[N, C, *]`` with ``repeat=True``.
        T (int): time steps in ``c`` (``repeat=False``) or over which ``c`` is repeated (``repeat=True``).
        repeat (bool, optional): ``c`` is one step's current, the same at every step (direct encoding: the
            neuron reads it without copies). (default: ``False``)

    Returns:
        Tensor or None: spikes ``[T, N, C, *]``.
    """
    if not (isinstance(bn, _RateBPBatchNorm) and isinstance(neuron, RateBPNeuron) and neuron.fuse_bn):
        return None
    if bn.ratebp_mode != "spike" or neuron.ratebp_mode != "spike" or not bn.training:
        return None
    if (c.device.type != "cpu" or c.dtype not in (torch.float32, torch.float64) or not c.is_contiguous()
            or c.dim() < 2 or neuron.neuron.resolve_backend(c) != "cpp"):
        return None
    scale, shift = bn._spike_affine(c)
    hw = c[0, 0].numel()
    if repeat:
        x_seq = c.unsqueeze(0).expand(T, *c.shape)
    else:
        x_seq = c.view(T, c.shape[0] // T, *c.shape[1:])
    return neuron._spike_forward(x_seq, channel_affine=(scale, shift, hw))


# ------------------------------------------------------------------------------------- mode handling
def _ratebp_modules(model: nn.Module) -> list[RateBPModule]:
    return [m for m in model.modules() if isinstance(m, RateBPModule)]


def set_mode(model: nn.Module, value: str) -> nn.Module:
    """Put every :class:`RateBPModule` of ``model`` in mode ``value`` (``"plain"``, ``"spike"``,
    ``"rate"``). Returns ``model``."""
    _check_mode(value)
    for m in _ratebp_modules(model):
        m.ratebp_mode = value
    return model


@contextlib.contextmanager
def mode(model: nn.Module, value: str) -> Iterator[nn.Module]:
    """Context manager: ``model`` in rate-BP mode ``value`` inside, ``"plain"`` afterwards."""
    set_mode(model, value)
    try:
        yield model
    finally:
        set_mode(model, "plain")


def check_rate_compatible(model: nn.Module) -> None:
    """Raise ``ValueError`` if ``model`` cannot be trained by rate-BP: it needs at least one
    :class:`RateBPNeuron`, no bare neuron outside one, and no max-pool / dropout (not rate-linear)."""
    bad = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d)
    wrapped = {id(m.neuron) for m in model.modules() if isinstance(m, RateBPNeuron)}
    if not wrapped:
        raise ValueError(f"{type(model).__name__} has no RateBPNeuron; build it from graphspike_kd.spiking."
                         "models or call convert_to_ratebp(model)")
    for name, m in model.named_modules():
        if isinstance(m, bad):
            raise ValueError(f"{type(model).__name__}.{name} is {type(m).__name__}, which is not linear in "
                             "the firing rates; rate-BP needs conv / BN / avg-pool / add / linear between "
                             "neurons")
        if isinstance(m, BaseNeuron) and id(m) not in wrapped:
            raise ValueError(f"{type(model).__name__}.{name} is a bare {type(m).__name__}; wrap it in "
                             "RateBPNeuron (convert_to_ratebp(model))")
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(m, _RateBPBatchNorm) \
                and not getattr(m, "ann_branch", False):
            raise ValueError(f"{type(model).__name__}.{name} is a plain {type(m).__name__}; rate-BP needs "
                             "RateBPBatchNorm (convert_to_ratebp(model)) or mark it ann_branch=True")


def convert_to_ratebp(model: nn.Module) -> nn.Module:
    """Replace, in place, every bare neuron by :class:`RateBPNeuron` and every ``nn.BatchNorm1d/2d`` by
    its rate-BP version (parameters and running statistics copied). BNs with ``ann_branch = True`` are
    kept. Returns ``model``."""
    for name, child in list(model.named_children()):
        if isinstance(child, RateBPModule):
            continue
        if isinstance(child, BaseNeuron):
            setattr(model, name, RateBPNeuron(child))
        elif type(child) in (nn.BatchNorm1d, nn.BatchNorm2d) and not getattr(child, "ann_branch", False):
            cls = RateBPBatchNorm2d if isinstance(child, nn.BatchNorm2d) else RateBPBatchNorm1d
            new = cls(child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                      track_running_stats=child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(model, name, new.to(next(child.buffers(), torch.empty(0)).device))
        else:
            convert_to_ratebp(child)
    return model


# -------------------------------------------------------------------------------------------- passes
def time_average(x: Tensor) -> Tensor:
    """The rate-pass input: a static batch ``[N, ...]`` unchanged (direct encoding repeats it), frames
    ``[T, N, C, H, W]`` averaged over time to ``[N, C, H, W]``."""
    if x.dim() == 5:
        return x.mean(0)
    if x.dim() == 4 or x.dim() == 2:
        return x
    raise ValueError(f"rate-BP input must be static [N, C, H, W] / [N, F] or frames [T, N, C, H, W], got "
                     f"{tuple(x.shape)}")


def _num_steps(x: Tensor, T: int | None) -> int:
    if x.dim() == 5:
        if T is not None and T != x.shape[0]:
            raise ValueError(f"frames have T = {x.shape[0]} steps but T = {T} was given")
        return x.shape[0]
    if T is None or int(T) < 1:
        raise ValueError(f"static input {tuple(x.shape)} needs a number of time steps T >= 1, got {T!r}")
    return int(T)


def _resolve_steps_per_call(steps: int, lean: bool, steps_per_call: int | None) -> int:
    if steps_per_call is None:
        return 1 if lean else steps
    if isinstance(steps_per_call, bool) or int(steps_per_call) != steps_per_call or steps_per_call < 1:
        raise ValueError(f"steps_per_call must be a positive int or None, got {steps_per_call!r}")
    if lean and steps_per_call != 1:
        raise ValueError(f"lean=True means one step per call; it contradicts steps_per_call={steps_per_call}")
    return min(int(steps_per_call), steps)


def spike_pass(model: nn.Module, x: Tensor, T: int | None = None, *, lean: bool = False,
               steps_per_call: int | None = None) -> Tensor:
    """Run the recording spike pass (no graph) and return its logits (mean over time), ``[N, C]``.

    ``model(x, T=...)`` must return time-averaged logits (the models of
    :mod:`graphspike_kd.spiking.models` do). ``x`` is static ``[N, ...]`` (repeated ``T`` times) or frames
    ``[T, N, ...]``. With ``lean=True`` the model is called once per time step (memory flat in ``T``);
    ``steps_per_call=c`` calls it with ``c`` steps at a time (the last call with the remainder); the
    default runs all ``T`` steps in one call (module docstring: execution modes).
    """
    steps = _num_steps(x, T)
    per_call = _resolve_steps_per_call(steps, lean, steps_per_call)
    mods = _ratebp_modules(model)
    if not mods:
        raise ValueError(f"{type(model).__name__} has no rate-BP modules; see check_rate_compatible")
    for m in mods:
        m.begin_spike_pass()
    reset_net(model)
    with torch.no_grad(), mode(model, "spike"):
        if per_call >= steps:
            logits = model(x, T=steps)
        else:
            logits = None
            for t0 in range(0, steps, per_call):
                n = min(per_call, steps - t0)
                xt = x[t0 : t0 + n] if x.dim() == 5 else x
                out = model(xt, T=n).mul_(n)  # the model averages over its n steps
                logits = out if logits is None else logits.add_(out)
            logits = logits / steps
    for m in mods:
        m.end_spike_pass()
    return logits


def rate_pass(model: nn.Module, x: Tensor, **kwargs: Any) -> Any:
    """Run the differentiable rate pass on the time-averaged input (after :func:`spike_pass` on the same
    batch) and return whatever ``model(x_bar, T=1, **kwargs)`` returns (logits on the rates)."""
    xbar = time_average(x)
    with mode(model, "rate"):
        return model(xbar, T=1, **kwargs)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def scale_grad(x: Tensor, factor: float) -> Tensor:
    """Identity in value, gradient multiplied by ``factor`` (rate-BP's :math:`1/T` convention)."""
    if not math.isfinite(factor):
        raise ValueError(f"scale_grad: factor must be finite, got {factor!r}")
    return _ScaleGrad.apply(x, float(factor))


Criterion = Callable[[Tensor, Tensor], Tensor]


def ratebp_loss(model: nn.Module, x: Tensor, target: Tensor, T: int | None = None, *, lean: bool = False,
                steps_per_call: int | None = None, criterion: Criterion | None = None,
                grad_scale: float | None = None) -> dict[str, Tensor]:
    """One rate-BP training batch: spike pass (``lean`` / ``steps_per_call`` as in :func:`spike_pass`) +
    rate pass + loss. Returns a dict of loss terms:
    ``"loss"`` (value = criterion, gradient scaled by ``grad_scale``, default :math:`1/T`; call
    ``.backward()`` on it), ``"ce"`` (detached value), ``"logits"`` (rate-pass logits) and
    ``"spike_logits"`` (spike-pass logits, what evaluation would output in train-mode BN)."""
    criterion = F.cross_entropy if criterion is None else criterion
    steps = _num_steps(x, T)
    spike_logits = spike_pass(model, x, steps, lean=lean, steps_per_call=steps_per_call)
    logits = rate_pass(model, x)
    value = criterion(logits, target)
    factor = 1.0 / steps if grad_scale is None else grad_scale
    return {"loss": scale_grad(value, factor), "ce": value.detach(), "logits": logits,
            "spike_logits": spike_logits}


def bptt_loss(model: nn.Module, x: Tensor, target: Tensor, T: int | None = None, *,
              criterion: Criterion | None = None) -> dict[str, Tensor]:
    """One BPTT training batch on the same model (``"plain"`` mode): ``{"loss", "ce", "logits"}``."""
    criterion = F.cross_entropy if criterion is None else criterion
    steps = _num_steps(x, T)
    set_mode(model, "plain")
    reset_net(model)
    logits = model(x, T=steps)
    value = criterion(logits, target)
    return {"loss": value, "ce": value.detach(), "logits": logits}
