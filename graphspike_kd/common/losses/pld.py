"""PLD: Plackett-Luce distillation, a list-wise loss on the teacher-optimal ranking."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from graphspike_kd.common.losses._validation import (
    check_finite,
    check_logits,
    check_reduction,
    check_temperature,
    reduce,
)
from graphspike_kd.common.losses.soft_target import wide_log_softmax
from graphspike_kd.common.registry import register_loss


def teacher_optimal_permutation(teacher_logits: Tensor, target: Tensor) -> Tensor:
    r"""The permutation :math:`\pi^*` of PLD: the target class first, then the other classes by
    teacher logit in descending order (ties by lower class index first).

    Shapes: teacher_logits :math:`(N, C)`, target :math:`(N)` → :math:`(N, C)` class indices.
    """
    return _reverse_teacher_order(teacher_logits, target).flip(1)


def _reverse_teacher_order(teacher_logits: Tensor, target: Tensor, flat: bool = False) -> Tensor:
    r""":math:`\pi^*` read backwards (target last), as an int64 ``[N, C]`` tensor on the input's device
    (with ``flat``: as ``[N * C]`` indices into the flattened ``[N, C]`` logits, row ``i`` offset by
    ``i * C``).

    PyTorch's CPU sort is slow and dominates PLD's cost, so CPU tensors are sorted with numpy: float32
    rows by one sort of packed (value, index) integers (:func:`_reverse_order_packed`, exact tie order
    for free); float64 rows by an unstable argsort, re-sorting stably the few rows with tied teacher
    logits so the documented tie order holds exactly.
    """
    key = teacher_logits.detach().scatter(1, target[:, None], float("inf"))
    if key.device.type == "cpu" and key.dtype == torch.float32:
        return _reverse_order_packed(key.numpy(), flat)  # key is a fresh copy: modified in place
    order = _reverse_order_argsort(key)
    if not flat:
        return order
    n, c = order.shape
    return (order + torch.arange(0, n * c, c, device=order.device)[:, None]).view(-1)


def _reverse_order_argsort(key: Tensor) -> Tensor:
    if key.device.type != "cpu":
        return torch.argsort(key, dim=1, descending=True, stable=True).flip(1)
    values = key.numpy()
    order = np.argsort(values, axis=1)
    ranked = np.take_along_axis(values, order, axis=1)
    tied_rows = np.flatnonzero((ranked[:, 1:] == ranked[:, :-1]).any(axis=1))
    if tied_rows.size:
        # Ascending values, ties by higher class index first: a stable sort of the mirrored rows.
        c = values.shape[1]
        order[tied_rows] = c - 1 - np.argsort(values[tied_rows, ::-1], axis=1, kind="stable")
    return torch.from_numpy(order.astype(np.int64, copy=False))


def _reverse_order_packed(values: np.ndarray, flat: bool = False) -> Tensor:
    """:func:`_reverse_teacher_order` for float32 rows by one integer sort, ties included; overwrites
    ``values``.

    Each value is mapped to an int32 with the same order (the IEEE bits, with the magnitude bits of
    negative numbers flipped; -0.0 first made +0.0) and packed above ``C - 1 - index`` into an int64, so
    a plain ascending sort orders by value and, among equal values, by higher class index first.
    """
    # In place where possible: fresh large arrays cost page faults comparable to the sort itself.
    c = values.shape[1]
    values += np.float32(0.0)  # -0.0 + 0.0 = +0.0
    bits = values.view(np.int32)
    sign = bits >> 31
    sign &= np.int32(0x7FFFFFFF)
    bits ^= sign
    packed = bits.astype(np.int64)
    packed <<= 32
    packed |= np.arange(c - 1, -1, -1, dtype=np.int64)
    packed.sort(axis=1)
    packed &= np.int64(0xFFFFFFFF)
    if flat:
        n = values.shape[0]
        np.subtract(np.arange(c - 1, n * c, c, dtype=np.int64)[:, None], packed, out=packed)
        return torch.from_numpy(packed.reshape(-1))
    np.subtract(c - 1, packed, out=packed)
    return torch.from_numpy(packed)


# After a shift by the row maximum, exp(-_SAFE_RANGE[dtype]) stays a normal number of that dtype, so every
# prefix sum of exp is positive and exact to the dtype's relative precision, and the backward's weight /
# prefix ratios (at most exp(_SAFE_RANGE)) summed over up to 10^12 classes (fp32) cannot overflow.
_SAFE_RANGE = {torch.float32: 60.0, torch.float64: 600.0}


class _PLDFromSortedLogits(torch.autograd.Function):
    r"""Per-sample PLD on student logits ``s`` taken in reverse :math:`\pi^*` order (target last) and
    weights ``w`` already in that order, with an analytic, numerically stable backward.

    With prefix log-sum-exps :math:`L_i = \log\sum_{j \le i} e^{s_j}` and choice losses
    :math:`c_i = L_i - s_i`, the loss is :math:`\sum_i w_i c_i` and

    .. math:: \partial_{s_j} = \sum_{i \ge j} w_i\, e^{s_j - L_i} - w_j, \qquad \partial_{w_i} = c_i.

    ``index`` (flat indices into ``s``, or ``None`` when ``s`` is already ordered) gathers the logits
    inside, and the gradient is copied back through it directly (no zero fill, no accumulation). Narrow
    rows (span below ``_SAFE_RANGE``) use :math:`E = e^{s - \max s}` and plain cumulative sums
    (:math:`e^{s_j - L_i} = E_j / P_i`); wider rows stay in log space throughout
    (``torch.logcumsumexp`` forward, and a reversed log-cumsum-exp of :math:`\log w_i - L_i` backward),
    where autograd through ``torch.logcumsumexp`` loses accuracy in fp32.
    """

    @staticmethod
    def forward(ctx, s: Tensor, index: Tensor | None, weights: Tensor, row_max: Tensor,  # type: ignore[override]
                wide: bool) -> Tensor:
        ctx.wide = wide
        # index_select / index_copy_ on the flattened logits: faster than gather / scatter_ along dim 1
        s_rev = s if index is None else s.reshape(-1).index_select(0, index).view(s.shape)
        if wide:
            prefix_lse = torch.logcumsumexp(s_rev, dim=1)
            choice = prefix_lse - s_rev
            first, prefix = s_rev, prefix_lse
        else:
            # in place on our own copies where possible: fewer fresh [N, C] buffers
            z = s_rev.sub_(row_max[:, None]) if index is not None else s_rev - row_max[:, None]
            exp_z = torch.exp(z)
            prefix = torch.cumsum(exp_z, dim=1)
            choice = torch.log(prefix).sub_(z)
            first = exp_z
        keep_choice = ctx.needs_input_grad[2]
        ctx.save_for_backward(first, prefix, weights, choice if keep_choice else None, index)
        return (weights * choice if keep_choice else choice.mul_(weights)).sum(dim=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        first, prefix, weights, choice, index = ctx.saved_tensors
        g = grad_out[:, None]
        grad_s = grad_w = None
        if ctx.needs_input_grad[0]:
            if ctx.wide:  # first = s_rev, prefix = prefix log-sum-exp
                log_ratio = torch.log(weights) - prefix
                suffix_lse = torch.logcumsumexp(log_ratio.flip(1), dim=1).flip(1)
                grad_s = torch.exp(first + suffix_lse).sub_(weights).mul_(g)
            else:  # first = exp(s - max), prefix = its cumulative sum
                # A reversed cumulative sum: "total - prefix" would cancel catastrophically, since
                # the ratios span many orders of magnitude along a row.
                suffix = (weights / prefix).flip(1).cumsum_(dim=1).flip(1)
                grad_s = suffix.mul_(first).sub_(weights).mul_(g)
            if index is not None:
                flat = grad_s.new_empty(grad_s.numel()).index_copy_(0, index, grad_s.reshape(-1))
                grad_s = flat.view(grad_s.shape)
        if ctx.needs_input_grad[2]:
            grad_w = choice * g
        return grad_s, None, grad_w, None, None


def _per_sample_pld(s: Tensor, weights: Tensor, index: Tensor | None = None) -> Tensor:
    r"""Per-sample PLD of logits ``s`` (in reverse :math:`\pi^*` order, or taken in it by the flat
    ``index``)."""
    detached = s.detach()
    row_max = detached.amax(dim=1)  # amax and amin: far faster than aminmax along dim 1 on CPU
    span = float((row_max - detached.amin(dim=1)).max())
    wide = not span < _SAFE_RANGE.get(s.dtype, 0.0)
    return _PLDFromSortedLogits.apply(s, index, weights, row_max, wide)


def pld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Plackett-Luce distillation of Bassam, Zhu and Bian (NeurIPS 2025).

    With :math:`\pi^*` the teacher-optimal permutation (:func:`teacher_optimal_permutation`),
    weights :math:`\alpha_k = \mathrm{softmax}(z^t / T)_{\pi^*_k}` and student logits :math:`s`:

    .. math::
        \mathcal{L}_{PLD} = \sum_{k=1}^{C} \alpha_k \Big[\log \sum_{\ell=k}^{C}
            e^{s_{\pi^*_\ell}} - s_{\pi^*_k}\Big]

    a weighted sum of Plackett-Luce choice losses, averaged over the batch. Its gradient is
    :math:`\sum_k \alpha_k(\sigma_k - e_{\pi^*_k})` with :math:`\sigma_k` the student softmax
    restricted to :math:`\{\pi^*_k,\dots,\pi^*_C\}`. It replaces CE + KD (no separate CE term). The
    student logits are not temperature-scaled; :math:`T` only softens the teacher weights. Special
    cases: all teacher mass on the target gives cross-entropy; uniform weights give ListMLE / C. A
    wrong teacher shrinks the weight of the first (CE-like) step. Invariant to adding a constant to
    the student logits.

    Implementation (the paper's Appendix C form): the classes are gathered in the reverse order of
    :math:`\pi^*`, so the suffix log-sum-exp becomes one ``torch.logcumsumexp``; one sort, no loop.

    Args:
        student_logits: student logits.
        teacher_logits: teacher logits (they define the ranking and the weights; no gradient flows
            through the ranking).
        target: ground-truth class ids.
        temperature (float, optional): teacher temperature :math:`T`; 1 is best on ImageNet, the paper
            uses 4 on CIFAR-100. (default: ``1.0``)
        reduction (str, optional): ``"mean"``, ``"sum"`` or ``"none"``. (default: ``"mean"``)

    Shapes:
        - **input:** student_logits :math:`(N, C)`, teacher_logits :math:`(N, C)`, target :math:`(N)`
        - **output:** scalar, or :math:`(N)` with ``reduction="none"``

    Reference: E. Bassam, D. Zhu, K. Bian, "PLD: A Choice-Theoretic List-Wise Knowledge
    Distillation", NeurIPS 2025, arXiv:2506.12542.
    """
    check_temperature(temperature, "pld_loss")
    check_reduction(reduction, "pld_loss")
    s, t, y = check_logits(student_logits, teacher_logits, target, loss_name="pld_loss", check_values=False)
    assert y is not None
    index = _reverse_teacher_order(t, y, flat=True)  # target last; flat indices into [N, C]
    weights = torch.softmax(t / temperature if temperature != 1 else t, dim=1)
    weights = weights.reshape(-1).index_select(0, index).view(weights.shape)
    per_sample = _per_sample_pld(s, weights, index)
    if not bool(torch.isfinite(per_sample).all()):
        check_finite(s, "student_logits", "pld_loss")  # a NaN or inf input reaches the loss
        check_finite(t, "teacher_logits", "pld_loss")
        # Huge logits: teacher weights from max-shifted logits and the choice losses in float64, where
        # neither t / T nor a difference of two float32 logits can overflow; a weight of exactly 0 then
        # meets a finite choice loss, never 0 * inf.
        weights = wide_log_softmax(t, temperature).exp()
        weights = weights.reshape(-1).index_select(0, index).view(weights.shape)
        per_sample = _per_sample_pld(s.double(), weights, index).to(s.dtype)
    return reduce(per_sample, reduction, "pld_loss")


@register_loss("pld")
class PLDLoss(nn.Module):
    """Module form of :func:`pld_loss`; ``forward(student_logits, teacher_logits, target)`` (target
    required)."""

    def __init__(self, temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        check_temperature(temperature, "PLDLoss")
        check_reduction(reduction, "PLDLoss")
        self.temperature, self.reduction = temperature, reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        if target is None:
            raise ValueError("PLDLoss needs the ground-truth target: call loss(student, teacher, target)")
        return pld_loss(
            student_logits, teacher_logits, target, temperature=self.temperature, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
