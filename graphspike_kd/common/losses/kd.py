"""Hinton knowledge distillation (soft-target KL)."""

from __future__ import annotations

from torch import Tensor, nn

from graphspike_kd.common.losses._validation import check_reduction, check_temperature
from graphspike_kd.common.losses.soft_target import _soft_target
from graphspike_kd.common.registry import register_loss


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 4.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Soft-target distillation loss of Hinton, Vinyals and Dean (2015).

    .. math::
        \mathcal{L}_{KD} = \frac{T^2}{N} \sum_{i=1}^{N} \sum_{c=1}^{C}
            p^t_{ic} \left(\log p^t_{ic} - \log p^s_{ic}\right),
        \qquad p^{s}_{i} = \mathrm{softmax}(z^s_i / T),\; p^{t}_{i} = \mathrm{softmax}(z^t_i / T)

    The KL divergence is summed over classes and averaged over the batch ("batchmean"; PyTorch's
    ``reduction='mean'`` would also divide by ``C``). The :math:`T^2` factor keeps gradient magnitudes
    comparable across temperatures. The cross-entropy term of the paper is left to the caller. This is
    :func:`~graphspike_kd.common.losses.soft_target_loss` with ``t2_scale=True`` (which also offers
    probability targets, masks and per-sample weights).

    Args:
        student_logits: student logits.
        teacher_logits: teacher logits (detach them yourself if the teacher is frozen).
        temperature (float, optional): softening temperature :math:`T`. (default: ``4.0``, the CIFAR
            setting of mdistiller / RepDistiller)
        reduction (str, optional): ``"mean"`` over the batch, ``"sum"``, or ``"none"`` for the ``[N]``
            per-sample values. (default: ``"mean"``)

    Shapes:
        - **input:** student_logits :math:`(N, C)`, teacher_logits :math:`(N, C)`, any float dtype
          (fp16/bf16 are upcast; the math runs in fp32, or fp64 for fp64 inputs)
        - **output:** scalar, or :math:`(N)` with ``reduction="none"``

    Reference: G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network",
    arXiv:1503.02531.
    """
    check_temperature(temperature, "kd_loss")
    check_reduction(reduction, "kd_loss")
    return _soft_target(student_logits, teacher_logits, "logits", temperature, True, "kl", None, None,
                        reduction, "kd_loss")


@register_loss("kd")
class KDLoss(nn.Module):
    """Module form of :func:`kd_loss`; ``forward(student_logits, teacher_logits, target=None)``
    ignores ``target`` (add the cross-entropy term yourself)."""

    def __init__(self, temperature: float = 4.0, reduction: str = "mean") -> None:
        super().__init__()
        check_temperature(temperature, "KDLoss")
        check_reduction(reduction, "KDLoss")
        self.temperature = temperature
        self.reduction = reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        return kd_loss(student_logits, teacher_logits, temperature=self.temperature, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"
