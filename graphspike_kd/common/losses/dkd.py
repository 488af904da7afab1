"""Decoupled knowledge distillation (DKD): target-class and non-target-class terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphspike_kd.common.losses._validation import check_logits, check_temperature, reduce
from graphspike_kd.common.registry import register_loss


def _binary_log_probs(logits: Tensor, target_mask: Tensor) -> Tensor:
    """``[N, 2]`` log-probabilities ``[log p_t, log(1 - p_t)]``, computed in log space."""
    lse_all = torch.logsumexp(logits, dim=1)
    log_p_target = logits.masked_select(target_mask) - lse_all
    lse_rest = torch.logsumexp(logits.masked_fill(target_mask, float("-inf")), dim=1)
    return torch.stack([log_p_target, lse_rest - lse_all], dim=1)


def _non_target_logits(logits: Tensor, target_mask: Tensor) -> Tensor:
    n, c = logits.shape
    return logits.masked_select(~target_mask).view(n, c - 1)


def dkd_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    *,
    temperature: float = 4.0,
) -> dict[str, Tensor]:
    r"""Per-sample TCKD and NCKD (not yet scaled by :math:`T^2` or weighted), and the teacher's
    target probability.

    Returns a dict with ``"tckd"``, ``"nckd"`` and ``"teacher_target_prob"``, each of shape ``[N]``.
    They satisfy :math:`\mathrm{KL}(p^t \| p^s) = \mathrm{TCKD} + (1 - p^t_y)\,\mathrm{NCKD}`
    per sample (all at temperature :math:`T`). See :func:`dkd_loss` for the definitions.
    """
    check_temperature(temperature, "dkd_loss")
    s, t, y = check_logits(student_logits, teacher_logits, target, loss_name="dkd_loss", min_classes=2)
    assert y is not None
    s = s / temperature
    t = t / temperature
    mask = F.one_hot(y, s.shape[1]).bool()
    log_b_s = _binary_log_probs(s, mask)
    log_b_t = _binary_log_probs(t, mask)
    tckd = F.kl_div(log_b_s, log_b_t, reduction="none", log_target=True).sum(dim=1)
    log_q_s = F.log_softmax(_non_target_logits(s, mask), dim=1)
    log_q_t = F.log_softmax(_non_target_logits(t, mask), dim=1)
    nckd = F.kl_div(log_q_s, log_q_t, reduction="none", log_target=True).sum(dim=1)
    return {"tckd": tckd, "nckd": nckd, "teacher_target_prob": log_b_t[:, 0].exp()}


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Decoupled knowledge distillation of Zhao et al. (CVPR 2022).

    With :math:`b = [p_y, 1 - p_y]` the binary target/non-target probabilities and
    :math:`\hat p_c = p_c / (1 - p_y)` (:math:`c \ne y`) the distribution over the non-target
    classes, all at temperature :math:`T`:

    .. math::
        \mathrm{TCKD} = \mathrm{KL}(b^t \| b^s), \qquad
        \mathrm{NCKD} = \mathrm{KL}(\hat p^t \| \hat p^s), \qquad
        \mathcal{L}_{DKD} = T^2 \left(\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}\right)

    Classic KD decomposes as :math:`\mathrm{KL}(p^t\|p^s) = \mathrm{TCKD} + (1 - p^t_y)\mathrm{NCKD}`.
    No cross-entropy term and no warm-up: the paper's ``min(epoch / 20, 1)`` factor belongs to the
    trainer. Everything is computed in log space (the reference code takes the log of a softmax,
    which can give ``-inf``). With ``C = 2`` there is a single non-target class, so NCKD is exactly 0
    and DKD reduces to :math:`T^2 \alpha\, \mathrm{KL}`; ``C = 1`` raises.

    Args:
        student_logits: student logits.
        teacher_logits: teacher logits.
        target: ground-truth class ids.
        alpha (float, optional): TCKD weight. (default: ``1.0``)
        beta (float, optional): NCKD weight; the paper uses 8 for ResNet32x4→ResNet8x4, 2 or 6 for other
            CIFAR pairs and 0.5 on ImageNet. (default: ``8.0``)
        temperature (float, optional): :math:`T`. (default: ``4.0``; 1 on ImageNet)
        reduction (str, optional): ``"mean"``, ``"sum"`` or ``"none"``. (default: ``"mean"``)

    Shapes:
        - **input:** student_logits :math:`(N, C)`, teacher_logits :math:`(N, C)`, target :math:`(N)`
          integer in :math:`[0, C)`
        - **output:** scalar, or :math:`(N)` with ``reduction="none"``

    Reference: B. Zhao, Q. Cui, R. Song, Y. Qiu, J. Liang, "Decoupled Knowledge Distillation",
    CVPR 2022, arXiv:2203.08679.
    """
    terms = dkd_terms(student_logits, teacher_logits, target, temperature=temperature)
    per_sample = temperature**2 * (alpha * terms["tckd"] + beta * terms["nckd"])
    return reduce(per_sample, reduction, "dkd_loss")


@register_loss("dkd")
class DKDLoss(nn.Module):
    """Module form of :func:`dkd_loss`; ``forward(student_logits, teacher_logits, target)`` (target
    required)."""

    def __init__(
        self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        check_temperature(temperature, "DKDLoss")
        self.alpha, self.beta, self.temperature, self.reduction = alpha, beta, temperature, reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        if target is None:
            raise ValueError("DKDLoss needs the ground-truth target: call loss(student, teacher, target)")
        return dkd_loss(
            student_logits,
            teacher_logits,
            target,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}"
