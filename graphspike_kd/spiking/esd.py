r"""Enhanced self-distillation (ESD) on rate-BP: ANN branches on firing rates and a reliable teacher.

Zhao, Yu, Yu, Liu, Wang, "Enhanced Self-Distillation Framework for Efficient Spiking Neural Network
Training", NeurIPS 2025 (official code ``Intelli-Chip-Lab/enhanced-self-distillation-framework-for-snn``:
``model/layer.py`` for the loss and teacher, ``model/resnet.py`` for the branches).

Lightweight ReLU branches (:class:`DeepConv` stacks, avg-pool, linear) read the rate-pass firing rates
after the first stages of a spiking backbone; together with the SNN head they give ``L`` exits
:math:`z_1, \dots, z_L` (the SNN head is :math:`z_L`). Per sample, the exits whose argmax is the label
form the reliable set :math:`R_n`; the teacher is the mean of their logits (detached), and samples with
no correct exit are excluded from the distillation term:

.. math::
    z^{T}_n = \frac{1}{|R_n|}\sum_{i \in R_n} z_{i,n}, \qquad
    \mathcal{L} = \frac{1}{T}\Big[\alpha \sum_{i=1}^{L} \mathrm{CE}(z_i, y)
        + \beta \sum_{i=1}^{L} \tau^2\, \mathrm{KL}\big(\mathrm{softmax}(z^T/\tau)\,\|\,
        \mathrm{softmax}(z_i/\tau)\big)\Big]

with :math:`\tau = 3`, :math:`\alpha = 1`, :math:`\beta = 0.3` (0.1 for DVS); the KL is averaged over
the valid samples. Branches are used in training only; inference is the plain SNN. Branch BatchNorms are
ordinary ``nn.BatchNorm2d`` (flagged ``ann_branch``), so the rate-BP hooks leave them alone and they
update their running statistics normally.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphspike_kd.common.losses import soft_target_loss
from graphspike_kd.spiking.models.base import SpikingNet
from graphspike_kd.spiking.neurons import reset_net
from graphspike_kd.spiking.ratebp import mode, scale_grad, set_mode, spike_pass, time_average

__all__ = ["DeepConv", "ESDBranch", "ESDNet", "reliable_teacher", "esd_loss", "esd_step_loss"]


def _branch_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    bn.ann_branch = True  # type: ignore[attr-defined]  # rate-BP leaves branch BNs alone
    return bn


class DeepConv(nn.Module):
    r"""ESD's ReLU branch block (stride 2): a depthwise-separable main path plus a 1x1 shortcut.

    .. math::
        \mathrm{main}(x) &= \mathrm{ReLU}(\mathrm{BN}(P_2\, D_2\, \mathrm{ReLU}(\mathrm{BN}(P_1 D_1 x)))),
        \qquad \mathrm{out} = \mathrm{ReLU}(\mathrm{main}(x) + \mathrm{BN}(W_s x))

    with :math:`D_1` depthwise 3x3 stride 2, :math:`P_1` 1x1 (``cin -> cin``), :math:`D_2` depthwise 3x3,
    :math:`P_2` 1x1 (``cin -> cout``), :math:`W_s` 1x1 stride 2.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.

    Shapes:
        - **input:** :math:`(N, C_{in}, H, W)`
        - **output:** :math:`(N, C_{out}, \lceil H/2 \rceil, \lceil W/2 \rceil)`
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        cin, cout = in_channels, out_channels
        self.main = nn.Sequential(
            nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.Conv2d(cin, cin, 1, bias=False),
            _branch_bn(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
            _branch_bn(cout), nn.ReLU(inplace=True),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), _branch_bn(cout))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.main(x) + self.shortcut(x))


class ESDBranch(nn.Module):
    r"""A chain of :class:`DeepConv` blocks (channels doubling up to ``out_channels``), global average
    pool, linear.

    Args:
        in_channels (int): channels of the tapped stage.
        out_channels (int): channels after the last block (the backbone's last-stage width).
        num_blocks (int): number of stride-2 blocks (>= 1).
        num_classes (int): classes.

    Shapes:
        - **input:** rates :math:`(N, C_{in}, H, W)`
        - **output:** logits :math:`(N, \text{classes})`
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, num_classes: int) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"ESDBranch: num_blocks must be >= 1, got {num_blocks}")
        blocks = []
        c = in_channels
        for j in range(num_blocks):
            nxt = out_channels if j == num_blocks - 1 else min(2 * c, out_channels)
            blocks.append(DeepConv(c, nxt))
            c = nxt
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.blocks(x)).flatten(1))


class ESDNet(nn.Module):
    r"""A spiking backbone plus ESD branches on the outputs of some of its stages.

    The number of blocks of each branch is the number of halvings from the tapped stage's resolution to
    the last stage's (at least 1), which reproduces the official ResNet-18 branches (stage 1: 64 -> 128
    -> 256 -> 512, stage 2: 128 -> 256 -> 512, stage 3: 256 -> 512). Shapes are probed once with a zero
    input of ``input_shape``.

    Args:
        backbone (SpikingNet): a model of :mod:`graphspike_kd.spiking.models`.
        num_classes (int): classes.
        input_shape (tuple): ``(C, H, W)`` of one input image / frame.
        branch_stages (list of int or None, optional): stage indices to tap; default every stage but the
            last, at most the first three (the paper's stages 1-3). (default: ``None``)

    Shapes:
        - **input:** as the backbone
        - **output:** ``forward`` = the backbone's logits :math:`(N, \text{classes})` (the plain SNN);
          :meth:`exits` = a list of ``len(branch_stages) + 1`` logits, the SNN head last
    """

    def __init__(self, backbone: SpikingNet, num_classes: int, input_shape: tuple[int, int, int],
                 branch_stages: list[int] | None = None) -> None:
        super().__init__()
        if not isinstance(backbone, SpikingNet):
            raise TypeError(f"ESDNet needs a graphspike_kd.spiking.models.SpikingNet backbone, got "
                            f"{type(backbone).__name__}")
        self.backbone = backbone
        shapes = self._probe(backbone, input_shape)
        n_stages = len(shapes)
        if branch_stages is None:
            branch_stages = list(range(min(3, n_stages - 1)))
        if not branch_stages:
            raise ValueError(f"ESDNet: the backbone has {n_stages} stage(s); ESD needs at least one stage "
                             "before the last to tap")
        for i in branch_stages:
            if not 0 <= i < n_stages - 1:
                raise ValueError(f"ESDNet: branch stage {i} out of range 0..{n_stages - 2}")
        self.branch_stages = list(branch_stages)
        c_last, h_last = shapes[-1][0], shapes[-1][1]
        branches = []
        for i in self.branch_stages:
            c, h = shapes[i][0], shapes[i][1]
            halvings = max(1, round(math.log2(max(h, 1) / max(h_last, 1))))
            branches.append(ESDBranch(c, c_last, halvings, num_classes))
        self.branches = nn.ModuleList(branches)

    @staticmethod
    def _probe(backbone: SpikingNet, input_shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        was_training = backbone.training
        set_mode(backbone, "plain")
        backbone.eval()
        try:
            with torch.no_grad():
                p = next(backbone.parameters())
                x = torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device)
                _, stages = backbone(x, T=1, return_stages=True)
        finally:
            backbone.train(was_training)
            reset_net(backbone)
        return [tuple(s.shape[2:]) for s in stages]  # type: ignore[misc]

    def forward(self, x: Tensor, T: int | None = None) -> Tensor:
        return self.backbone(x, T=T)

    def exits(self, x: Tensor, T: int | None = None) -> list[Tensor]:
        """All exits' logits for ``x``: branch logits on the stage outputs averaged over time (in the
        rate-BP rate pass: the firing rates), then the SNN head."""
        logits, stages = self.backbone(x, T=T, return_stages=True)
        pairs = zip(self.branch_stages, self.branches, strict=True)
        outs = [branch(stages[i].mean(0)) for i, branch in pairs]
        return outs + [logits]


def _stack(exit_logits: list[Tensor] | Tensor, where: str) -> Tensor:
    z = torch.stack(list(exit_logits)) if not isinstance(exit_logits, Tensor) else exit_logits
    if z.dim() != 3:
        raise ValueError(f"{where}: exit logits must be a list of [N, C] tensors or [L, N, C], got "
                         f"{tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise ValueError(f"{where}: exit logits contain non-finite values")
    return z


def reliable_teacher(exit_logits: list[Tensor] | Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    r"""ESD's reliable teacher: per sample the mean logits of the exits that classify it correctly.

    Args:
        exit_logits (list of Tensor or Tensor): ``L`` logits ``[N, C]`` (or one ``[L, N, C]`` tensor).
        target (Tensor): labels ``[N]``.

    Returns:
        ``(teacher, valid)``: detached teacher logits ``[N, C]`` (zeros where no exit is right) and the
        boolean mask ``[N]`` of samples with at least one correct exit.
    """
    z = _stack(exit_logits, "reliable_teacher").detach()
    L, N, C = z.shape
    if target.shape != (N,):
        raise ValueError(f"reliable_teacher: target has shape {tuple(target.shape)}, expected ({N},)")
    if N and (target.min() < 0 or target.max() >= C):
        raise ValueError(f"reliable_teacher: target values must be in [0, {C}), got "
                         f"[{int(target.min())}, {int(target.max())}]")
    correct = (z.argmax(-1) == target.unsqueeze(0)).to(z.dtype)  # [L, N]
    count = correct.sum(0)
    teacher = (z * correct.unsqueeze(-1)).sum(0) / count.clamp(min=1.0).unsqueeze(-1)
    return teacher, count > 0


def esd_loss(exit_logits: list[Tensor] | Tensor, target: Tensor, *, T: int, alpha: float = 1.0,
             beta: float = 0.3, temperature: float = 3.0) -> dict[str, Tensor]:
    r"""The ESD loss (module docstring) for the exits' logits, SNN head last.

    Args:
        exit_logits (list of Tensor or Tensor): ``L`` logits ``[N, C]``.
        target (Tensor): labels ``[N]``.
        T (int): time steps (the loss is divided by ``T``).
        alpha (float, optional): CE weight. (default: ``1.0``)
        beta (float, optional): self-distillation weight (0.1 for DVS). (default: ``0.3``)
        temperature (float, optional): :math:`\tau`. (default: ``3.0``)

    Returns:
        dict: ``"loss"`` (the total, divided by ``T``; backpropagate it), ``"ce"`` (:math:`\sum_i`
        CE, undivided), ``"sd"`` (:math:`\sum_i` of the :math:`\tau^2`-scaled KL, undivided),
        ``"teacher_valid"`` (fraction of samples with a correct exit).
    """
    if T < 1 or temperature <= 0:
        raise ValueError(f"esd_loss: need T >= 1 and temperature > 0, got T={T}, temperature={temperature}")
    z = _stack(exit_logits, "esd_loss")
    teacher, valid = reliable_teacher(z, target)
    zf = z.float()
    ce = sum(F.cross_entropy(zi, target) for zi in zf)
    if bool(valid.any()):
        teacher_valid = teacher[valid].float()
        sd = sum(soft_target_loss(zi[valid], teacher_valid, temperature=temperature) for zi in zf)
        sd = sd * temperature**2
    else:
        sd = zf.sum() * 0.0  # no reliable teacher anywhere: no distillation, graph kept
    loss = (alpha * ce + beta * sd) / T
    return {"loss": loss, "ce": ce.detach(), "sd": sd.detach(), "teacher_valid": valid.float().mean()}


def esd_step_loss(model: ESDNet, x: Tensor, target: Tensor, T: int | None = None, *, lean: bool = False,
                  steps_per_call: int | None = None, alpha: float = 1.0, beta: float = 0.3,
                  temperature: float = 3.0, grad_scale: float | None = None) -> dict[str, Any]:
    """One ESD training batch: rate-BP spike pass of the backbone, rate pass through backbone and branches,
    :func:`esd_loss`. Returns the loss dict plus ``"logits"`` (the SNN head's rate-pass logits) and
    ``"exit_logits"``. ``grad_scale`` replaces the official :math:`1/T` on the gradient (the gradient is
    ``grad_scale`` times that of the undivided loss; the logged value stays divided by ``T``)."""
    steps = x.shape[0] if x.dim() == 5 else T
    if steps is None:
        raise ValueError("esd_step_loss: static input needs T")
    spike_pass(model.backbone, x, steps, lean=lean, steps_per_call=steps_per_call)
    with mode(model.backbone, "rate"):
        exits = model.exits(time_average(x), T=1)
    out: dict[str, Any] = esd_loss(exits, target, T=int(steps), alpha=alpha, beta=beta,
                                   temperature=temperature)
    if grad_scale is not None:
        out["loss"] = scale_grad(out["loss"], grad_scale * steps)
    out["logits"] = exits[-1]
    out["exit_logits"] = exits
    return out

