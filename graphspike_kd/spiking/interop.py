r"""Drop-in interop with spikingjelly 2.0 and snntorch: neuron mapping both ways, whole-network conversion.

spikingjelly 2.0 (``spikingjelly.activation_based.neuron``) -- same equations, one-to-one:

=======================================  ==========================================================
spikingjelly                             graphspike_kd
=======================================  ==========================================================
``LIFNode(tau, decay_input, ...)``       :class:`~graphspike_kd.spiking.neurons.LIF` (same ``tau``)
``ParametricLIFNode(init_tau, ...)``     :class:`~graphspike_kd.spiking.neurons.PLIF` (``w`` copied)
``IFNode(...)``                          :class:`~graphspike_kd.spiking.neurons.IF`
``v_threshold``, ``v_reset``             ``v_threshold``, ``v_reset`` (``None`` = soft reset in both)
``detach_reset``, ``step_mode``          ``detach_reset``, ``step_mode``
``surrogate.Sigmoid/ATan/Erf/Rect``      :class:`Sigmoid` / :class:`ATan` / :class:`Erf` / :class:`Rectangle`
=======================================  ==========================================================

Only the defaults differ: spikingjelly resets hard to 0 by default, we reset soft. State: spikingjelly
carries the membrane across calls until ``reset_net``; :func:`from_spikingjelly` gives the new neuron
``keep_state=True``, which is the same rule (and copies a membrane the node already holds).

:func:`convert_neurons` converts a whole network in place: every spikingjelly ``LIFNode``,
``ParametricLIFNode`` and ``IFNode`` (any depth), and every snntorch ``Leaky`` that holds its own membrane
(``init_hidden=True``, ``output=False``: called as ``spk = leaky(x)``) where the mapping below is exact;
others are left as they are, with a warning naming them. :func:`graphspike_kd.spiking.neurons.reset_net`
resets our neurons, spikingjelly's and snntorch's.

snntorch ``Leaky(beta, threshold, spike_grad, reset_mechanism, reset_delay=True)`` updates the membrane
as :math:`U[t] = \beta U[t-1] + X[t] - R[t]`, where :math:`R[t]` is computed from :math:`U[t-1]` and is
*detached*; it fires :math:`S[t] = \Theta(U[t] - \vartheta)`. Its membrane ``mem`` is our pre-reset
:math:`H[t]`. The mapping is

- ``beta`` :math:`= 1 - k`: ``decay_input=False`` and :math:`\tau = 1 / (1 - \beta)` (``LIF``);
  ``learn_beta=True`` maps to ``PLIF`` with :math:`\sigma(w) = 1 - \beta`; ``beta = 1`` is ``IF``;
- ``reset_mechanism="zero"``: hard reset to 0 with ``detach_reset=True`` -- exact
  (:math:`U[t] = \beta (1 - S[t-1]) U[t-1] + X[t]` is our
  :math:`H[t] = (1 - k) H[t-1](1 - S[t-1]) + X[t]`);
- ``reset_mechanism="subtract"``: snntorch subtracts :math:`\vartheta` *after* the decay, we subtract it
  before (:math:`H[t] = \beta (H[t-1] - \vartheta S[t-1]) + X[t]`), so the two agree only for
  ``beta = 1``; for ``beta < 1`` :func:`from_snntorch` raises unless ``strict=False`` (nearest mapping:
  soft reset, spikes may differ);
- ``spike_grad``: ``surrogate.atan(alpha)`` (snntorch's default, ``alpha=2``) = :class:`ATan` (alpha),
  ``fast_sigmoid(slope)`` = :class:`FastSigmoid` (alpha = slope), ``sigmoid(slope)`` = :class:`Sigmoid`
  (alpha = slope);
- firing: snntorch tests :math:`U - \vartheta > 0`, we test :math:`\ge 0` (differs only on exact ties).

Surrogates (:func:`graphspike_kd.spiking.surrogate.as_surrogate`): spikingjelly ``Sigmoid`` / ``ATan`` /
``Erf`` / ``Rect`` and snntorch ``sigmoid(slope)`` / ``fast_sigmoid(slope)`` / ``atan(alpha)`` map to ours
with the same sharpness; every neuron also accepts them directly, and ``surrogate_function=`` as an alias.

spikingjelly and snntorch are optional (``pip install graphspike_kd[compare]``; spikingjelly with
``--no-deps``) and are imported inside the functions that need them.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from graphspike_kd.spiking.neurons import IF, LIF, PLIF, BaseNeuron
from graphspike_kd.spiking.surrogate import (
    SPIKINGJELLY_SURROGATES,
    ATan,
    FastSigmoid,
    Sigmoid,
    SurrogateFunction,
    as_surrogate,
)

__all__ = ["from_spikingjelly", "to_spikingjelly", "from_snntorch", "to_snntorch", "convert_neurons"]


def _import_spikingjelly() -> tuple[Any, Any]:
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError as exc:
        raise ImportError(
            f"spikingjelly interop needs spikingjelly 2.0 ({type(exc).__name__}: {exc}); install it with "
            "`pip install --no-deps spikingjelly loguru` (the `compare` extra)") from exc
    return neuron, surrogate


def _import_snntorch() -> tuple[Any, Any]:
    try:
        import snntorch
        from snntorch import surrogate
    except ImportError as exc:
        raise ImportError(f"snntorch interop needs snntorch ({type(exc).__name__}: {exc}); install it with "
                          "`pip install graphspike_kd[compare]`") from exc
    return snntorch, surrogate


# ------------------------------------------------------------------------------------------ spikingjelly
_SJ_NAMES = {ours: theirs for theirs, ours in SPIKINGJELLY_SURROGATES.items()}


def _surrogate_to_sj(sg: SurrogateFunction, sj_surrogate: Any) -> nn.Module:
    name = _SJ_NAMES.get(sg.name)
    if name is None:
        raise ValueError(f"surrogate {sg!r} has no spikingjelly equivalent; supported: "
                         f"{sorted(SPIKINGJELLY_SURROGATES.values())}")
    return getattr(sj_surrogate, name)(alpha=sg.alpha)


_SJ_NEURONS = ("LIFNode", "ParametricLIFNode", "IFNode")


def _sj_neuron(node: nn.Module, backend: str, keep_state: bool) -> BaseNeuron:
    sj_neuron, _ = _import_spikingjelly()
    common = dict(v_threshold=float(node.v_threshold),
                  v_reset=None if node.v_reset is None else float(node.v_reset),
                  surrogate=as_surrogate(node.surrogate_function, "from_spikingjelly"),
                  detach_reset=bool(node.detach_reset), step_mode=node.step_mode, backend=backend,
                  keep_state=keep_state)
    if type(node) is sj_neuron.LIFNode:
        ours: BaseNeuron = LIF(tau=float(node.tau), decay_input=bool(node.decay_input), **common)
    elif type(node) is sj_neuron.ParametricLIFNode:
        k = torch.sigmoid(node.w.detach()).item()
        ours = PLIF(init_tau=1.0 / k, decay_input=bool(node.decay_input), **common)
        ours.to(device=node.w.device)
        with torch.no_grad():
            ours.w.copy_(node.w.detach().reshape(()))
    elif type(node) is sj_neuron.IFNode:
        ours = IF(**common)
    else:
        raise ValueError(f"from_spikingjelly supports {', '.join(_SJ_NEURONS)} (or a network holding them), "
                         f"got {type(node).__name__}")
    if isinstance(node.v, torch.Tensor):  # a membrane already carried: carry it on
        ours.v = node.v
    return ours


def _is_sj_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith("spikingjelly.")


def from_spikingjelly(node: nn.Module, *, backend: str = "torch", keep_state: bool = True) -> nn.Module:
    """The graphspike_kd equivalent of a spikingjelly 2.0 ``LIFNode``, ``ParametricLIFNode`` or ``IFNode``
    (PLIF's ``w`` is copied, not shared), or, for any other module, that module with every such neuron
    inside it converted in place (:func:`convert_neurons` without snntorch).

    Args:
        node (nn.Module): the spikingjelly neuron, or a network holding spikingjelly neurons.
        backend (str, optional): backend of the new neurons. (default: ``"torch"``)
        keep_state (bool, optional): carry the membrane across calls until reset, as spikingjelly does.
            (default: ``True``)
    """
    if _is_sj_module(node) and type(node).__name__ in _SJ_NEURONS:
        return _sj_neuron(node, backend, keep_state)
    if _is_sj_module(node) and hasattr(node, "v_threshold"):
        raise ValueError(f"from_spikingjelly supports {', '.join(_SJ_NEURONS)} (or a network holding them), "
                         f"got {type(node).__name__}")
    return convert_neurons(node, backend=backend, snntorch=False, keep_state=keep_state)


def convert_neurons(model: nn.Module, *, backend: str = "torch", snntorch: bool = True,
                    keep_state: bool = True) -> nn.Module:
    """Replace, in place, every spikingjelly neuron in ``model`` (see the module docstring) and, with
    ``snntorch=True``, every snntorch ``Leaky`` that holds its own membrane and maps exactly, by the
    equivalent graphspike_kd neuron; behaviour is unchanged, including state carried across calls until
    :func:`~graphspike_kd.spiking.neurons.reset_net`. Neurons that cannot be converted stay, with a
    ``RuntimeWarning`` naming them.

    Args:
        model (nn.Module): the network (or a single neuron).
        backend (str, optional): backend of the new neurons. (default: ``"torch"``)
        snntorch (bool, optional): convert snntorch ``Leaky`` neurons as well. (default: ``True``)
        keep_state (bool, optional): spikingjelly's state rule for the converted spikingjelly neurons.
            (default: ``True``)

    Returns:
        ``model`` (converted in place), or the new neuron when ``model`` itself is a neuron.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert_neurons expects an nn.Module, got {type(model).__name__}")
    skipped: list[str] = []

    def convert(module: nn.Module, where: str) -> nn.Module | None:
        if _is_sj_module(module) and type(module).__name__ in _SJ_NEURONS:
            return _sj_neuron(module, backend, keep_state)
        if _is_sj_module(module) and hasattr(module, "v_threshold"):
            skipped.append(f"{where} (spikingjelly {type(module).__name__}: no equivalent)")
        elif snntorch and type(module).__module__.startswith("snntorch.") and type(module).__name__ == \
                "Leaky":
            if not getattr(module, "init_hidden", False) or getattr(module, "output", False):
                skipped.append(f"{where} (snntorch Leaky without init_hidden=True, output=False: its state "
                               "is passed in and out by the caller)")
                return None
            try:
                ours = from_snntorch(module, step_mode="s", backend=backend)
            except ValueError as exc:
                skipped.append(f"{where} ({exc})")
                return None
            return ours.to(device=module.beta.device)
        return None

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            where = f"{prefix}.{name}" if prefix else name
            new = convert(child, where)
            if new is not None:
                setattr(module, name, new)
            else:
                walk(child, where)

    top = convert(model, type(model).__name__)
    if top is None:
        walk(model, "")
    if skipped:
        warnings.warn("convert_neurons left these neurons unconverted: " + "; ".join(skipped), RuntimeWarning,
                      stacklevel=2)
    return model if top is None else top


def to_spikingjelly(neuron: BaseNeuron) -> nn.Module:
    """Build the spikingjelly 2.0 neuron equivalent to ``neuron`` (``LIF`` -> ``LIFNode``, ``PLIF`` ->
    ``ParametricLIFNode`` with ``w`` copied, ``IF`` -> ``IFNode``)."""
    sj_neuron, sj_surrogate = _import_spikingjelly()
    common = dict(v_threshold=neuron.v_threshold, v_reset=neuron.v_reset,
                  surrogate_function=_surrogate_to_sj(neuron.surrogate, sj_surrogate),
                  detach_reset=neuron.detach_reset, step_mode=neuron.step_mode)
    if isinstance(neuron, LIF):
        if neuron.tau <= 1.0:
            raise ValueError(f"spikingjelly's LIFNode needs tau > 1, got tau={neuron.tau}")
        return sj_neuron.LIFNode(tau=neuron.tau, decay_input=neuron.decay_input, **common)
    if isinstance(neuron, PLIF):
        node = sj_neuron.ParametricLIFNode(init_tau=neuron.init_tau, decay_input=neuron.decay_input, **common)
        with torch.no_grad():
            node.w.copy_(neuron.w.detach().reshape(node.w.shape))
        return node
    if isinstance(neuron, IF):
        return sj_neuron.IFNode(**common)
    raise ValueError(f"to_spikingjelly supports IF, LIF and PLIF, got {type(neuron).__name__}")


# ---------------------------------------------------------------------------------------------- snntorch
def from_snntorch(leaky: nn.Module, *, strict: bool = True, step_mode: str = "s",
                  backend: str = "torch") -> BaseNeuron:
    """Build the graphspike_kd neuron that reproduces a snntorch ``Leaky`` (see the module docstring).

    Args:
        leaky (nn.Module): the ``snntorch.Leaky`` neuron (scalar ``beta`` and ``threshold``).
        strict (bool, optional): raise where no exact equivalent exists (``reset_mechanism="subtract"``
            with ``beta < 1``; ``"none"``); ``False`` returns the nearest neuron. (default: ``True``)
        step_mode (str, optional): step mode of the new neuron; snntorch is single-step.
            (default: ``"s"``)
        backend (str, optional): backend of the new neuron. (default: ``"torch"``)
    """
    snntorch, _ = _import_snntorch()
    if not isinstance(leaky, snntorch.Leaky):
        raise ValueError(f"from_snntorch expects snntorch.Leaky, got {type(leaky).__name__}")
    for flag in ("inhibition", "state_quant"):
        if getattr(leaky, flag, False):
            raise ValueError(f"from_snntorch: Leaky({flag}=...) has no graphspike_kd equivalent")
    if leaky.beta.numel() != 1 or leaky.threshold.numel() != 1:
        raise ValueError(f"from_snntorch needs scalar beta and threshold, got shapes "
                         f"{tuple(leaky.beta.shape)} and {tuple(leaky.threshold.shape)}")
    if float(leaky.graded_spikes_factor) != 1.0:
        raise ValueError(f"from_snntorch: graded_spikes_factor={float(leaky.graded_spikes_factor)} is "
                         "not supported (spikes are 0/1)")
    beta = float(leaky.beta.detach().clamp(0, 1))
    threshold = float(leaky.threshold)
    mechanism = leaky.reset_mechanism
    if not leaky.reset_delay:
        raise ValueError("from_snntorch: reset_delay=False is not supported (we reset in the same step; "
                         "snntorch's default reset_delay=True is what maps exactly)")
    surrogate = as_surrogate(leaky.spike_grad, "from_snntorch")
    learn_beta = isinstance(leaky.beta, nn.Parameter) and leaky.beta.requires_grad
    if mechanism == "zero":
        reset: dict[str, Any] = dict(v_reset=0.0, detach_reset=True)
    elif mechanism == "subtract" and (beta == 1.0 or not strict):
        reset = dict(v_reset=None, detach_reset=True)
    else:
        why = ("snntorch subtracts the threshold after the decay and we before it, so spikes differ for "
               f"beta={beta} < 1" if mechanism == "subtract" else f"reset_mechanism={mechanism!r}")
        raise ValueError(f"from_snntorch: no exact equivalent ({why}); pass strict=False for the nearest "
                         "neuron or use reset_mechanism='zero'")
    common = dict(v_threshold=threshold, surrogate=surrogate, step_mode=step_mode, backend=backend, **reset)
    if learn_beta:
        if not 0.0 < beta < 1.0:
            raise ValueError(f"from_snntorch: learnable beta must be in (0, 1) for PLIF, got {beta}")
        ours = PLIF(init_tau=1.0 / (1.0 - beta), decay_input=False, **common)
        with torch.no_grad():
            ours.w.fill_(math.log((1.0 - beta) / beta))  # sigmoid(w) = 1 - beta
        return ours
    if beta == 1.0:
        return IF(**common)
    if beta == 0.0:
        raise ValueError("from_snntorch: beta=0 (no memory) maps to tau=1 with decay_input=False; use "
                         "LIF(tau=1.0, decay_input=False) explicitly")
    return LIF(tau=1.0 / (1.0 - beta), decay_input=False, **common)


def to_snntorch(neuron: BaseNeuron) -> nn.Module:
    """Build the snntorch ``Leaky`` equivalent to ``neuron``: an ``LIF``/``PLIF`` with
    ``decay_input=False`` and a hard reset to 0 with ``detach_reset=True`` (``reset_mechanism="zero"``),
    or an ``IF`` with a soft reset and ``detach_reset=True`` (``"subtract"``, ``beta=1``)."""
    snntorch, sn_surrogate = _import_snntorch()
    name = type(neuron.surrogate)
    factories = {ATan: ("atan", "alpha"), FastSigmoid: ("fast_sigmoid", "slope"),
                 Sigmoid: ("sigmoid", "slope")}
    if name not in factories:
        raise ValueError(f"to_snntorch: surrogate {neuron.surrogate!r} has no snntorch equivalent; "
                         "supported: ATan, FastSigmoid, Sigmoid")
    factory, param = factories[name]
    spike_grad = getattr(sn_surrogate, factory)(**{param: neuron.surrogate.alpha})
    if not neuron.detach_reset:
        raise ValueError("to_snntorch: snntorch detaches the reset; only detach_reset=True maps exactly")
    if isinstance(neuron, IF):
        if neuron.v_reset is None:
            return snntorch.Leaky(beta=1.0, threshold=neuron.v_threshold, spike_grad=spike_grad,
                                  reset_mechanism="subtract")
        if neuron.v_reset == 0.0:
            return snntorch.Leaky(beta=1.0, threshold=neuron.v_threshold, spike_grad=spike_grad,
                                  reset_mechanism="zero")
        raise ValueError(f"to_snntorch: snntorch resets to 0 only, got v_reset={neuron.v_reset}")
    if not isinstance(neuron, LIF | PLIF):
        raise ValueError(f"to_snntorch supports IF, LIF and PLIF, got {type(neuron).__name__}")
    if neuron.decay_input:
        raise ValueError("to_snntorch: snntorch does not scale the input by 1/tau; only decay_input=False "
                         "maps (decay_input=True equals Leaky(beta=1-1/tau) fed x/tau)")
    if neuron.v_reset != 0.0:
        raise ValueError(f"to_snntorch: only a hard reset to 0 maps exactly for tau < inf (snntorch's "
                         f"'subtract' applies the reset after the decay), got v_reset={neuron.v_reset}")
    k = 1.0 / neuron.tau
    if isinstance(neuron, PLIF):
        return snntorch.Leaky(beta=torch.tensor(1.0 - k), threshold=neuron.v_threshold, spike_grad=spike_grad,
                              reset_mechanism="zero", learn_beta=True)
    return snntorch.Leaky(beta=1.0 - k, threshold=neuron.v_threshold, spike_grad=spike_grad,
                          reset_mechanism="zero")
