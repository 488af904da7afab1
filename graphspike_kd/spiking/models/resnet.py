r"""Spiking ResNet family (ResNet-18 with the CIFAR stem, ResNet-19) for rate-BP and BPTT."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from graphspike_kd.spiking.models.base import SpikingNet
from graphspike_kd.spiking.models.layers import ClassifierHead, NeuronFactory, SeqToANN, neuron_factory
from graphspike_kd.spiking.ratebp import RateBPBatchNorm2d, fused_bn_neuron

__all__ = ["SpikingBasicBlock", "SpikingResNet", "resnet18", "resnet19"]


class SpikingBasicBlock(nn.Module):
    r"""Spiking basic block: the residual add sits before the second neuron (linear between neurons).

    .. math::
        S_1 = \mathrm{SN}(\mathrm{BN}(W_1 * S)), \qquad
        S_{out} = \mathrm{SN}\big(\mathrm{BN}(W_2 * S_1) + \mathrm{shortcut}(S)\big)

    with shortcut = identity, or conv1x1 + BN when the shape changes.

    Args:
        in_channels (int): input channels.
        channels (int): output channels.
        stride (int): stride of the first conv.
        make_neuron (callable): neuron factory.

    Shapes:
        - **input:** :math:`(T, N, C_{in}, H, W)`
        - **output:** :math:`(T, N, C, H/s, W/s)`
    """

    def __init__(self, in_channels: int, channels: int, stride: int, make_neuron: NeuronFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = RateBPBatchNorm2d(channels)
        self.neuron1 = make_neuron()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = RateBPBatchNorm2d(channels)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = SeqToANN(nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                                   RateBPBatchNorm2d(channels)))
        self.neuron2 = make_neuron()

    def forward(self, x: Tensor) -> Tensor:
        T, N = x.shape[:2]
        c = self.conv1(x.flatten(0, 1))
        y = fused_bn_neuron(self.bn1, self.neuron1, c, T)  # rate-BP spike pass, native neurons
        if y is None:
            y = self.bn1(c)
            y = self.neuron1(y.view(T, N, *y.shape[1:]))
        y = self.bn2(self.conv2(y.flatten(0, 1)))
        y = y.view(T, N, *y.shape[1:])
        y = y + (x if self.shortcut is None else self.shortcut(x))
        return self.neuron2(y)


class SpikingResNet(SpikingNet):
    r"""Spiking ResNet with a 3x3 stem (no max-pool), stages of :class:`SpikingBasicBlock`.

    Args:
        widths (list of int): channels per stage.
        blocks (list of int): blocks per stage.
        stem_channels (int): stem width.
        in_channels (int, optional): (default: ``3``)
        num_classes (int, optional): (default: ``10``)
        T (int, optional): time steps for static input. (default: ``4``)
        head_hidden (int or None, optional): hidden spiking linear layer in the head (ResNet-19: 256).
            (default: ``None``)
        neuron (dict, optional): neuron config; default the official rate-BP LIF.

    Shapes:
        - **input:** :math:`(N, C, H, W)` or frames :math:`(T, N, C, H, W)`
        - **output:** :math:`(N, \text{classes})`
    """

    def __init__(self, widths: list[int], blocks: list[int], stem_channels: int, in_channels: int = 3,
                 num_classes: int = 10, T: int = 4, head_hidden: int | None = None,
                 neuron: dict[str, Any] | None = None) -> None:
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"SpikingResNet: widths {widths} and blocks {blocks} must be non-empty and of "
                             "equal length")
        make = neuron_factory(neuron)
        stages: list[nn.Module] = []
        cin = stem_channels
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(n):
                layers.append(SpikingBasicBlock(cin, width, 2 if (j == 0 and i > 0) else 1, make))
                cin = width
            stages.append(nn.Sequential(*layers))
        head = ClassifierHead(cin, num_classes, hidden=head_hidden, make_neuron=make)
        super().__init__(in_channels, stem_channels, stages, head, make, T)
        self.widths, self.blocks = list(widths), list(blocks)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(widths={self.widths}, blocks={self.blocks}, "
                f"in_channels={self.in_channels}, T={self.T})")


def resnet18(**kwargs: Any) -> SpikingResNet:
    """ResNet-18, CIFAR stem: 64 / 128 / 256 / 512 channels, [2, 2, 2, 2] blocks."""
    return SpikingResNet([64, 128, 256, 512], [2, 2, 2, 2], 64, **kwargs)


def resnet19(**kwargs: Any) -> SpikingResNet:
    """ResNet-19: 128 / 256 / 512 channels, [3, 3, 2] blocks, head Linear 512 -> 256 + neuron -> C."""
    kwargs.setdefault("head_hidden", 256)
    return SpikingResNet([128, 256, 512], [3, 3, 2], 128, **kwargs)
