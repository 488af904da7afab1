r"""Multi-step building blocks of the spiking models: every block maps ``[T, N, ...]`` to ``[T, N, ...]``.

Stateless layers (conv, BatchNorm, pooling, linear) run on the time-flattened batch ``[T*N, ...]``, so
BatchNorm statistics are taken over :math:`(T \cdot N, H, W)`; neurons are
:class:`~graphspike_kd.spiking.ratebp.RateBPNeuron` wrappers of our IF / LIF / PLIF neurons, so every
model trains with BPTT (``"plain"`` mode) and with rate-BP. Only linear operations sit between two
neurons (conv, BN, avg-pool, add, linear): the form rate-BP needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from graphspike_kd.spiking.neurons import IF, LIF, PLIF
from graphspike_kd.spiking.ratebp import RateBPBatchNorm1d, RateBPBatchNorm2d, RateBPNeuron, fused_bn_neuron
from graphspike_kd.spiking.surrogate import Sigmoid

__all__ = ["RATEBP_NEURON", "make_neuron", "NeuronFactory", "SeqToANN", "ConvBNNeuron", "SeqAvgPool",
           "ClassifierHead", "neuron_factory"]

#: The neuron of the official rate-BP / ESD code: LIF with decay 0.2 per step (:math:`\lambda = 1 -
#: 1/\tau = 0.2`, :math:`\tau = 1.25`), no input decay, soft reset, detached reset, threshold 1, sigmoid
#: surrogate with :math:`\alpha = 4`.
RATEBP_NEURON: dict[str, Any] = {"kind": "lif", "tau": 1.25, "decay_input": False, "v_reset": None,
                                 "detach_reset": True, "v_threshold": 1.0, "surrogate": "sigmoid4"}

NeuronFactory = Callable[[], RateBPNeuron]


def make_neuron(kind: str = "lif", **kwargs: Any) -> RateBPNeuron:
    """Build a rate-BP-capable neuron: ``kind`` in ``"if"``, ``"lif"``, ``"plif"``; ``kwargs`` go to the
    neuron (:class:`~graphspike_kd.spiking.neurons.LIF` etc.). ``surrogate="sigmoid4"`` is a shorthand for
    ``Sigmoid(alpha=4.0)``."""
    kwargs = dict(kwargs)
    if kwargs.get("surrogate") == "sigmoid4":
        kwargs["surrogate"] = Sigmoid(alpha=4.0)
    classes = {"if": IF, "lif": LIF, "plif": PLIF}
    if kind not in classes:
        raise ValueError(f"unknown neuron kind {kind!r}; choose one of {sorted(classes)}")
    if kind == "if":
        kwargs.pop("tau", None)
        kwargs.pop("decay_input", None)
    if kind == "plif" and "tau" in kwargs:
        kwargs["init_tau"] = kwargs.pop("tau")
    return RateBPNeuron(classes[kind](step_mode="m", **kwargs))


def neuron_factory(neuron: dict[str, Any] | None) -> NeuronFactory:
    """A zero-argument factory from a neuron config (default :data:`RATEBP_NEURON`)."""
    cfg = dict(RATEBP_NEURON if neuron is None else neuron)
    kind = cfg.pop("kind", "lif")
    return lambda: make_neuron(kind, **cfg)


class SeqToANN(nn.Module):
    """Apply a stateless module to ``[T, N, ...]`` by folding time into the batch: ``[T*N, ...]``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        T, N = x.shape[:2]
        y = self.module(x.flatten(0, 1))
        return y.view(T, N, *y.shape[1:])


class ConvBNNeuron(nn.Module):
    r"""Conv (no bias) -> BatchNorm over the time-flattened batch -> spiking neuron.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        make_neuron (callable): zero-argument neuron factory.
        kernel_size (int, optional): (default: ``3``)
        stride (int, optional): (default: ``1``)

    Shapes:
        - **input:** :math:`(T, N, C_{in}, H, W)`
        - **output:** spikes :math:`(T, N, C_{out}, H', W')`
    """

    def __init__(self, in_channels: int, out_channels: int, make_neuron: NeuronFactory, kernel_size: int = 3,
                 stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = RateBPBatchNorm2d(out_channels)
        self.neuron = make_neuron()

    def forward(self, x: Tensor) -> Tensor:
        T, N = x.shape[:2]
        c = self.conv(x.flatten(0, 1))
        spikes = fused_bn_neuron(self.bn, self.neuron, c, T)  # rate-BP spike pass, native neurons
        if spikes is not None:
            return spikes
        y = self.bn(c)
        return self.neuron(y.view(T, N, *y.shape[1:]))


class SeqAvgPool(SeqToANN):
    """``AvgPool2d(kernel_size)`` over ``[T, N, C, H, W]`` (linear: commutes with time averaging).

    The common 2x2 case on even sizes is computed as two strided pair sums and an in-place scaling (same
    values; on CPU about 4x faster than ``avg_pool2d`` forward, and 2x faster than scaling into a new tensor,
    whose allocation is most of the cost). The in-place step is autograd-safe: the sum it scales is an
    intermediate that no backward needs."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__(nn.AvgPool2d(kernel_size))
        self.kernel_size = kernel_size

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel_size == 2 and x.dim() >= 4 and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
            rows = x[..., ::2, :] + x[..., 1::2, :]
            return (rows[..., ::2] + rows[..., 1::2]).mul_(0.25)
        return super().forward(x)


class ClassifierHead(nn.Module):
    r"""Global average pool -> Linear (optionally Linear -> BN -> neuron -> Linear), logits averaged over
    time.

    Args:
        in_channels (int): channels of the last stage.
        num_classes (int): classes.
        hidden (int or None, optional): width of a spiking hidden layer (ResNet-19). (default: ``None``)
        make_neuron (callable or None, optional): neuron factory, needed with ``hidden``.

    Shapes:
        - **input:** spikes :math:`(T, N, C, H, W)`
        - **output:** logits :math:`(N, \text{classes})` (mean over :math:`T`)
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int | None = None,
                 make_neuron: NeuronFactory | None = None) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        if hidden is None:
            self.hidden = None
            self.fc = nn.Linear(in_channels, num_classes)
        else:
            if make_neuron is None:
                raise ValueError("ClassifierHead: a hidden spiking layer needs make_neuron")
            self.hidden = nn.Linear(in_channels, hidden, bias=False)
            self.hidden_bn = RateBPBatchNorm1d(hidden)
            self.hidden_neuron = make_neuron()
            self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        T, N = x.shape[:2]
        y = self.pool(x.flatten(0, 1)).flatten(1)
        if self.hidden is not None:
            y = self.hidden_bn(self.hidden(y))
            y = self.hidden_neuron(y.view(T, N, -1)).flatten(0, 1)
        return self.fc(y).view(T, N, -1).mean(0)
