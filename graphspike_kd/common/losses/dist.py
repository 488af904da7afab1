"""DIST: distillation by matching inter-class (row) and intra-class (column) Pearson correlations."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphspike_kd.common.losses._validation import (
    check_finite,
    check_logits,
    check_temperature,
    check_weight,
    upcast,
)
from graphspike_kd.common.losses.soft_target import wide_log_softmax
from graphspike_kd.common.registry import register_loss

_EPS = 1e-8


def pearson_correlation(a: Tensor, b: Tensor, dim: int = 1, eps: float = _EPS) -> Tensor:
    r"""Pearson correlation of ``a`` and ``b`` along ``dim``: the cosine of the centred vectors,

    .. math:: \rho(u, v) = \frac{\langle u - \bar u, v - \bar v\rangle}
        {\max(\|u - \bar u\|\,\|v - \bar v\|, \epsilon)}

    A zero-variance vector gets correlation 0 (as in the reference implementation, ``eps = 1e-8``).
    """
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    num = (a * b).sum(dim=dim)
    # clamp before the sqrt: its gradient at 0 would be infinite.
    den = torch.sqrt(((a * a).sum(dim=dim) * (b * b).sum(dim=dim)).clamp_min(eps * eps))
    return num / den


def dist_terms(student_probs: Tensor, teacher_probs: Tensor) -> dict[str, Tensor]:
    r"""The two DIST relation terms on probability matrices (before :math:`\tau^2` and weights).

    ``"inter"`` is :math:`1 - \frac1N\sum_i \rho(Y^s_{i,:}, Y^t_{i,:})` (per sample, across classes;
    the paper's *inter-class* relation) and ``"intra"`` is
    :math:`1 - \frac1C\sum_j \rho(Y^s_{:,j}, Y^t_{:,j})` (per class, across the batch). Both are
    invariant to a positive affine map :math:`Y \mapsto aY + b` (:math:`a > 0`) of either argument.

    Shapes: inputs :math:`(N, C)`; outputs scalars.
    """
    if student_probs.shape != teacher_probs.shape or student_probs.ndim != 2:
        raise ValueError(
            "dist_terms: expects two [N, C] matrices of the same shape, got "
            f"{tuple(student_probs.shape)} and {tuple(teacher_probs.shape)}"
        )
    s, t = upcast(student_probs), upcast(teacher_probs)
    return {
        "inter": 1.0 - pearson_correlation(s, t, dim=1).mean(),
        "intra": 1.0 - pearson_correlation(s, t, dim=0).mean(),
    }


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> Tensor:
    r"""DIST of Huang et al. (NeurIPS 2022): relational KD with Pearson correlations.

    With :math:`Y^s = \mathrm{softmax}(Z^s/\tau)`, :math:`Y^t = \mathrm{softmax}(Z^t/\tau)`
    (:math:`N \times C`) and :math:`\rho` the Pearson correlation (:func:`pearson_correlation`):

    .. math::
        \mathcal{L}_{DIST} = \tau^2 \Big[\beta \Big(1 - \frac1N \sum_i \rho(Y^s_{i,:}, Y^t_{i,:})\Big)
            + \gamma \Big(1 - \frac1C \sum_j \rho(Y^s_{:,j}, Y^t_{:,j})\Big)\Big]

    The row term is the paper's *inter-class* relation, the column term the *intra-class* one. The
    column term couples the samples of a batch, so the loss depends on batch composition and size,
    and under DDP it sees the local batch only (as in the paper's code). No cross-entropy term. The
    paper's recipe scales the whole loss by 2 (``kd_loss_weight``), i.e. :math:`\beta=\gamma=2`.

    Args:
        student_logits: student logits.
        teacher_logits: teacher logits.
        beta (float, optional): weight of the row (inter-class) term. (default: ``1.0``)
        gamma (float, optional): weight of the column (intra-class) term; needs ``N >= 2``.
            (default: ``1.0``)
        temperature (float, optional): :math:`\tau`; 1 on ImageNet, 4 on CIFAR. (default: ``1.0``)

    Shapes:
        - **input:** student_logits :math:`(N, C)`, teacher_logits :math:`(N, C)`
        - **output:** scalar (the column term has no per-sample form)

    Reference: T. Huang, S. You, F. Wang, C. Qian, C. Xu, "Knowledge Distillation from A Stronger
    Teacher", NeurIPS 2022, arXiv:2205.10536.
    """
    check_temperature(temperature, "dist_loss")
    check_weight(beta, "beta", "dist_loss")
    check_weight(gamma, "gamma", "dist_loss")
    s, t, _ = check_logits(
        student_logits, teacher_logits, loss_name="dist_loss", min_classes=2, check_values=False
    )
    if gamma != 0 and s.shape[0] < 2:
        raise ValueError(
            f"dist_loss: the intra-class (column) term needs a batch of at least 2 samples, got shape "
            f"{tuple(s.shape)}; pass gamma=0 to use the row term alone"
        )
    # x / 1 is exact: skipping it changes nothing but the cost
    y_s = torch.softmax(s / temperature if temperature != 1 else s, dim=1)
    y_t = torch.softmax(t / temperature if temperature != 1 else t, dim=1)
    terms = dist_terms(y_s, y_t)
    loss = temperature**2 * (beta * terms["inter"] + gamma * terms["intra"])
    if not math.isfinite(float(loss.detach())):
        # a NaN or inf input reaches the loss: only now are the inputs checked (and named)
        check_finite(s, "student_logits", "dist_loss")
        check_finite(t, "teacher_logits", "dist_loss")
        # huge logits: s / T overflowed; the probabilities from max-shifted logits in float64
        terms = dist_terms(wide_log_softmax(s, temperature).exp(), wide_log_softmax(t, temperature).exp())
        loss = (temperature**2 * (beta * terms["inter"] + gamma * terms["intra"])).to(s.dtype)
    return loss


@register_loss("dist")
class DISTLoss(nn.Module):
    """Module form of :func:`dist_loss`; ``target`` is ignored."""

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        check_temperature(temperature, "DISTLoss")
        check_weight(beta, "beta", "DISTLoss")
        check_weight(gamma, "gamma", "DISTLoss")
        self.beta, self.gamma, self.temperature = beta, gamma, temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        return dist_loss(
            student_logits, teacher_logits, beta=self.beta, gamma=self.gamma, temperature=self.temperature
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}"
