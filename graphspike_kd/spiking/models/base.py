r"""The common skeleton of the spiking models: stem -> stages -> classifier head."""

from __future__ import annotations

from torch import Tensor, nn

from graphspike_kd.spiking.models.layers import ClassifierHead, NeuronFactory
from graphspike_kd.spiking.ratebp import RateBPBatchNorm2d, fused_bn_neuron

__all__ = ["SpikingNet"]


class SpikingNet(nn.Module):
    r"""Stem (conv + BN + neuron), a list of stages, a classifier head; input static or frames.

    Static images ``[N, C, H, W]`` are direct-encoded: the same image is the input current of every one
    of the ``T`` steps. Because the stem's conv and BN see the same image at every step, they are
    computed once and the result is repeated ``T`` times (equal to running them on ``T`` copies; the BN
    batch statistics of identical copies are those of one copy). Frames ``[T, N, C, H, W]`` run through
    the stem step by step (time folded into the batch).

    Args:
        in_channels (int): input channels (3 for RGB, 2 for DVS polarities).
        stem_channels (int): channels of the stem conv.
        stages (list of nn.Module): multi-step stages ``[T, N, ...] -> [T, N, ...]``.
        head (ClassifierHead): the readout (logits averaged over time).
        make_neuron (callable): neuron factory of the stem.
        T (int, optional): default number of time steps for static input. (default: ``4``)
        stage_channels (list of int or None, optional): output channels of each stage; ``None`` reads
            them from each stage's last BatchNorm2d. (default: ``None``)

    Shapes:
        - **input:** :math:`(N, C, H, W)` static (``T`` steps) or :math:`(T, N, C, H, W)` frames
        - **output:** logits :math:`(N, \text{classes})`; with ``return_stages=True`` also the list of
          stage outputs :math:`(T, N, C_i, H_i, W_i)` (spikes, or rates in the rate-BP rate pass)
    """

    def __init__(self, in_channels: int, stem_channels: int, stages: list[nn.Module], head: ClassifierHead,
                 make_neuron: NeuronFactory, T: int = 4, stage_channels: list[int] | None = None) -> None:
        super().__init__()
        if int(T) < 1:
            raise ValueError(f"{type(self).__name__}: T must be >= 1, got {T!r}")
        self.T = int(T)
        self.in_channels = in_channels
        self.stem_conv = nn.Conv2d(in_channels, stem_channels, 3, 1, 1, bias=False)
        self.stem_bn = RateBPBatchNorm2d(stem_channels)
        self.stem_neuron = make_neuron()
        self.stages = nn.ModuleList(stages)
        self.head = head
        if stage_channels is None:
            stage_channels = [_out_channels(stage) for stage in self.stages]
        if len(stage_channels) != len(self.stages):
            raise ValueError(f"{type(self).__name__}: {len(stage_channels)} stage widths for "
                             f"{len(self.stages)} stages")
        self._stage_channels = list(stage_channels)

    def reset_parameters(self) -> None:
        """Re-initialise every layer (PyTorch defaults; BN weight 1, bias 0)."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def _stem(self, x: Tensor, T: int | None) -> Tensor:
        if x.dim() == 4:
            if x.shape[1] != self.in_channels:
                raise ValueError(f"{type(self).__name__}: expected {self.in_channels} input channels, got "
                                 f"input {tuple(x.shape)}")
            steps = self.T if T is None else int(T)
            if steps < 1:
                raise ValueError(f"{type(self).__name__}: T must be >= 1, got {T!r}")
            c = self.stem_conv(x)
            spikes = fused_bn_neuron(self.stem_bn, self.stem_neuron, c, steps, repeat=True)
            if spikes is not None:  # rate-BP spike pass, native neurons
                return spikes
            c = self.stem_bn(c)
            return self.stem_neuron(c.unsqueeze(0).expand(steps, *c.shape))
        if x.dim() == 5:
            if T is not None and int(T) != x.shape[0]:
                raise ValueError(f"{type(self).__name__}: frames have {x.shape[0]} steps but T={T} was given")
            if x.shape[2] != self.in_channels:
                raise ValueError(f"{type(self).__name__}: expected {self.in_channels} input channels, got "
                                 f"frames {tuple(x.shape)}")
            steps, n = x.shape[:2]
            c = self.stem_conv(x.flatten(0, 1))
            spikes = fused_bn_neuron(self.stem_bn, self.stem_neuron, c, steps)
            if spikes is not None:
                return spikes
            c = self.stem_bn(c)
            return self.stem_neuron(c.view(steps, n, *c.shape[1:]))
        raise ValueError(f"{type(self).__name__}: input must be [N, C, H, W] (static) or [T, N, C, H, W] "
                         f"(frames), got {tuple(x.shape)}")

    def forward(self, x: Tensor, T: int | None = None,
                return_stages: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        s = self._stem(x, T)
        outs = []
        for stage in self.stages:
            s = stage(s)
            outs.append(s)
        logits = self.head(s)
        return (logits, outs) if return_stages else logits

    def stage_channels(self) -> list[int]:
        """Output channels of each stage."""
        return list(self._stage_channels)


def _out_channels(stage: nn.Module) -> int:
    channels = [m.num_features for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    if not channels:
        raise ValueError(f"stage {stage!r} has no BatchNorm2d to read its channels from")
    return channels[-1]
