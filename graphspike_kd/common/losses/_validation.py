"""Input checks and precision handling shared by the logit losses.

Every logit loss in :mod:`graphspike_kd.common.losses` calls :func:`check_logits` first: it raises
``ValueError`` naming the offending shapes or values, and returns the logits upcast to at least
float32 (float64 stays float64, so ``torch.autograd.gradcheck`` works), so the loss math never runs in
fp16/bf16.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def upcast(x: Tensor) -> Tensor:
    """Return ``x`` in float32, or unchanged if it already has float32/float64 precision."""
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def check_finite(x: Tensor, role: str, loss_name: str) -> None:
    """Raise ``ValueError`` naming the first NaN or infinite element of ``x``."""
    # If the sum is finite, every element is (NaN and inf propagate); this is several times cheaper than
    # isfinite().all(). A non-finite sum (a bad element, or an overflow of huge finite values) pays for
    # the exact check.
    if bool(torch.isfinite(x.detach().sum())):
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        raise ValueError(
            f"{loss_name}: {role} contains non-finite values (first at index {bad}: {x[tuple(bad)].item()})"
        )


def check_logits(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor | None = None,
    *,
    loss_name: str,
    min_classes: int = 1,
    check_values: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate ``[N, C]`` student/teacher logits (and an optional ``[N]`` class target).

    Returns the logits upcast by :func:`upcast` (to a common dtype) and the target as int64. With
    ``check_values=False`` the logits' values are not checked for NaN/inf: for a loss that checks its
    own result and calls :func:`check_finite` only when that is not finite (NaN and inf propagate into
    it), which saves a pass over each input.

    Raises:
        ValueError: wrong type or ndim, shape mismatch, non-floating or non-finite logits, too few
            classes, an empty batch, or a target of the wrong shape/dtype or out of ``[0, C)``.
    """
    for role, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{loss_name}: {role} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(
                f"{loss_name}: {role} must have shape [N, C] (2 dims), got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"{loss_name}: {role} must be a floating tensor, got dtype {x.dtype}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"{loss_name}: student_logits shape {tuple(student_logits.shape)} does not match "
            f"teacher_logits shape {tuple(teacher_logits.shape)}"
        )
    n, c = student_logits.shape
    if n == 0:
        raise ValueError(f"{loss_name}: empty batch (shape {tuple(student_logits.shape)})")
    if c < min_classes:
        raise ValueError(f"{loss_name}: needs at least {min_classes} classes, got C = {c}")
    if check_values:
        check_finite(student_logits, "student_logits", loss_name)
        check_finite(teacher_logits, "teacher_logits", loss_name)
    dtype = torch.promote_types(upcast(student_logits).dtype, upcast(teacher_logits).dtype)
    s = student_logits.to(dtype)
    t = teacher_logits.to(dtype)
    if target is None:
        return s, t, None
    if not isinstance(target, Tensor):
        raise ValueError(f"{loss_name}: target must be a torch.Tensor, got {type(target).__name__}")
    if target.ndim != 1 or target.shape[0] != n:
        raise ValueError(
            f"{loss_name}: target must have shape [N] = [{n}], got shape {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"{loss_name}: target must hold integer class ids, got dtype {target.dtype}")
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi >= c:
        raise ValueError(f"{loss_name}: target values must lie in [0, {c}), got min {lo}, max {hi}")
    return s, t, target.long()


def _real(value: float, name: str, loss_name: str) -> float:
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{loss_name}: {name} must be a real number, got {value!r}") from None


def check_temperature(temperature: float, loss_name: str, name: str = "temperature") -> None:
    """Raise ``ValueError`` unless ``temperature`` is a finite real number > 0."""
    value = _real(temperature, name, loss_name)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{loss_name}: {name} must be finite and > 0, got {temperature}")


def check_weight(value: float, name: str, loss_name: str) -> None:
    """Raise ``ValueError`` unless the loss weight ``value`` (``alpha``, ``beta``, ...) is a finite real."""
    if not math.isfinite(_real(value, name, loss_name)):
        raise ValueError(f"{loss_name}: {name} must be finite, got {value}")


def check_reduction(reduction: str, loss_name: str, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``allowed``."""
    if reduction not in allowed:
        raise ValueError(f"{loss_name}: reduction must be one of {allowed}, got {reduction!r}")


def reduce(per_sample: Tensor, reduction: str, loss_name: str) -> Tensor:
    """Reduce a ``[N]`` per-sample loss by ``"mean"`` (default everywhere), ``"sum"`` or ``"none"``."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"{loss_name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
