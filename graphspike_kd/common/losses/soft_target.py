r"""Soft-target distillation: the KL divergence or cross-entropy from a teacher distribution to the
student's softened softmax, the building block of Hinton KD and of every soft-label term in the library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from graphspike_kd.common.losses._validation import (
    check_finite,
    check_logits,
    check_reduction,
    check_temperature,
    reduce,
)

TARGET_TYPES = ("logits", "probs", "log_probs")
FORMS = ("kl", "ce")


def soft_target_loss(
    student_logits: Tensor,
    teacher: Tensor,
    *,
    target_type: str = "logits",
    temperature: float = 1.0,
    t2_scale: bool = False,
    form: str = "kl",
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    class_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Soft-target loss between a teacher distribution :math:`q` and the student's softened softmax.

    With :math:`p_i = \mathrm{softmax}(z^s_i / T)` and :math:`q_i` the teacher's distribution
    (:math:`\mathrm{softmax}(z^t_i / T)` from logits, or given directly as probabilities or
    log-probabilities, which are not re-softened):

    .. math::
        \ell^{KL}_i = \sum_{c} v_{ic}\, q_{ic} \left(\log q_{ic} - \log p_{ic}\right), \qquad
        \ell^{CE}_i = -\sum_{c} v_{ic}\, q_{ic} \log p_{ic}, \qquad
        \mathcal{L} = \frac{1}{|M|} \sum_{i \in M} w_i\, s\, \ell_i

    with :math:`s = T^2` if ``t2_scale`` else 1, :math:`w_i` the per-sample weights, :math:`v_{ic}` the
    per-class weights (both 1 by default) and :math:`M` the rows selected by ``mask`` (all by default).
    Both forms have the same gradient in the student; they differ by the (weighted) teacher entropy
    :math:`-\sum_c v_{ic} q_{ic} \log q_{ic}`. Terms with :math:`q_{ic} = 0` count 0.

    Logits of any finite magnitude are accepted: when the direct computation overflows (``|z| / T``
    beyond the dtype's range, or a row spanning more than its maximum), it is redone in float64 after
    shifting each row by its maximum, so the value is finite whenever the exact loss is representable
    and the student gradient (:math:`s\,w_i (p_i - q_i) / T` without class weights, up to the
    reduction) is always finite.

    Args:
        student_logits: student logits :math:`z^s`.
        teacher: teacher logits, probabilities or log-probabilities (see ``target_type``); detach it
            yourself if the teacher is frozen.
        target_type (str, optional): ``"logits"`` (softened by ``temperature``), ``"probs"`` or
            ``"log_probs"`` (rows of a distribution, used as given; not checked to sum to 1).
            (default: ``"logits"``)
        temperature (float, optional): softening temperature :math:`T`, finite and > 0.
            (default: ``1.0``)
        t2_scale (bool, optional): multiply each per-sample term by :math:`T^2` (Hinton's scaling,
            which keeps gradient magnitudes comparable across temperatures). (default: ``False``)
        form (str, optional): ``"kl"`` or ``"ce"``. (default: ``"kl"``)
        mask (Tensor, optional): bool ``[N]`` rows to use; must select at least one row.
            (default: ``None``, every row)
        weight (Tensor, optional): per-sample weights ``[N]`` (selected by ``mask`` like the logits),
            multiplied in before the reduction (``"mean"`` divides by the number of selected rows, not
            by the weights' sum). (default: ``None``)
        class_weight (Tensor, optional): per-class weights ``[N, C]`` :math:`v` (selected by ``mask``
            like the logits), multiplied into each class term before the sum over classes (a
            class-weighted divergence, no longer a KL unless the weights are constant). With huge logits,
            the student gradient stays finite for finite weights. (default: ``None``)
        reduction (str, optional): ``"mean"`` over the selected rows, ``"sum"``, or ``"none"`` for the
            per-row values (``[|M|]`` when masked). (default: ``"mean"``)

    Shapes:
        - **input:** student_logits :math:`(N, C)`, teacher :math:`(N, C)`, mask and weight :math:`(N)`,
          class_weight :math:`(N, C)`
        - **output:** scalar, or :math:`(N)` (:math:`(|M|)` with a mask) with ``reduction="none"``;
          fp32 math for fp16/bf16/fp32 inputs, fp64 for fp64

    Reference: G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network",
    arXiv:1503.02531.
    """
    check_temperature(temperature, "soft_target_loss")
    if target_type not in TARGET_TYPES:
        raise ValueError(f"soft_target_loss: target_type must be one of {TARGET_TYPES}, got {target_type!r}")
    if form not in FORMS:
        raise ValueError(f"soft_target_loss: form must be one of {FORMS}, got {form!r}")
    check_reduction(reduction, "soft_target_loss")
    return _soft_target(student_logits, teacher, target_type, temperature, t2_scale, form, mask, weight,
                        reduction, "soft_target_loss", class_weight)


def _soft_target(student_logits: Tensor, teacher: Tensor, target_type: str, temperature: float,
                 t2_scale: bool, form: str, mask: Tensor | None, weight: Tensor | None, reduction: str,
                 loss_name: str, class_weight: Tensor | None = None) -> Tensor:
    """:func:`soft_target_loss` after its hyper-parameter checks (for losses built on it)."""
    s, t, _ = check_logits(student_logits, teacher, loss_name=loss_name, check_values=False)
    n = s.shape[0]
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n,):
            got = f"{tuple(mask.shape)} {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"{loss_name}: mask must be a bool tensor of shape ({n},), got {got}")
        if not bool(mask.any()):
            raise ValueError(f"{loss_name}: mask selects no row")
        s, t = s[mask], t[mask]
    if weight is not None:
        if not isinstance(weight, Tensor) or tuple(weight.shape) != (n,):
            got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(f"{loss_name}: weight must be a tensor of shape ({n},), got {got}")
        if mask is not None:
            weight = weight[mask]
    if class_weight is not None:
        if not isinstance(class_weight, Tensor) or class_weight.shape != student_logits.shape:
            cw = class_weight
            got = tuple(cw.shape) if isinstance(cw, Tensor) else type(cw).__name__
            raise ValueError(
                f"{loss_name}: class_weight must be a tensor of shape {tuple(student_logits.shape)}, "
                f"got {got}"
            )
        if mask is not None:
            class_weight = class_weight[mask]
    if not (t.requires_grad and not _teacher_backward_is_safe(s, t, temperature)):
        per_row = _soft_target_rows(s, t, target_type, temperature, t2_scale, form, class_weight)
        if weight is not None:
            per_row = per_row * weight
        out = reduce(per_row, reduction, loss_name)
        # The reduced value is finite only if every row is (short of the sum itself overflowing, which
        # just takes the careful path below); one scalar check instead of one per row.
        if bool(torch.isfinite(per_row).all()) if reduction == "none" else math.isfinite(float(out.detach())):
            return out
    # A NaN or inf input reaches the rows: only now are the inputs checked (and named). Otherwise the
    # direct computation overflowed: the careful one in float64.
    check_finite(s, "student_logits", loss_name)
    check_finite(t, "teacher", loss_name)
    per_row = _soft_target_rows_wide(s, t, target_type, temperature, t2_scale, form, class_weight).to(s.dtype)
    if weight is not None:
        per_row = per_row * weight
    return reduce(per_row, reduction, loss_name)


def _soften(x: Tensor, temperature: float) -> Tensor:
    return x / temperature if temperature != 1 else x  # x / 1 is exact: skipping it changes no bit


# The direct path's teacher gradient multiplies the upstream gradient by log q - log p before the
# (possibly zero) q, so it can overflow to inf * 0 = NaN once the softened logits reach this size.
_DIRECT_TEACHER_GRAD_LIMIT = 1e30


def _teacher_backward_is_safe(s: Tensor, t: Tensor, temperature: float) -> bool:
    span = float(s.detach().abs().amax()) + float(t.detach().abs().amax())
    return span / temperature * max(1.0, temperature**2) <= _DIRECT_TEACHER_GRAD_LIMIT


def _soft_target_rows(s: Tensor, t: Tensor, target_type: str, temperature: float, t2_scale: bool,
                      form: str, class_weight: Tensor | None = None) -> Tensor:
    """Per-row loss, computed directly (may overflow for huge ``|z| / T``; the caller checks)."""
    log_p = torch.log_softmax(_soften(s, temperature), dim=1)
    if class_weight is not None:  # explicit products: kl_div has no per-class weight
        v = class_weight
        if target_type == "probs":
            q = t
            terms = v * (torch.xlogy(q, q) - q * log_p) if form == "kl" else -(v * q * log_p)
        else:
            log_q = torch.log_softmax(_soften(t, temperature), dim=1) if target_type == "logits" else t
            terms = v * log_q.exp() * (log_q - log_p) if form == "kl" else -(v * log_q.exp() * log_p)
        per_row = terms.sum(dim=1)
    elif target_type == "probs":
        q = t
        if form == "kl":
            per_row = (torch.xlogy(q, q) - q * log_p).sum(dim=1)
        else:
            per_row = -(q * log_p).sum(dim=1)
    else:
        log_q = torch.log_softmax(_soften(t, temperature), dim=1) if target_type == "logits" else t
        if form == "kl":
            per_row = F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(dim=1)
        else:
            per_row = -(log_q.exp() * log_p).sum(dim=1)
    return per_row * temperature**2 if t2_scale else per_row


def wide_log_softmax(x: Tensor, temperature: float) -> Tensor:
    r""":math:`\log\mathrm{softmax}(x / T)` along dim 1 for logits of any finite magnitude and any
    finite :math:`T > 0`, in float64.

    The row maximum is subtracted before dividing by :math:`T` (the result does not depend on it); halving
    both first keeps the difference finite even for float64 rows spanning more than its maximum. Entries
    whose probability is below the float64 range come out as ``-inf`` (probability exactly 0).
    """
    x = x.double()
    shift = x.detach().amax(dim=1, keepdim=True)
    z = (x * 0.5 - shift * 0.5) / temperature * 2.0
    return F.log_softmax(z, dim=1)


def _soft_target_rows_wide(s: Tensor, t: Tensor, target_type: str, temperature: float, t2_scale: bool,
                           form: str, class_weight: Tensor | None = None) -> Tensor:
    """:func:`_soft_target_rows` in float64 on max-shifted logits, with :math:`0 \\log 0 = 0`."""
    log_p = wide_log_softmax(s, temperature)
    # Where q = 0, log p may be -inf too; both are replaced by 0 before any product (not after, which
    # would leave 0 * inf = NaN in the gradient).
    v = class_weight.double() if class_weight is not None else None
    if target_type == "probs":
        q = t.double()
        log_p = torch.where(q > 0, log_p, 0.0)
        vq = q if v is None else v * q
        per_row = -(vq * log_p).sum(dim=1)
        if form == "kl":
            per_row = per_row + (torch.xlogy(q, q) if v is None else v * torch.xlogy(q, q)).sum(dim=1)
    else:
        log_q = wide_log_softmax(t, temperature) if target_type == "logits" else t.double()
        q = log_q.exp()
        present = q > 0
        vq = q if v is None else v * q
        if form == "kl":
            per_row = (vq * torch.where(present, log_q - log_p, 0.0)).sum(dim=1)
        else:
            per_row = -(vq * torch.where(present, log_p, 0.0)).sum(dim=1)
    return per_row * temperature * temperature if t2_scale else per_row
