r"""IF, LIF and PLIF spiking neurons with explicit state and explicit backends.

Every neuron is the generic neuron of :mod:`graphspike_kd.spiking.functional` with a decay factor
:math:`k` (IF: 0, LIF: :math:`1/\tau`, PLIF: :math:`\sigma(w)`, learnable):

.. math::
    H[t] &= V[t-1] + k\,\big(X[t] - (V[t-1] - V_r)\big) \quad\text{or}\quad
        V[t-1] - k\,(V[t-1] - V_r) + X[t] \;\;(\text{decay\_input=False}) \\
    S[t] &= \Theta(H[t] - \vartheta) \\
    V[t] &= H[t] - \vartheta S[t] \;\;(\text{soft, } V_r = 0) \qquad
        V[t] = H[t](1 - S[t]) + V_r S[t] \;\;(\text{hard})

Step modes: ``"m"`` (multi-step) takes ``[T, N, ...]`` and returns spikes ``[T, N, ...]``; ``"s"``
(single-step) takes ``[N, ...]`` and advances one step per call.

State: the membrane lives in ``neuron.v``. In multi-step mode every call starts from :math:`V_r` unless
``keep_state=True``; in single-step mode the membrane is carried from call to call (that is what a step
is). spikingjelly carries the membrane in both modes until ``reset_net``: neurons converted by
:func:`graphspike_kd.spiking.interop.from_spikingjelly` get ``keep_state=True``, which is that rule.
:meth:`BaseNeuron.reset` clears it, :func:`reset_net` clears every neuron inside one model (ours,
spikingjelly's and snntorch's; nothing outside the model), :meth:`BaseNeuron.detach_state` cuts the graph
for truncated BPTT. The membrane of every step (spikingjelly's ``v_seq``) is not stored.

Backends (:mod:`graphspike_kd.spiking.functional` chooses and runs them): ``"torch"`` (the time loop in
torch, one autograd Function; every device), ``"cpp"`` (native blocked C++ loop for float32/float64 CPU
tensors, built at first use, see :mod:`graphspike_kd.spiking.native`), ``"cupy"`` (fused CUDA kernels
from :mod:`graphspike_kd.spiking.kernels`; float32/float16 CUDA tensors, surrogates with a CUDA kernel),
``"auto"`` (the fastest one available for the tensor's device: cupy on CUDA, cpp on CPU, else torch;
logs its choice once, and warns once with the reason when a CUDA tensor falls back to torch). Explicit
choices never fall back: they raise with the real reason.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from graphspike_kd.spiking.functional import BACKENDS, NeuronConfig, resolve_backend, run_multistep
from graphspike_kd.spiking.surrogate import Sigmoid, SurrogateFunction, as_surrogate

__all__ = ["BaseNeuron", "IF", "LIF", "PLIF", "reset_net", "BACKENDS"]

class BaseNeuron(nn.Module):
    r"""Common state, step-mode and backend handling; subclasses provide the decay factor :math:`k`.

    Args:
        v_threshold (float, optional): firing threshold :math:`\vartheta`. (default: ``1.0``)
        v_reset (float or None, optional): hard-reset value :math:`V_r`, or ``None`` for a soft reset
            (subtract the threshold). (default: ``None``)
        surrogate (SurrogateFunction, optional): surrogate of the spike derivative; a spikingjelly or
            snntorch surrogate is mapped to ours with the same sharpness
            (:func:`~graphspike_kd.spiking.surrogate.as_surrogate`).
            (default: :class:`~graphspike_kd.spiking.surrogate.Sigmoid` with ``alpha=4.0``)
        detach_reset (bool, optional): no gradient through the spike used in the reset.
            (default: ``False``)
        step_mode (str, optional): ``"m"`` (input ``[T, N, ...]``) or ``"s"`` (input ``[N, ...]``).
            (default: ``"m"``)
        backend (str, optional): ``"torch"``, ``"cpp"``, ``"cupy"`` or ``"auto"``. (default: ``"torch"``)
        keep_state (bool, optional): in multi-step mode, start each call from the membrane left by the
            previous call instead of :math:`V_r`. (default: ``False``)
        surrogate_function (optional): spikingjelly's name for ``surrogate`` (give one of the two).
            (default: ``None``)
    """

    decay_input: bool = False

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = None,
        surrogate: SurrogateFunction | Any = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        backend: str = "torch",
        keep_state: bool = False,
        *,
        surrogate_function: Any = None,
    ) -> None:
        super().__init__()
        if not math.isfinite(v_threshold):
            raise ValueError(f"{type(self).__name__}: v_threshold must be finite, got {v_threshold!r}")
        if v_reset is not None and not (math.isfinite(v_reset) and v_reset < v_threshold):
            raise ValueError(f"{type(self).__name__}: v_reset must be None or a finite value below "
                             f"v_threshold={v_threshold}, got {v_reset!r}")
        if surrogate is not None and surrogate_function is not None:
            raise TypeError(f"{type(self).__name__}: pass surrogate= or its alias surrogate_function=, "
                            "not both")
        surrogate = surrogate if surrogate_function is None else surrogate_function
        surrogate = Sigmoid(alpha=4.0) if surrogate is None else as_surrogate(surrogate, type(self).__name__)
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.surrogate = surrogate
        self.detach_reset = bool(detach_reset)
        self.step_mode = step_mode
        self.backend = backend
        self.keep_state = bool(keep_state)
        self.v: Tensor | None = None

    # ----------------------------------------------------------------------------------------- options
    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in ("s", "m"):
            raise ValueError(f"{type(self).__name__}: step_mode must be 's' or 'm', got {value!r}")
        self._step_mode = value

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"{type(self).__name__}: backend must be one of {BACKENDS}, got {value!r}")
        self._backend = value

    @property
    def v_rest(self) -> float:
        """The membrane a fresh neuron starts from: ``v_reset`` (hard reset) or 0 (soft reset)."""
        return 0.0 if self.v_reset is None else self.v_reset

    def decay(self, like: Tensor) -> Tensor:
        """The 0-dim decay factor :math:`k` on ``like``'s device (float32, or float64 for float64)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the membrane; the next call starts from :attr:`v_rest`."""
        self.v = None

    def detach_state(self) -> None:
        """Keep the membrane value but cut its autograd history (truncated BPTT across calls)."""
        if self.v is not None:
            self.v = self.v.detach()

    def _initial_state(self, x: Tensor, step_shape: torch.Size, carry: bool) -> Tensor:
        """The membrane before the first step, shape ``step_shape``, on ``x``'s device and dtype."""
        if carry and self.v is not None:
            if tuple(self.v.shape) != tuple(step_shape):
                raise ValueError(
                    f"{type(self).__name__}: stored membrane has shape {tuple(self.v.shape)} but the input "
                    f"step has shape {tuple(step_shape)}; call reset() (or reset_net(model)) between "
                    "batches of different shapes")
            return self.v.to(device=x.device, dtype=x.dtype)
        return torch.full(step_shape, self.v_rest, dtype=x.dtype, device=x.device)

    # ---------------------------------------------------------------------------------------- forward
    def resolve_backend(self, x: Tensor) -> str:
        """The backend that will run ``x``: ``"torch"``, ``"cpp"`` or ``"cupy"`` (raises with the reason for
        an explicit backend that cannot run it)."""
        return resolve_backend(self.backend, x, self.surrogate, type(self).__name__)

    def _run(self, x_seq: Tensor, v_init: Tensor) -> tuple[Tensor, Tensor]:
        cfg = NeuronConfig(self.v_threshold, self.v_reset, self.decay_input, self.detach_reset,
                           self.surrogate)
        return run_multistep(x_seq, v_init, self.decay(x_seq), cfg, self.backend, who=type(self).__name__)

    def forward(self, x: Tensor) -> Tensor:
        """Spikes for ``x``: ``[T, N, ...]`` in multi-step mode, ``[N, ...]`` in single-step mode."""
        if self.step_mode == "m":
            if x.dim() < 1:
                raise ValueError(f"{type(self).__name__}: multi-step input must be [T, N, ...], got a 0-dim "
                                 "tensor")
            v_init = self._initial_state(x, x.shape[1:], carry=self.keep_state)
            spikes, self.v = self._run(x, v_init)
            return spikes
        v_init = self._initial_state(x, x.shape, carry=True)
        spikes, self.v = self._run(x.unsqueeze(0), v_init)
        return spikes.squeeze(0)

    def extra_repr(self) -> str:
        parts = [f"v_threshold={self.v_threshold}", f"v_reset={self.v_reset}"]
        if type(self) is not IF:
            parts.append(f"decay_input={self.decay_input}")
        parts += [f"surrogate={self.surrogate!r}", f"detach_reset={self.detach_reset}",
                  f"step_mode={self.step_mode!r}", f"backend={self.backend!r}"]
        if self.keep_state:
            parts.append("keep_state=True")
        return ", ".join(parts)

    def __repr__(self) -> str:  # one line, the surrogate inline rather than as a child block
        return f"{type(self).__name__}({self.extra_repr()})"


class IF(BaseNeuron):
    r"""Integrate-and-fire neuron (no leak).

    .. math::
        H[t] = V[t-1] + X[t], \quad S[t] = \Theta(H[t] - \vartheta), \quad
        V[t] = H[t] - \vartheta S[t] \;\text{(soft)} \;\;\text{or}\;\; H[t](1 - S[t]) + V_r S[t]
        \;\text{(hard)}

    Args:
        v_threshold (float, optional): firing threshold. (default: ``1.0``)
        v_reset (float or None, optional): hard-reset value, ``None`` = soft reset. (default: ``None``)
        surrogate (SurrogateFunction, optional): spike derivative; spikingjelly and snntorch surrogates are
            mapped to ours. (default: ``Sigmoid(alpha=4.0)``)
        detach_reset (bool, optional): no gradient through the reset. (default: ``False``)
        step_mode (str, optional): ``"m"`` or ``"s"``. (default: ``"m"``)
        backend (str, optional): ``"torch"``, ``"cpp"``, ``"cupy"`` or ``"auto"``. (default: ``"torch"``)
        keep_state (bool, optional): carry the membrane across multi-step calls. (default: ``False``)
        surrogate_function (optional): alias of ``surrogate`` (spikingjelly's name). (default: ``None``)

    Shapes:
        - **input:** :math:`(T, N, *)` (``step_mode="m"``) or :math:`(N, *)` (``"s"``)
        - **output:** spikes of the input's shape and dtype (0/1); the last membrane in ``self.v``,
          :math:`(N, *)`
    """

    decay_input = False

    def decay(self, like: Tensor) -> Tensor:
        return torch.zeros((), dtype=_param_dtype(like), device=like.device)


class LIF(BaseNeuron):
    r"""Leaky integrate-and-fire neuron with a fixed time constant :math:`\tau`.

    .. math::
        H[t] &= V[t-1] + \frac{1}{\tau}\big(X[t] - (V[t-1] - V_r)\big) \quad (\text{decay\_input}), \qquad
        H[t] = V[t-1] - \frac{1}{\tau}(V[t-1] - V_r) + X[t] \quad (\text{otherwise}) \\
        S[t] &= \Theta(H[t] - \vartheta), \qquad
        V[t] = H[t] - \vartheta S[t] \;\text{(soft, } V_r = 0) \;\;\text{or}\;\; H[t](1 - S[t]) + V_r S[t]

    Same semantics as spikingjelly's ``LIFNode`` (see :mod:`graphspike_kd.spiking.interop`), but with a
    soft reset by default.

    Args:
        tau (float, optional): membrane time constant, :math:`\tau \ge 1`. (default: ``2.0``)
        v_threshold (float, optional): firing threshold. (default: ``1.0``)
        v_reset (float or None, optional): hard-reset value, ``None`` = soft reset. (default: ``None``)
        decay_input (bool, optional): scale the input by :math:`1/\tau` as well. (default: ``True``)
        surrogate (SurrogateFunction, optional): spike derivative; spikingjelly and snntorch surrogates are
            mapped to ours. (default: ``Sigmoid(alpha=4.0)``)
        detach_reset (bool, optional): no gradient through the reset. (default: ``False``)
        step_mode (str, optional): ``"m"`` or ``"s"``. (default: ``"m"``)
        backend (str, optional): ``"torch"``, ``"cpp"``, ``"cupy"`` or ``"auto"``. (default: ``"torch"``)
        keep_state (bool, optional): carry the membrane across multi-step calls. (default: ``False``)
        surrogate_function (optional): alias of ``surrogate`` (spikingjelly's name). (default: ``None``)

    Shapes:
        - **input:** :math:`(T, N, *)` (``step_mode="m"``) or :math:`(N, *)` (``"s"``)
        - **output:** spikes of the input's shape and dtype (0/1); the last membrane in ``self.v``,
          :math:`(N, *)`
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = None,
        decay_input: bool = True,
        surrogate: SurrogateFunction | Any = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        backend: str = "torch",
        keep_state: bool = False,
        *,
        surrogate_function: Any = None,
    ) -> None:
        super().__init__(v_threshold, v_reset, surrogate, detach_reset, step_mode, backend, keep_state,
                         surrogate_function=surrogate_function)
        tau = float(tau)
        if not (math.isfinite(tau) and tau >= 1.0):
            raise ValueError(f"LIF: tau must be a finite number >= 1 (decay 1/tau in (0, 1]), got {tau!r}")
        self.tau = tau
        self.decay_input = bool(decay_input)

    def decay(self, like: Tensor) -> Tensor:
        return torch.full((), 1.0 / self.tau, dtype=_param_dtype(like), device=like.device)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, " + super().extra_repr()


class PLIF(BaseNeuron):
    r"""Parametric LIF: the decay :math:`k = \sigma(w)` is learned (Fang et al., ICCV 2021).

    .. math::
        k = \sigma(w) = 1/\tau, \qquad w_0 = -\log(\tau_0 - 1), \qquad
        H[t] = V[t-1] + k\,\big(X[t] - (V[t-1] - V_r)\big) \;\;(\text{decay\_input})

    and otherwise as :class:`LIF`. The gradient :math:`\partial L/\partial w` is computed by the fused
    multi-step path (a reduction over time and neurons).

    Reference: W. Fang, Z. Yu, Y. Chen, T. Masquelier, T. Huang, Y. Tian, "Incorporating Learnable
    Membrane Time Constant to Enhance Learning of Spiking Neural Networks", ICCV 2021.

    Args:
        init_tau (float, optional): initial :math:`\tau_0 > 1`. (default: ``2.0``)
        v_threshold (float, optional): firing threshold. (default: ``1.0``)
        v_reset (float or None, optional): hard-reset value, ``None`` = soft reset. (default: ``None``)
        decay_input (bool, optional): scale the input by :math:`k` as well. (default: ``True``)
        surrogate (SurrogateFunction, optional): spike derivative; spikingjelly and snntorch surrogates are
            mapped to ours. (default: ``Sigmoid(alpha=4.0)``)
        detach_reset (bool, optional): no gradient through the reset. (default: ``False``)
        step_mode (str, optional): ``"m"`` or ``"s"``. (default: ``"m"``)
        backend (str, optional): ``"torch"``, ``"cpp"``, ``"cupy"`` or ``"auto"``. (default: ``"torch"``)
        keep_state (bool, optional): carry the membrane across multi-step calls. (default: ``False``)
        surrogate_function (optional): alias of ``surrogate`` (spikingjelly's name). (default: ``None``)

    Shapes:
        - **input:** :math:`(T, N, *)` (``step_mode="m"``) or :math:`(N, *)` (``"s"``)
        - **output:** spikes of the input's shape and dtype (0/1); the last membrane in ``self.v``,
          :math:`(N, *)`
    """

    def __init__(
        self,
        init_tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = None,
        decay_input: bool = True,
        surrogate: SurrogateFunction | Any = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        backend: str = "torch",
        keep_state: bool = False,
        *,
        surrogate_function: Any = None,
    ) -> None:
        super().__init__(v_threshold, v_reset, surrogate, detach_reset, step_mode, backend, keep_state,
                         surrogate_function=surrogate_function)
        init_tau = float(init_tau)
        if not (math.isfinite(init_tau) and init_tau > 1.0):
            raise ValueError(f"PLIF: init_tau must be a finite number > 1, got {init_tau!r}")
        self.init_tau = init_tau
        self.decay_input = bool(decay_input)
        self.w = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set :math:`w = -\\log(\\tau_0 - 1)`, i.e. :math:`\\sigma(w) = 1/\\tau_0`."""
        with torch.no_grad():
            self.w.fill_(-math.log(self.init_tau - 1.0))

    @property
    def tau(self) -> float:
        """The current time constant :math:`1/\\sigma(w)`."""
        return 1.0 / torch.sigmoid(self.w.detach()).item()

    def decay(self, like: Tensor) -> Tensor:
        return torch.sigmoid(self.w.to(device=like.device, dtype=_param_dtype(like)))

    def extra_repr(self) -> str:
        return f"init_tau={self.init_tau}, " + super().extra_repr()


def _param_dtype(like: Tensor) -> torch.dtype:
    return torch.float64 if like.dtype == torch.float64 else torch.float32


def _is_spikingjelly_neuron(module: nn.Module) -> bool:
    return type(module).__module__.startswith("spikingjelly.") and callable(getattr(module, "reset", None))


def _is_snntorch_neuron(module: nn.Module) -> bool:
    return (type(module).__module__.startswith("snntorch.") and callable(getattr(module, "reset_mem", None))
            and isinstance(getattr(module, "mem", None), Tensor))


def reset_net(model: nn.Module) -> nn.Module:
    """Reset the state of every neuron inside ``model`` (``model`` included): our :class:`BaseNeuron`
    (:meth:`BaseNeuron.reset`), spikingjelly's stateful modules (their ``reset()``) and snntorch neurons
    that hold their membrane (``init_hidden=True``: ``reset_mem()``). Neurons of other models are untouched
    (unlike a class-level registry). Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"reset_net expects an nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if isinstance(module, BaseNeuron) or _is_spikingjelly_neuron(module):
            module.reset()
        elif _is_snntorch_neuron(module):
            module.reset_mem()
    return model
