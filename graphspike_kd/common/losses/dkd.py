"""Decoupled knowledge distillation (DKD): target-class and non-target-class terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphspike_kd.common.losses._validation import (
    check_finite,
    check_logits,
    check_reduction,
    check_temperature,
    check_weight,
    reduce,
)
from graphspike_kd.common.registry import register_loss


def _dkd_rows(s: Tensor, t: Tensor, y: Tensor, temperature: float, wide: bool) -> dict[str, Tensor]:
    r"""Per-row TCKD, NCKD and the teacher's target probability.

    With ``wide``, in float64 (any finite float32 logits), and with :math:`0 \log 0 = 0` enforced where
    a probability underflows to exactly 0.
    """
    if wide:
        # float64 holds any float32 logit over any practical T; no shift by the row maximum, which
        # would bury the non-target logits' differences under the target's magnitude.
        zs, zt = s.double() / temperature, t.double() / temperature
    else:
        zs = s / temperature if temperature != 1 else s
        zt = t / temperature if temperature != 1 else t
    index = y[:, None]
    a_s, e_s, ell_s, d_s = _shifted_parts(zs, index)
    a_t, e_t, ell_t, d_t = _shifted_parts(zt, index)
    # binary [log p_y, log(1 - p_y)] = [-softplus(d), -softplus(-d)] with d = log(1 - p_y) - log p_y
    log_b_s = -F.softplus(torch.cat([d_s, -d_s], dim=1))
    log_b_t = -F.softplus(torch.cat([d_t, -d_t], dim=1))
    b_t = log_b_t.exp()
    # teacher distribution over the non-target classes (exactly 0 at the target), and log q_t - log q_s
    # there from the shifted logits (finite at the target, where it meets q_t = 0)
    q_t = e_t / ell_t.exp()
    diff = (a_t - a_s) - (ell_t - ell_s)
    tckd_diff = log_b_t - log_b_s
    if wide:
        diff = torch.where(q_t > 0, diff, 0.0)
        tckd_diff = torch.where(b_t > 0, tckd_diff, 0.0)
    return {
        "tckd": (b_t * tckd_diff).sum(dim=1),
        "nckd": (q_t * diff).sum(dim=1),
        "teacher_target_prob": b_t[:, 0],
    }


def _shifted_parts(z: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""For logits ``z`` and target ``index`` ``[N, 1]``, with :math:`m` the largest non-target logit:
    ``z - m``; :math:`e^{z_c - m}` (0 at the target); :math:`\ell = \log\sum_{c \ne y} e^{z_c - m}`
    (in :math:`[0, \log(C-1)]`); and :math:`d = m + \ell - z_y = \log(1 - p_y) - \log p_y`.

    Every log-probability is built from differences of logits and these bounded logs, never from an
    absolute log-sum-exp, so it keeps its precision however large the logits are.
    """
    masked = z.scatter(1, index, float("-inf"))
    m = masked.detach().amax(dim=1, keepdim=True)  # the loss is invariant to it: no gradient needed
    e = torch.exp(masked - m)
    ell = torch.log(e.sum(dim=1, keepdim=True))
    a = z - m
    return a, e, ell, ell - a.gather(1, index)


# The direct path's teacher gradient multiplies the upstream gradient by a log-ratio before the
# (possibly zero) probability; past this size of the softened logits that can overflow to inf * 0.
_DIRECT_TEACHER_GRAD_LIMIT = 1e30


def _dkd_terms(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float,
               loss_name: str) -> tuple[dict[str, Tensor], torch.dtype]:
    check_temperature(temperature, loss_name)
    s, t, y = check_logits(
        student_logits, teacher_logits, target, loss_name=loss_name, min_classes=2, check_values=False
    )
    assert y is not None
    wide = False
    if t.requires_grad:
        span = float(s.detach().abs().amax()) + float(t.detach().abs().amax())
        wide = not span / temperature * max(1.0, temperature**2) <= _DIRECT_TEACHER_GRAD_LIMIT
    terms = None if wide else _dkd_rows(s, t, y, temperature, wide=False)
    if terms is None or not bool(torch.isfinite(terms["tckd"] + terms["nckd"]).all()):
        check_finite(s, "student_logits", loss_name)  # a NaN or inf input reaches the terms
        check_finite(t, "teacher_logits", loss_name)
        terms = _dkd_rows(s, t, y, temperature, wide=True)
    return terms, s.dtype


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
    terms, dtype = _dkd_terms(student_logits, teacher_logits, target, temperature, "dkd_loss")
    return {k: v.to(dtype) for k, v in terms.items()}


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
    which can give ``-inf``), from log-sum-exps of the target and non-target logits, so the
    non-target distribution needs no second softmax; logits of any finite magnitude give a finite
    gradient (and a finite value whenever the exact one is representable). With ``C = 2`` there is a
    single non-target class, so NCKD is exactly 0 and DKD reduces to :math:`T^2 \alpha\, \mathrm{KL}`;
    ``C = 1`` raises.

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
    check_weight(alpha, "alpha", "dkd_loss")
    check_weight(beta, "beta", "dkd_loss")
    check_reduction(reduction, "dkd_loss")
    terms, dtype = _dkd_terms(student_logits, teacher_logits, target, temperature, "dkd_loss")
    per_sample = (alpha * terms["tckd"] + beta * terms["nckd"]) * (temperature * temperature)
    if not bool(torch.isfinite(per_sample).all()):  # finite terms, overflowing weighted sum
        tckd, nckd = terms["tckd"].double(), terms["nckd"].double()
        per_sample = (alpha * tckd + beta * nckd) * (temperature * temperature)
    return reduce(per_sample.to(dtype), reduction, "dkd_loss")


@register_loss("dkd")
class DKDLoss(nn.Module):
    """Module form of :func:`dkd_loss`; ``forward(student_logits, teacher_logits, target)`` (target
    required)."""

    def __init__(
        self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        check_temperature(temperature, "DKDLoss")
        check_weight(alpha, "alpha", "DKDLoss")
        check_weight(beta, "beta", "DKDLoss")
        check_reduction(reduction, "DKDLoss")
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
