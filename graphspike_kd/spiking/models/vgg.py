r"""Spiking VGG family (VGGSNN / VGG-9, VGG-11) with average pooling, for rate-BP and BPTT."""

from __future__ import annotations

from typing import Any

from torch import nn

from graphspike_kd.spiking.models.base import SpikingNet
from graphspike_kd.spiking.models.layers import ClassifierHead, ConvBNNeuron, SeqAvgPool, neuron_factory

__all__ = ["SpikingVGG", "VGG_CONFIGS", "vggsnn", "vgg9", "vgg11"]

#: Layer lists: an int is a conv3x3 + BN + neuron with that many channels, ``"A"`` an ``AvgPool2d(2)``.
#: The first entry is the stem. VGGSNN (= VGG-9: 8 convs + 1 linear) is the TET / rate-BP DVS model.
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vggsnn": [64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"],
    "vgg11": [64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512],
}


class SpikingVGG(SpikingNet):
    r"""Spiking VGG: ``cfg`` of conv widths and ``"A"`` (avg-pool 2); stages end at each pool.

    .. math::
        S^{l}[t] = \mathrm{LIF}\big(\mathrm{BN}(W^{l} * S^{l-1}[t])\big), \qquad
        \text{logits} = \frac{1}{T}\sum_t W_{fc}\,\mathrm{GAP}(S^{L}[t])

    Args:
        cfg (list): layer list, e.g. ``[64, 128, "A", 256, "A"]`` (first entry: stem width).
        in_channels (int, optional): (default: ``3``)
        num_classes (int, optional): (default: ``10``)
        T (int, optional): time steps for static input. (default: ``4``)
        neuron (dict, optional): neuron config (``kind`` + neuron kwargs); default
            :data:`~graphspike_kd.spiking.models.layers.RATEBP_NEURON` (the official rate-BP LIF).

    Shapes:
        - **input:** :math:`(N, C, H, W)` or frames :math:`(T, N, C, H, W)`
        - **output:** :math:`(N, \text{classes})`
    """

    def __init__(self, cfg: list[int | str], in_channels: int = 3, num_classes: int = 10, T: int = 4,
                 neuron: dict[str, Any] | None = None) -> None:
        if not cfg or not isinstance(cfg[0], int):
            raise ValueError(f"SpikingVGG: cfg must start with the stem width (an int), got {cfg!r}")
        make = neuron_factory(neuron)
        stages: list[nn.Module] = []
        current: list[nn.Module] = []
        widths: list[int] = []
        width = cfg[0]
        for item in cfg[1:]:
            if item == "A":
                current.append(SeqAvgPool(2))
                stages.append(nn.Sequential(*current))
                widths.append(width)
                current = []
            elif isinstance(item, int) and item > 0:
                current.append(ConvBNNeuron(width, item, make))
                width = item
            else:
                raise ValueError(f"SpikingVGG: cfg entries must be positive ints or 'A', got {item!r}")
        if current:
            stages.append(nn.Sequential(*current))
            widths.append(width)
        if not stages:
            raise ValueError(f"SpikingVGG: cfg {cfg!r} has no layer after the stem")
        super().__init__(in_channels, cfg[0], stages, ClassifierHead(width, num_classes), make, T, widths)
        self.cfg = list(cfg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cfg={self.cfg}, in_channels={self.in_channels}, T={self.T})"


def vggsnn(**kwargs: Any) -> SpikingVGG:
    """VGGSNN (TET / rate-BP DVS model): ``64, 128, A, 256, 256, A, 512, 512, A, 512, 512, A``."""
    return SpikingVGG(VGG_CONFIGS["vggsnn"], **kwargs)


vgg9 = vggsnn


def vgg11(**kwargs: Any) -> SpikingVGG:
    """VGG-11 (CIFAR): ``64, A, 128, A, 256, 256, A, 512, 512, A, 512, 512``."""
    return SpikingVGG(VGG_CONFIGS["vgg11"], **kwargs)
