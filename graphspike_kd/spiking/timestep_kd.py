r"""Timestep self-distillation of one SNN: Strong2Weak, Weak2Strong and variants (Synergy, NeurIPS 2025).

An SNN run for :math:`T` steps yields per-step outputs :math:`o(t) \in \mathbb{R}^{N \times C}`; each step
is a "sub-model" with shared weights. The steps differ in confidence, and distilling between the most and the
least confident step improves the time-mean output, especially at low :math:`T`.

.. math::
    \mathrm{con}(t) &= \frac{1}{N} \sum_n \max_c \mathrm{softmax}(o_n(t))_c, \qquad
        t_s = \arg\max_t \mathrm{con}(t),\quad t_w = \arg\min_t \mathrm{con}(t) \\
    \mathrm{KL}_\alpha(a \,\|\, b) &= \frac{1}{N} \sum_n \sum_c p^\alpha_{a,nc}
        \left(\log p^\alpha_{a,nc} - \log p^\alpha_{b,nc}\right),
        \qquad p^\alpha = \mathrm{softmax}(o/\alpha) \\
    \mathcal{L} &= \mathrm{CE}\Big(\tfrac{1}{T}\textstyle\sum_t o(t),\ y\Big) + \lambda\, \mathcal{L}_{KD},\\
    \mathcal{L}_{S2W} &= \mathrm{KL}_\alpha(t_s \,\|\, t_w),\qquad
        \mathcal{L}_{W2S} = \mathrm{KL}_\alpha(t_w \,\|\, t_s)

with :math:`\alpha = 2`, :math:`\lambda = 1`. The first argument of :math:`\mathrm{KL}` is the teacher: S2W
teaches the weak step with the strong one, W2S the reverse (the paper's pseudo-code passes the student's
log-probabilities as PyTorch ``kl_div``'s input and the teacher as its target).

Reconstructed (no official code exists; Ding et al., "Synergy Between the Strong and the Weak: Spiking
Neural Networks are Inherently Self-Distillers", NeurIPS 2025, arXiv 2510.07924), marked **(inferred)**:

* the teacher is detached by default (``detach_teacher=True``; the pseudo-code shows no detach);
* the KL is the batch mean of the per-sample sum over classes, with **no** :math:`\alpha^2` factor
  (``temperature_squared=False``; set it to get Hinton's :math:`\alpha^2` scaling);
* ensemble teachers average the **logits** of the other :math:`T-1` steps (the SNN's own readout is the
  mean of the per-step logits); ensemble students and the cascade average the KL over their :math:`T-1`
  pairs.

Strong/weak identification is per batch (batch-mean confidence), needs no labels, and never carries gradient.
All functions are pure: ``[T, N, C]`` outputs and ``[N]`` targets in, a dict of loss terms out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphspike_kd.common.losses import soft_target_loss

#: Distillation variants accepted by :func:`timestep_kd_loss`.
METHODS = (
    "s2w",
    "w2s",
    "simultaneous",
    "s2w_cascade",
    "w2s_cascade",
    "s2w_ensemble_teacher",
    "w2s_ensemble_teacher",
    "s2w_ensemble_student",
    "w2s_ensemble_student",
)

#: Confidence metrics: the paper's max-softmax default and the alternatives it reports as about equal.
METRICS = ("max_softmax", "entropy", "margin")


def _check_outputs(outputs: Tensor, target: Tensor | None, who: str) -> None:
    if not isinstance(outputs, Tensor) or outputs.ndim != 3:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(f"{who}: outputs must have shape [T, N, C], got {shape}")
    if not outputs.is_floating_point():
        raise ValueError(f"{who}: outputs must be floating, got dtype {outputs.dtype}")
    t, n, c = outputs.shape
    if t < 1 or n < 1 or c < 2:
        raise ValueError(f"{who}: outputs need T >= 1, N >= 1, C >= 2, got shape {tuple(outputs.shape)}")
    if target is not None:
        if target.shape != (n,):
            raise ValueError(f"{who}: target must have shape [N] = [{n}], got {tuple(target.shape)}")
        if target.is_floating_point():
            raise ValueError(f"{who}: target must hold integer class ids, got dtype {target.dtype}")


def timestep_confidence(outputs: Tensor, metric: str = "max_softmax") -> Tensor:
    r"""Per-timestep confidence :math:`\mathrm{con}(t)`, averaged over the batch; no gradient.

    Args:
        outputs: per-step logits.
        metric (str, optional): ``"max_softmax"`` (the paper's), ``"entropy"`` (negative mean entropy) or
            ``"margin"`` (mean gap between the two largest probabilities). (default: ``"max_softmax"``)

    Shapes:
        - **input:** :math:`(T, N, C)`
        - **output:** :math:`(T)` float32 (float64 for float64 input)
    """
    _check_outputs(outputs, None, "timestep_confidence")
    with torch.no_grad():
        x = outputs.detach()
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        prob = x.softmax(dim=-1)
        if metric == "max_softmax":
            return prob.amax(dim=-1).mean(dim=1)
        if metric == "entropy":
            return (prob * x.log_softmax(dim=-1)).sum(dim=-1).mean(dim=1)
        if metric == "margin":
            top2 = prob.topk(2, dim=-1).values
            return (top2[..., 0] - top2[..., 1]).mean(dim=1)
    raise ValueError(f"timestep_confidence: metric must be one of {METRICS}, got {metric!r}")


def strong_weak_steps(outputs: Tensor, metric: str = "max_softmax") -> tuple[int, int]:
    """``(t_strong, t_weak)`` = (argmax, argmin) over timesteps of :func:`timestep_confidence`.

    Ties go to the earliest step (``torch.argmax`` / ``argmin``). With ``T = 1`` both are 0.
    """
    con = timestep_confidence(outputs, metric)
    return int(con.argmax()), int(con.argmin())


def _kl(student: Tensor, teacher: Tensor, temperature: float, detach_teacher: bool, t2: bool) -> Tensor:
    """KL(softmax(teacher/α) ‖ softmax(student/α)), batch mean, times α² if ``t2``."""
    if detach_teacher:
        teacher = teacher.detach()
    return soft_target_loss(student, teacher, temperature=temperature, t2_scale=t2)


def _pairs(outputs: Tensor, method: str, metric: str) -> tuple[list[tuple[Tensor, Tensor]], Tensor, int, int]:
    """(student, teacher) logit pairs of a variant, the confidence and the strong/weak steps."""
    steps = outputs.shape[0]
    con = timestep_confidence(outputs, metric)
    t_s, t_w = int(con.argmax()), int(con.argmin())
    if steps == 1:
        return [], con, t_s, t_w
    direction, _, variant = method.partition("_")
    s2w = direction == "s2w"
    if variant == "":
        pairs = [(outputs[t_w], outputs[t_s])] if s2w else [(outputs[t_s], outputs[t_w])]
    elif variant == "cascade":
        order = torch.argsort(con, descending=True, stable=True).tolist()
        pairs = []
        for hi, lo in zip(order[:-1], order[1:], strict=True):
            pairs.append((outputs[lo], outputs[hi]) if s2w else (outputs[hi], outputs[lo]))
    elif variant == "ensemble_teacher":
        student = t_w if s2w else t_s
        others = [t for t in range(steps) if t != student]
        pairs = [(outputs[student], outputs[others].mean(dim=0))]
    elif variant == "ensemble_student":
        teacher = t_s if s2w else t_w
        pairs = [(outputs[t], outputs[teacher]) for t in range(steps) if t != teacher]
    else:  # pragma: no cover - guarded by METHODS
        raise ValueError(method)
    return pairs, con, t_s, t_w


def timestep_kd_loss(
    outputs: Tensor,
    target: Tensor,
    method: str = "s2w",
    *,
    weight: float = 1.0,
    weight_w2s: float | None = None,
    temperature: float = 2.0,
    detach_teacher: bool = True,
    temperature_squared: bool = False,
    metric: str = "max_softmax",
) -> dict[str, Tensor]:
    r"""Cross-entropy on the time-mean output plus a timestep self-distillation term.

    Variants (``method``), with :math:`t_s, t_w` the strongest / weakest step and "A → B" meaning A teaches B:

    * ``"s2w"``: :math:`t_s \to t_w`; ``"w2s"``: :math:`t_w \to t_s`;
    * ``"simultaneous"``: ``weight`` · S2W + ``weight_w2s`` · W2S;
    * ``"*_cascade"``: steps sorted by confidence (descending); every adjacent pair, the higher-ranked step
      teaching the lower one for S2W and the reverse for W2S; the sum divided by :math:`T - 1`;
    * ``"*_ensemble_teacher"``: the mean logits of the other :math:`T - 1` steps teach :math:`t_w` (S2W) or
      :math:`t_s` (W2S);
    * ``"*_ensemble_student"``: :math:`t_s` (S2W) or :math:`t_w` (W2S) teaches each of the other :math:`T-1`
      steps; the KLs are averaged.

    With ``T = 1`` there is nothing to distil and the KD term is 0.

    Args:
        outputs: per-step logits :math:`o(t)`.
        target: class ids.
        method (str, optional): one of :data:`METHODS`. (default: ``"s2w"``)
        weight (float, optional): :math:`\lambda` (for ``"simultaneous"``: :math:`\lambda_{S2W}`).
            (default: ``1.0``)
        weight_w2s (float, optional): :math:`\lambda_{W2S}` of ``"simultaneous"``. (default: ``weight``)
        temperature (float, optional): :math:`\alpha`. (default: ``2.0``)
        detach_teacher (bool, optional): stop the gradient through the teacher. (default: ``True``, inferred)
        temperature_squared (bool, optional): multiply the KL by :math:`\alpha^2`. (default: ``False``)
        metric (str, optional): confidence metric, see :func:`timestep_confidence`.
            (default: ``"max_softmax"``)

    Returns:
        dict with ``"loss"`` (= ``ce + kd``), ``"ce"``, ``"kd"`` (already weighted), ``"confidence"``
        (:math:`(T)`, no grad), ``"t_strong"`` and ``"t_weak"`` (0-dim int64).

    Shapes:
        - **input:** outputs :math:`(T, N, C)`, target :math:`(N)`
        - **output:** scalar terms (fp32 math whatever the input dtype)
    """
    _check_outputs(outputs, target, "timestep_kd_loss")
    if method not in METHODS:
        raise ValueError(f"timestep_kd_loss: method must be one of {METHODS}, got {method!r}")
    if metric not in METRICS:
        raise ValueError(f"timestep_kd_loss: metric must be one of {METRICS}, got {metric!r}")
    if not temperature > 0:
        raise ValueError(f"timestep_kd_loss: temperature must be > 0, got {temperature}")
    x = outputs if outputs.dtype in (torch.float32, torch.float64) else outputs.float()
    ce = F.cross_entropy(x.mean(dim=0), target)
    kd = x.new_zeros(())
    if method == "simultaneous":
        lam_w2s = weight if weight_w2s is None else weight_w2s
        terms = []
        for sub, lam in (("s2w", weight), ("w2s", lam_w2s)):
            pairs, con, t_s, t_w = _pairs(x, sub, metric)
            for student, teacher in pairs:
                terms.append(lam * _kl(student, teacher, temperature, detach_teacher, temperature_squared))
        if terms:
            kd = torch.stack(terms).sum()
    else:
        pairs, con, t_s, t_w = _pairs(x, method, metric)
        if pairs:
            kls = [_kl(s, t, temperature, detach_teacher, temperature_squared) for s, t in pairs]
            kd = weight * torch.stack(kls).mean()
    return {
        "loss": ce + kd,
        "ce": ce,
        "kd": kd,
        "confidence": con,
        "t_strong": torch.tensor(t_s),
        "t_weak": torch.tensor(t_w),
    }


def strong2weak_loss(outputs: Tensor, target: Tensor, **kwargs) -> dict[str, Tensor]:
    """:func:`timestep_kd_loss` with ``method="s2w"``: the most confident step teaches the least confident."""
    return timestep_kd_loss(outputs, target, "s2w", **kwargs)


def weak2strong_loss(outputs: Tensor, target: Tensor, **kwargs) -> dict[str, Tensor]:
    """:func:`timestep_kd_loss` with ``method="w2s"``: the least confident step teaches the most confident."""
    return timestep_kd_loss(outputs, target, "w2s", **kwargs)


class TimestepKDLoss(nn.Module):
    """Module form of :func:`timestep_kd_loss`; ``forward(outputs [T, N, C], target [N]) -> dict``."""

    def __init__(
        self,
        method: str = "s2w",
        *,
        weight: float = 1.0,
        weight_w2s: float | None = None,
        temperature: float = 2.0,
        detach_teacher: bool = True,
        temperature_squared: bool = False,
        metric: str = "max_softmax",
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"TimestepKDLoss: method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.kwargs = dict(weight=weight, weight_w2s=weight_w2s, temperature=temperature,
                           detach_teacher=detach_teacher, temperature_squared=temperature_squared,
                           metric=metric)

    def forward(self, outputs: Tensor, target: Tensor) -> dict[str, Tensor]:
        return timestep_kd_loss(outputs, target, self.method, **self.kwargs)

    def extra_repr(self) -> str:
        k = self.kwargs
        return (f"method={self.method!r}, weight={k['weight']}, temperature={k['temperature']}, "
                f"detach_teacher={k['detach_teacher']}")
