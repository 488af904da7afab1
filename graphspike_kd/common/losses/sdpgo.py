r"""SDPGO (experimental): self-distillation with proximal-gradient token weights — a **reconstruction**.

Only the OpenReview abstract and one review of "SDPGO: Efficient Self-Distillation Training Meets
Proximal Gradient Optimization" (NeurIPS 2025) were available; the authors' code was not consulted.
What is confirmed: gradient information becomes a dynamic weight through a proximal step whose
:math:`\lambda` controls sparsity, historical predictions act as the teacher, and a mini-batch KL
refinement; no teacher network. The exact form below is **inferred** and must be treated as a
design proposal, not the authors' method. It can only be built with ``experimental=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphspike_kd.common.losses._validation import (
    check_logits,
    check_reduction,
    check_temperature,
    check_weight,
    reduce,
)
from graphspike_kd.common.losses.soft_target import soft_target_loss
from graphspike_kd.common.registry import register_loss

_EXPERIMENTAL_MSG = (
    "{name}: SDPGO is a reconstruction from the abstract and a review (the paper's equations and code "
    "were not available), so it must be enabled explicitly with experimental=True"
)


def _require_experimental(experimental: bool, name: str) -> None:
    if experimental is not True:
        raise ValueError(_EXPERIMENTAL_MSG.format(name=name))


def _check_lam(lam: float, loss_name: str) -> None:
    check_weight(lam, "lam", loss_name)
    if lam < 0:
        raise ValueError(f"{loss_name}: lam must be >= 0, got {lam}")


def proximal_gradient_weights(logits: Tensor, target: Tensor, *, lam: float = 0.01) -> Tensor:
    r"""Sparse per-class importance from the CE gradient, by the proximal map of :math:`\lambda\|\cdot\|_1`.

    .. math::
        g = \mathrm{softmax}(z) - \mathrm{onehot}(y), \qquad
        \tilde w = \max(|g| - \lambda, 0), \qquad w = \tilde w \,/\, \mathrm{mean}_c(\tilde w)

    A row whose entries are all thresholded to 0 (a confidently correct sample with
    :math:`|g| \le \lambda` everywhere) gets weight 0 everywhere. The weights carry no gradient.

    Shapes: logits :math:`(N, C)`, target :math:`(N)` → :math:`(N, C)`, each non-zero row with mean 1.
    """
    _check_lam(lam, "proximal_gradient_weights")
    z = logits.detach()
    g = torch.softmax(z, dim=1) - F.one_hot(target, z.shape[1]).to(z.dtype)
    w = (g.abs() - lam).clamp_min(0.0)
    mean = w.mean(dim=1, keepdim=True)
    return torch.where(mean > 0, w / mean.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(w))


def sdpgo_terms(
    student_logits: Tensor,
    historical_logits: Tensor,
    target: Tensor,
    *,
    lam: float = 0.01,
    temperature: float = 4.0,
    experimental: bool = False,
) -> dict[str, Tensor]:
    """Per-sample ``"ce"`` and ``"kd"`` (weighted KL, before :math:`\\beta T^2`) and the ``"weights"``
    :math:`(N, C)`; see :func:`sdpgo_loss`."""
    _require_experimental(experimental, "sdpgo_terms")
    check_temperature(temperature, "sdpgo_loss")
    s, h, y = check_logits(student_logits, historical_logits, target, loss_name="sdpgo_loss", min_classes=2)
    assert y is not None
    w = proximal_gradient_weights(s, y, lam=lam)
    kd = soft_target_loss(s, h.detach(), temperature=temperature, class_weight=w, reduction="none")
    ce = F.cross_entropy(s, y, reduction="none")
    return {"ce": ce, "kd": kd, "weights": w}


def sdpgo_loss(
    student_logits: Tensor,
    historical_logits: Tensor,
    target: Tensor,
    *,
    lam: float = 0.01,
    beta: float = 1.0,
    temperature: float = 4.0,
    reduction: str = "mean",
    experimental: bool = False,
) -> Tensor:
    r"""SDPGO self-distillation loss — **experimental reconstruction (inferred)**, see the module docstring.

    .. math::
        w_t = \mathrm{prox}_{\lambda\|\cdot\|_1}(|\nabla_{z_t}\mathrm{CE}|) \text{ renormalised to mean 1}
        \quad (\text{:func:`proximal_gradient_weights`})

    .. math::
        \mathcal{L}_t = \mathrm{CE}(z_t, y) + \beta\, T^2 \sum_c w_{t,c}\, \tilde p_{t,c}
            \big(\log \tilde p_{t,c} - \log \mathrm{softmax}(z_t/T)_c\big),
        \qquad \tilde p_t = \mathrm{softmax}(z_{t-1}/T)

    :math:`z_{t-1}` are *historical* logits for the same samples (the previous visit of the sample, e.g.
    kept by :class:`PredictionHistory`, or the previous mini-batch as in DLB); they are detached. Unlike the
    other losses in this package the CE term is included, because without a teacher the method is the
    whole objective. With :math:`\lambda = 0` and uniform weights it is CE + a class-weighted self-KD.

    Args:
        student_logits: current logits :math:`z_t`.
        historical_logits: past logits :math:`z_{t-1}` of the same samples.
        target: class ids.
        lam (float, optional): proximal threshold :math:`\lambda` (sparsity); not given in the public
            material. (default: ``0.01``)
        beta (float, optional): KD weight. (default: ``1.0``)
        temperature (float, optional): :math:`T`. (default: ``4.0``)
        reduction (str, optional): ``"mean"``, ``"sum"`` or ``"none"``. (default: ``"mean"``)
        experimental (bool): must be ``True``. (default: ``False`` → ``ValueError``)

    Shapes:
        - **input:** :math:`(N, C)`, :math:`(N, C)`, :math:`(N)`
        - **output:** scalar, or :math:`(N)` with ``reduction="none"``

    Reference: "SDPGO: Efficient Self-Distillation Training Meets Proximal Gradient Optimization",
    NeurIPS 2025, OpenReview pbokMgz8e1 (abstract and review only).
    """
    check_weight(beta, "beta", "sdpgo_loss")
    check_reduction(reduction, "sdpgo_loss")
    terms = sdpgo_terms(
        student_logits, historical_logits, target, lam=lam, temperature=temperature, experimental=experimental
    )
    return reduce(terms["ce"] + beta * temperature**2 * terms["kd"], reduction, "sdpgo_loss")


class PredictionHistory(nn.Module):
    r"""Per-sample memory of past logits (the "historical predictions" of SDPGO), indexed by dataset id.

    .. math:: h_i \leftarrow \mu\, h_i + (1 - \mu)\, z_i \quad(\text{first visit: } h_i = z_i)

    ``momentum=0`` keeps the last visit only. :meth:`get` returns the stored logits, and for samples never
    seen the current logits themselves (so their KD term is 0 up to the weights).

    Args:
        num_samples (int): dataset size.
        num_classes (int): :math:`C`.
        momentum (float, optional): :math:`\mu \in [0, 1)`. (default: ``0.0``)

    Shapes: indices :math:`(N)` int64 in ``[0, num_samples)``; logits :math:`(N, C)`.
    """

    def __init__(self, num_samples: int, num_classes: int, momentum: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"PredictionHistory: momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("logits", torch.zeros(num_samples, num_classes))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))

    def _check(self, indices: Tensor, logits: Tensor | None = None) -> None:
        if indices.ndim != 1 or indices.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"PredictionHistory: indices must be a 1-D integer tensor, got "
                             f"{tuple(indices.shape)} {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.logits.shape[0]):
            raise ValueError(f"PredictionHistory: indices must lie in [0, {self.logits.shape[0]}), got "
                             f"min {int(indices.min())}, max {int(indices.max())}")
        if logits is not None and tuple(logits.shape) != (indices.shape[0], self.logits.shape[1]):
            raise ValueError(f"PredictionHistory: logits must have shape [{indices.shape[0]}, "
                             f"{self.logits.shape[1]}], got {tuple(logits.shape)}")

    def get(self, indices: Tensor, current_logits: Tensor) -> Tensor:
        self._check(indices, current_logits)
        stored = self.logits[indices].to(current_logits.dtype)
        return torch.where(self.seen[indices, None], stored, current_logits.detach())

    @torch.no_grad()
    def update(self, indices: Tensor, logits: Tensor) -> None:
        self._check(indices, logits)
        z = logits.detach().to(self.logits.dtype)
        old = self.logits[indices]
        blended = torch.where(self.seen[indices, None], self.momentum * old + (1 - self.momentum) * z, z)
        self.logits[indices] = blended
        self.seen[indices] = True

    def extra_repr(self) -> str:
        n, c = self.logits.shape
        return f"num_samples={n}, num_classes={c}, momentum={self.momentum}"


@register_loss("sdpgo")
class SDPGOLoss(nn.Module):
    """Module form of :func:`sdpgo_loss` (**experimental reconstruction**): ``forward(student_logits,
    teacher_logits, target)`` where ``teacher_logits`` are the *historical* logits of the same samples.
    Build it with ``get_loss("sdpgo", experimental=True)``; anything else raises ``ValueError``."""

    def __init__(
        self,
        lam: float = 0.01,
        beta: float = 1.0,
        temperature: float = 4.0,
        reduction: str = "mean",
        *,
        experimental: bool = False,
    ) -> None:
        super().__init__()
        _require_experimental(experimental, "SDPGOLoss")
        check_temperature(temperature, "SDPGOLoss")
        _check_lam(lam, "SDPGOLoss")
        check_weight(beta, "beta", "SDPGOLoss")
        check_reduction(reduction, "SDPGOLoss")
        self.lam, self.beta, self.temperature, self.reduction = lam, beta, temperature, reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        if target is None:
            raise ValueError("SDPGOLoss needs the ground-truth target: loss(student, historical, target)")
        return sdpgo_loss(
            student_logits, teacher_logits, target, lam=self.lam, beta=self.beta,
            temperature=self.temperature, reduction=self.reduction, experimental=True,
        )

    def extra_repr(self) -> str:
        return f"lam={self.lam}, beta={self.beta}, temperature={self.temperature}, experimental=True"
