r"""Angular-KD: single-teacher view augmentation with angular diversity (Yu et al., NeurIPS 2025).

The teacher is frozen; :class:`AngularViewHeads` adds ``N`` trainable linear *view heads* on its pooled
feature. The heads are trained so that each view stays close to the teacher (constrained inter-angle
loss), the views spread out (diversity and intra-angle losses) and classify correctly (view CE). The
student then distils the weighted ensemble of the views and the teacher.

Pieces (pure functions first, the registered module last):

- :func:`inter_angle_terms`: the constrained inter-angle loss (InfoNCE constraint + diversity).
- :func:`intra_angle_loss`: the intra-angle loss on normalised residuals.
- :func:`angular_ensemble_target`: the ensemble probability target.
- :func:`angular_terms`: every term of the method, as a dict for logging.
- :class:`AngularKDLoss` (registry name ``"angular"``): owns the view heads;
  ``forward(student_logits, teacher_logits, target, *, teacher_feature)``.

Deliberate choices on the known quirks of the public code (``june6423/Angular-KD@b8c2a08``):

1. **NameError on the CRD path** (``CRD.py`` assigns ``image_for_teacehr`` and reads
   ``image_for_teacher``). Not reproduced: there is no separate image path here, the module takes the
   teacher's pooled feature explicitly; the ensembled pooled feature is returned as the
   ``"ensemble_feature"`` term for a caller who wants to add CRD on it.
2. **Ensemble normalised with p = 2** (``F.normalize(weight, p=2)``), so the "probability" target sums to
   :math:`\sum_k w_k / \|w\|_2 \approx 2.44` for N = 5, an implicit ×2.44 KD weight. Default here:
   ``ensemble_norm="l1"``, a proper distribution that sums to 1; ``ensemble_norm="l2"`` reproduces the
   public code for comparisons.
3. **"Learnable" margin that never learns**: an ``nn.Parameter`` read with ``.item()`` and not in the
   optimiser. A margin that only enters through the hard comparison ``sim >= 1 - m`` has zero gradient
   anyway, so the margin is a fixed hyper-parameter (default 0.2, also for the logit branch, where the
   public code uses 0.1).
4. **Diversity normalised over the view axis** (dim 1 of ``[B, N, D]``) in ``Feature_inter_Loss``. Here the
   view features are L2-normalised over the feature axis, so the diversity term is a true cosine.
5. **Undetached ensemble target**: the student's KD loss would also train the view heads. Default
   ``detach_ensemble=True``: the heads learn only from their own losses, the student only from the target.

Two further quirks found while reading the code, also fixed: the diversity term is added with
``.item()`` (it never produces a gradient; here it does), and the per-head BatchNorm initialisation reads
a stale loop index so every head gets the last head's mean/std (here head ``i`` uses its own); the
view-head weights come from ``torch.linalg.qr`` on a ``[D, D, N]`` tensor, which is batched over the
*first* axis, so ``Q[:, :, i]`` is not orthogonal (here one batched QR of an ``[N, D, D]`` Gaussian gives
``N`` orthogonal matrices).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphspike_kd.common.losses._validation import check_logits, check_temperature, check_weight, upcast
from graphspike_kd.common.losses.soft_target import soft_target_loss
from graphspike_kd.common.registry import register_loss

DEFAULT_DROPOUTS = (0.15, 0.2, 0.25, 0.3, 0.35)
ENSEMBLE_NORMS = ("l1", "l2")


class AngularViewHeads(nn.Module):
    r"""``N`` linear view heads on a frozen teacher's pooled feature :math:`F^T \in \mathbb{R}^D`.

    .. math::
        F_i^A = \mathrm{BN}_i\big(W^{\phi_i} (M_i \odot F^T)\big), \qquad Z_i^A = W^{\psi_i} F_i^A,
        \qquad i = 1, \dots, N

    with :math:`M_i` dropout of probability :math:`p_i`, :math:`W^{\phi_i} \in \mathbb{R}^{D\times D}`
    orthogonal at initialisation (one batched QR decomposition of an ``[N, D, D]`` Gaussian, sign-fixed
    so the draw is Haar), per-head BatchNorm whose affine :math:`\gamma_i, \beta_i` are initialised to
    constants drawn from :math:`\mathcal{N}(1 - 0.1 i,\ (0.1 + 0.1 i)^2)` (:math:`i` from 0), and a
    Xavier-initialised classifier :math:`W^{\psi_i}` with zero bias.

    Args:
        in_features (int): teacher pooled-feature size :math:`D`.
        num_classes (int): number of classes :math:`C`.
        num_views (int, optional): :math:`N`. (default: ``5``)
        dropouts (sequence of float, optional): :math:`p_i` per head; ``None`` uses
            ``0.15, 0.2, ..., 0.35`` extended by steps of 0.05. (default: ``None``)
        seed (int, optional): seed of the initialisation draws (a local ``torch.Generator``).
            (default: ``0``)

    Shapes:
        - **input:** teacher_feature :math:`(B, D)`
        - **output:** ``(view_features, view_logits)`` of shapes :math:`(B, N, D)` and
          :math:`(B, N, C)`

    Reference: Yu, Nam, Katabi, Son, "Single-Teacher View Augmentation: Boosting Knowledge
    Distillation via Angular Diversity", NeurIPS 2025, arXiv:2510.22480.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_views: int = 5,
        dropouts: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 2 or num_views < 2:
            raise ValueError(
                "AngularViewHeads: needs in_features >= 1, num_classes >= 2 and num_views >= 2 (the "
                f"angular losses compare pairs of views), got {in_features}, {num_classes}, {num_views}"
            )
        if dropouts is None:
            dropouts = [0.15 + 0.05 * i for i in range(num_views)]
        dropouts = [float(p) for p in dropouts]
        if len(dropouts) != num_views or not all(0.0 <= p < 1.0 for p in dropouts):
            raise ValueError(
                f"AngularViewHeads: dropouts must be {num_views} probabilities in [0, 1), got {dropouts}"
            )
        self.in_features, self.num_classes, self.num_views = in_features, num_classes, num_views
        self.dropouts = dropouts
        self.seed = seed
        self.weight = nn.Parameter(torch.empty(num_views, in_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_views, in_features))
        self.bn = nn.ModuleList(nn.BatchNorm1d(in_features) for _ in range(num_views))
        self.classifier_weight = nn.Parameter(torch.empty(num_views, num_classes, in_features))
        self.classifier_bias = nn.Parameter(torch.empty(num_views, num_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        n, d, c = self.num_views, self.in_features, self.num_classes
        q, r = torch.linalg.qr(torch.randn(n, d, d, generator=g))
        # sign fix: makes Q Haar-distributed instead of biased by the QR convention
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
        self.weight.copy_(q)
        bound = 1.0 / d**0.5
        self.bias.uniform_(-bound, bound, generator=g)
        for i, bn in enumerate(self.bn):
            bn.reset_running_stats()
            mean, std = 1.0 - 0.1 * i, 0.1 + 0.1 * i
            bn.weight.fill_(mean + std * float(torch.randn((), generator=g)))
            bn.bias.fill_(mean + std * float(torch.randn((), generator=g)))
        xavier = (6.0 / (d + c)) ** 0.5
        self.classifier_weight.uniform_(-xavier, xavier, generator=g)
        self.classifier_bias.zero_()

    def forward(self, teacher_feature: Tensor) -> tuple[Tensor, Tensor]:
        if teacher_feature.ndim != 2 or teacher_feature.shape[1] != self.in_features:
            raise ValueError(
                f"AngularViewHeads: teacher_feature must have shape [B, {self.in_features}], got "
                f"{tuple(teacher_feature.shape)}"
            )
        x = upcast(teacher_feature)
        feats = []
        for i in range(self.num_views):
            xi = F.dropout(x, p=self.dropouts[i], training=self.training)
            feats.append(self.bn[i](F.linear(xi, self.weight[i], self.bias[i])))
        view_features = torch.stack(feats, dim=1)  # [B, N, D]
        view_logits = torch.einsum("bnd,ncd->bnc", view_features, self.classifier_weight)
        return view_features, view_logits + self.classifier_bias

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_features}, {self.num_classes}, "
            f"num_views={self.num_views}, dropouts={[round(p, 3) for p in self.dropouts]})"
        )


def _check_views(teacher: Tensor, views: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if teacher.ndim != 2 or views.ndim != 3 or views.shape[0] != teacher.shape[0] or (
        views.shape[2] != teacher.shape[1]
    ):
        raise ValueError(
            f"{name}: expects teacher [B, D] and views [B, N, D], got {tuple(teacher.shape)} and "
            f"{tuple(views.shape)}"
        )
    if views.shape[1] < 2:
        raise ValueError(f"{name}: needs at least 2 views, got views of shape {tuple(views.shape)}")
    if not (torch.isfinite(teacher).all() and torch.isfinite(views).all()):
        raise ValueError(f"{name}: teacher or views contain non-finite values")
    dtype = torch.promote_types(upcast(teacher).dtype, upcast(views).dtype)
    return teacher.to(dtype), views.to(dtype)


def inter_angle_terms(
    teacher: Tensor,
    views: Tensor,
    *,
    margin: float = 0.2,
    contrastive_temperature: float = 0.07,
) -> dict[str, Tensor]:
    r"""Constrained inter-angle loss: an InfoNCE constraint tying each view to its own teacher output,
    plus a diversity term pushing the views of well-constrained samples apart.

    ``teacher`` and ``views`` are already embedded (unit-norm features or softmax vectors); with
    :math:`s_{b,i,b'} = \langle v_{b,i}, t_{b'} \rangle`:

    .. math::
        \tilde s_{b,i,b'} = \begin{cases} 1 & b' = b,\ s_{b,i,b} \ge 1 - m \\
            s_{b,i,b'} & \text{otherwise}\end{cases}, \qquad
        \mathcal{L}_{con} = \frac{1}{N}\cdot\frac{1}{BN}\sum_{b,i}
            \mathrm{CE}\big(\tilde s_{b,i,:}/\tau_c,\ b\big)

    .. math::
        \mathcal{L}_{div} = \frac{1}{N(N-1)B}\sum_{b \in \mathcal{M}} \sum_{i \ne j}
            \mathrm{softplus}(\langle v_{b,i}, v_{b,j}\rangle), \qquad
        \mathcal{M} = \{b : \min_i s_{b,i,b} > 1 - m\}

    Positives already inside the margin are clipped to the constant 1, so they are no longer pulled
    (their gradient is zero); the diversity term only acts on samples whose views are *all* inside the
    margin.

    Args:
        teacher: teacher embedding per sample.
        views: view embeddings.
        margin (float, optional): :math:`m`, fixed. (default: ``0.2``)
        contrastive_temperature (float, optional): :math:`\tau_c`. (default: ``0.07``)

    Shapes:
        - **input:** teacher :math:`(B, D)`, views :math:`(B, N, D)`
        - **output:** dict with scalars ``"constraint"``, ``"diversity"`` and ``"inside_margin"`` (the
          fraction of samples in :math:`\mathcal{M}`, for logging)
    """
    check_temperature(contrastive_temperature, "inter_angle_terms", "contrastive_temperature")
    if not 0.0 <= margin <= 2.0:
        raise ValueError(f"inter_angle_terms: margin must lie in [0, 2], got {margin}")
    t, v = _check_views(teacher, views, "inter_angle_terms")
    b, n, _ = v.shape
    sim = torch.einsum("bnd,kd->bnk", v, t)  # [B, N, B]
    own = torch.eye(b, dtype=torch.bool, device=v.device).unsqueeze(1).expand(b, n, b)
    clipped = own & (sim >= 1.0 - margin)
    sim = torch.where(clipped, torch.ones_like(sim), sim)
    labels = torch.arange(b, device=v.device).repeat_interleave(n)
    constraint = F.cross_entropy(sim.reshape(b * n, b) / contrastive_temperature, labels) / n
    sim_teacher = torch.einsum("bnd,bd->bn", v, t).detach()
    inside = sim_teacher.min(dim=1).values > 1.0 - margin  # [B]
    gram = F.softplus(v @ v.transpose(1, 2))  # [B, N, N]
    off_diag = ~torch.eye(n, dtype=torch.bool, device=v.device)
    per_sample = (gram * off_diag).sum(dim=(1, 2)) * inside
    diversity = per_sample.sum() / (n * (n - 1) * b)
    return {"constraint": constraint, "diversity": diversity, "inside_margin": inside.float().mean()}


def intra_angle_loss(teacher: Tensor, views: Tensor) -> Tensor:
    r"""Intra-angle loss: the residuals :math:`\Delta_{b,i} = t_b - v_{b,i}` should point in different
    directions around the teacher.

    .. math::
        \mathcal{L}_{intra} = \frac{1}{N(N-1)} \sum_{i \ne j} \mathrm{softplus}\Big(\frac1B \sum_b
            \cos(\Delta_{b,i}, \Delta_{b,j})\Big)

    Shapes: teacher :math:`(B, D)`, views :math:`(B, N, D)` → scalar. Minimum
    :math:`\mathrm{softplus}(-1/(N-1))` when the residuals form a regular simplex.
    """
    t, v = _check_views(teacher, views, "intra_angle_loss")
    n = v.shape[1]
    delta = F.normalize(t.unsqueeze(1) - v, dim=2)  # [B, N, D]
    cos = (delta @ delta.transpose(1, 2)).mean(dim=0)  # [N, N]
    off_diag = ~torch.eye(n, dtype=torch.bool, device=v.device)
    return F.softplus(cos)[off_diag].sum() / (n * (n - 1))


def angular_ensemble_target(
    teacher_logits: Tensor,
    view_logits: Tensor,
    *,
    temperature: float = 4.0,
    view_weight: float = 0.8,
    teacher_weight: float = 1.0,
    ensemble_norm: str = "l1",
) -> Tensor:
    r"""Ensemble target of Angular-KD: a weighted sum of the softened view and teacher distributions.

    .. math::
        q = \frac{\sum_{i=1}^{N} w_v\, \mathrm{softmax}(z_i^A/T) + w_t\, \mathrm{softmax}(z^T/T)}
            {\|w\|_p}, \qquad w = (w_v, \dots, w_v, w_t)

    ``ensemble_norm="l1"`` (default) divides by :math:`N w_v + w_t`, so :math:`q` is a probability
    distribution. ``"l2"`` divides by :math:`\|w\|_2` as the public code does (the target then sums to
    :math:`\approx 2.44` for N = 5 and the defaults).

    Shapes: teacher_logits :math:`(B, C)`, view_logits :math:`(B, N, C)` → :math:`(B, C)`.
    """
    check_temperature(temperature, "angular_ensemble_target")
    if ensemble_norm not in ENSEMBLE_NORMS:
        raise ValueError(f"angular_ensemble_target: ensemble_norm must be one of {ENSEMBLE_NORMS}, "
                         f"got {ensemble_norm!r}")
    check_weight(view_weight, "view_weight", "angular_ensemble_target")
    check_weight(teacher_weight, "teacher_weight", "angular_ensemble_target")
    if view_weight < 0 or teacher_weight < 0 or view_weight + teacher_weight <= 0:
        raise ValueError(
            "angular_ensemble_target: weights must be >= 0 and not both 0, got "
            f"view_weight={view_weight}, teacher_weight={teacher_weight}"
        )
    t, v = _check_views(teacher_logits, view_logits, "angular_ensemble_target")
    n = v.shape[1]
    total = view_weight * torch.softmax(v / temperature, dim=2).sum(dim=1)
    total = total + teacher_weight * torch.softmax(t / temperature, dim=1)
    if ensemble_norm == "l1":
        norm = n * view_weight + teacher_weight
    else:
        norm = (n * view_weight**2 + teacher_weight**2) ** 0.5
    return total / norm


def angular_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    teacher_feature: Tensor,
    view_features: Tensor,
    view_logits: Tensor,
    *,
    temperature: float = 4.0,
    margin: float = 0.2,
    contrastive_temperature: float = 0.07,
    inter_logit_temperature: float = 1.0,
    view_weight: float = 0.8,
    teacher_weight: float = 1.0,
    ensemble_norm: str = "l1",
    detach_ensemble: bool = True,
) -> dict[str, Tensor]:
    r"""Every term of Angular-KD, unweighted, as a dict (see :class:`AngularKDLoss` for the weights).

    Keys: ``"kd"`` (:math:`T^2\,\mathrm{KL}(q \| p^s)` against the ensemble, batch mean),
    ``"inter_feat"``, ``"intra_feat"``, ``"inter_logit"``, ``"intra_logit"`` (inter = constraint +
    diversity), ``"view_ce"`` (:math:`\sum_i \mathrm{CE}(Z_i^A, y)`), plus for logging
    ``"constraint_feat"``, ``"diversity_feat"``, ``"constraint_logit"``, ``"diversity_logit"``,
    ``"inside_margin_feat"``, ``"inside_margin_logit"``, ``"ensemble"`` (the :math:`(B, C)` target) and
    ``"ensemble_feature"`` (the same weighted sum over the pooled features, :math:`(B, D)`).

    Feature branch: unit-normalised features. Inter-angle logit branch: softmax at
    ``inter_logit_temperature`` (1, as the public code); intra-angle logit branch and the ensemble:
    softmax at ``temperature`` (4).
    """
    s, t, y = check_logits(student_logits, teacher_logits, target, loss_name="angular_terms", min_classes=2)
    assert y is not None
    check_temperature(inter_logit_temperature, "angular_terms", "inter_logit_temperature")
    if view_logits.ndim != 3 or view_logits.shape[0] != s.shape[0] or view_logits.shape[2] != s.shape[1]:
        raise ValueError(
            f"angular_terms: view_logits must have shape [B, N, C] = [{s.shape[0]}, N, {s.shape[1]}], "
            f"got {tuple(view_logits.shape)}"
        )
    ft, fv = _check_views(teacher_feature, view_features, "angular_terms")
    if ft.shape[0] != s.shape[0]:
        raise ValueError(
            f"angular_terms: teacher_feature has {ft.shape[0]} rows but the logits have {s.shape[0]}"
        )
    vl = upcast(view_logits)
    n = vl.shape[1]
    inter_f = inter_angle_terms(
        F.normalize(ft, dim=1), F.normalize(fv, dim=2),
        margin=margin, contrastive_temperature=contrastive_temperature,
    )
    inter_l = inter_angle_terms(
        torch.softmax(t / inter_logit_temperature, dim=1),
        torch.softmax(vl / inter_logit_temperature, dim=2),
        margin=margin, contrastive_temperature=contrastive_temperature,
    )
    intra_f = intra_angle_loss(ft, fv)
    intra_l = intra_angle_loss(torch.softmax(t / temperature, dim=1), torch.softmax(vl / temperature, dim=2))
    view_ce = F.cross_entropy(vl.reshape(-1, vl.shape[2]), y.repeat_interleave(n)) * n
    ensemble = angular_ensemble_target(
        t, vl, temperature=temperature, view_weight=view_weight, teacher_weight=teacher_weight,
        ensemble_norm=ensemble_norm,
    )
    weights = torch.tensor([view_weight] * n + [teacher_weight], dtype=ft.dtype, device=ft.device)
    weights = weights / (weights.sum() if ensemble_norm == "l1" else weights.norm())
    ensemble_feature = (weights[:n, None] * fv).sum(dim=1) + weights[n] * ft
    target_probs = ensemble.detach() if detach_ensemble else ensemble
    kd = soft_target_loss(s, target_probs, target_type="probs", temperature=temperature)
    return {
        "kd": kd * temperature**2,
        "inter_feat": inter_f["constraint"] + inter_f["diversity"],
        "intra_feat": intra_f,
        "inter_logit": inter_l["constraint"] + inter_l["diversity"],
        "intra_logit": intra_l,
        "view_ce": view_ce,
        "constraint_feat": inter_f["constraint"],
        "diversity_feat": inter_f["diversity"],
        "constraint_logit": inter_l["constraint"],
        "diversity_logit": inter_l["diversity"],
        "inside_margin_feat": inter_f["inside_margin"],
        "inside_margin_logit": inter_l["inside_margin"],
        "ensemble": ensemble,
        "ensemble_feature": ensemble_feature,
    }


@register_loss("angular")
class AngularKDLoss(nn.Module):
    r"""Angular-KD as one module: owns the :class:`AngularViewHeads` and returns the student's KD loss
    against the view ensemble plus the view heads' own training loss.

    .. math::
        \mathcal{L} = \lambda_{kd}\, T^2\, \mathrm{KL}(q \| \mathrm{softmax}(z^s/T))
            + \underbrace{0.1\,\mathcal{L}^{feat}_{inter} + \mathcal{L}^{feat}_{intra}
            + \mathcal{L}^{logit}_{inter} + \mathcal{L}^{logit}_{intra}
            + 0.8 \sum_i \mathrm{CE}(Z_i^A, y)}_{\mathcal{L}_{aug}}

    with :math:`q` from :func:`angular_ensemble_target`. With the default ``detach_ensemble=True`` the
    first term trains only the student and :math:`\mathcal{L}_{aug}` only the heads, so one optimiser
    over ``student.parameters()`` and ``loss.parameters()`` trains both. The student's own CE is left to
    the caller (as for ``"kd"``); for the paper's head-only warm-up, optimise ``terms(...)`` without
    ``"kd"``.

    Usage through the registry — the teacher's pooled feature is a required keyword argument:

    >>> crit = get_loss("angular", in_features=256, num_classes=100)   # doctest: +SKIP
    >>> loss = crit(student_logits, teacher_logits, target, teacher_feature=pooled)  # doctest: +SKIP

    ``teacher_logits`` must be the frozen teacher's logits for the same batch and ``teacher_feature``
    its pooled penultimate feature (detached inside).

    Args:
        in_features (int): teacher pooled-feature size :math:`D`.
        num_classes (int): :math:`C`.
        num_views (int, optional): :math:`N`. (default: ``5``)
        dropouts (sequence of float, optional): per-head dropout. (default: ``0.15 ... 0.35``)
        temperature (float, optional): KD temperature :math:`T`. (default: ``4.0``)
        margin (float, optional): fixed angular margin :math:`m`. (default: ``0.2``)
        contrastive_temperature (float, optional): InfoNCE temperature. (default: ``0.07``)
        inter_logit_temperature (float, optional): softmax temperature of the logit inter-angle branch.
            (default: ``1.0``)
        feat_inter_weight, feat_intra_weight, logit_inter_weight, logit_intra_weight (float, optional):
            (defaults: ``0.1, 1.0, 1.0, 1.0``)
        view_ce_weight (float, optional): (default: ``0.8``)
        kd_weight (float, optional): :math:`\lambda_{kd}`. (default: ``1.0``)
        view_weight, teacher_weight (float, optional): ensemble weights. (defaults: ``0.8, 1.0``)
        ensemble_norm (str, optional): ``"l1"`` (a distribution) or ``"l2"`` (public code).
            (default: ``"l1"``)
        detach_ensemble (bool, optional): stop the student's KD gradient at the target.
            (default: ``True``)
        seed (int, optional): initialisation seed of the heads. (default: ``0``)

    Shapes:
        - **input:** student_logits, teacher_logits :math:`(B, C)`; target :math:`(B)`;
          teacher_feature :math:`(B, D)`
        - **output:** scalar

    Reference: Yu, Nam, Katabi, Son, NeurIPS 2025, arXiv:2510.22480. See the module docstring for the
    deliberate departures from the public code.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_views: int = 5,
        dropouts: Sequence[float] | None = None,
        temperature: float = 4.0,
        margin: float = 0.2,
        contrastive_temperature: float = 0.07,
        inter_logit_temperature: float = 1.0,
        feat_inter_weight: float = 0.1,
        feat_intra_weight: float = 1.0,
        logit_inter_weight: float = 1.0,
        logit_intra_weight: float = 1.0,
        view_ce_weight: float = 0.8,
        kd_weight: float = 1.0,
        view_weight: float = 0.8,
        teacher_weight: float = 1.0,
        ensemble_norm: str = "l1",
        detach_ensemble: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_temperature(temperature, "AngularKDLoss")
        check_temperature(contrastive_temperature, "AngularKDLoss", "contrastive_temperature")
        check_temperature(inter_logit_temperature, "AngularKDLoss", "inter_logit_temperature")
        if not 0.0 <= margin <= 2.0:
            raise ValueError(f"AngularKDLoss: margin must lie in [0, 2], got {margin}")
        for name, value in (
            ("feat_inter_weight", feat_inter_weight), ("feat_intra_weight", feat_intra_weight),
            ("logit_inter_weight", logit_inter_weight), ("logit_intra_weight", logit_intra_weight),
            ("view_ce_weight", view_ce_weight), ("kd_weight", kd_weight), ("view_weight", view_weight),
            ("teacher_weight", teacher_weight),
        ):
            check_weight(value, name, "AngularKDLoss")
        if ensemble_norm not in ENSEMBLE_NORMS:
            raise ValueError(f"AngularKDLoss: ensemble_norm must be one of {ENSEMBLE_NORMS}, got "
                             f"{ensemble_norm!r}")
        self.heads = AngularViewHeads(in_features, num_classes, num_views, dropouts, seed)
        self.temperature, self.margin = temperature, margin
        self.contrastive_temperature = contrastive_temperature
        self.inter_logit_temperature = inter_logit_temperature
        self.weights = {
            "kd": kd_weight,
            "inter_feat": feat_inter_weight,
            "intra_feat": feat_intra_weight,
            "inter_logit": logit_inter_weight,
            "intra_logit": logit_intra_weight,
            "view_ce": view_ce_weight,
        }
        self.view_weight, self.teacher_weight = view_weight, teacher_weight
        self.ensemble_norm, self.detach_ensemble = ensemble_norm, detach_ensemble

    def reset_parameters(self) -> None:
        self.heads.reset_parameters()

    def terms(
        self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor, teacher_feature: Tensor
    ) -> dict[str, Tensor]:
        """All terms (unweighted) of :func:`angular_terms`, plus ``"loss"``: the weighted total."""
        if not isinstance(teacher_feature, Tensor):
            raise ValueError(
                "AngularKDLoss needs the teacher's pooled feature: "
                "loss(student_logits, teacher_logits, target, teacher_feature=pooled)"
            )
        view_features, view_logits = self.heads(teacher_feature.detach())
        terms = angular_terms(
            student_logits, teacher_logits.detach(), target, teacher_feature.detach(), view_features,
            view_logits, temperature=self.temperature, margin=self.margin,
            contrastive_temperature=self.contrastive_temperature,
            inter_logit_temperature=self.inter_logit_temperature, view_weight=self.view_weight,
            teacher_weight=self.teacher_weight, ensemble_norm=self.ensemble_norm,
            detach_ensemble=self.detach_ensemble,
        )
        terms["loss"] = sum(w * terms[k] for k, w in self.weights.items())
        terms["view_logits"] = view_logits
        return terms

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        target: Tensor | None = None,
        *,
        teacher_feature: Tensor | None = None,
    ) -> Tensor:
        if target is None:
            raise ValueError(
                "AngularKDLoss needs the ground-truth target (the view heads are trained with CE): "
                "call loss(student_logits, teacher_logits, target, teacher_feature=pooled)"
            )
        if teacher_feature is None:
            raise ValueError(
                "AngularKDLoss needs the teacher's pooled feature as a keyword argument: "
                "loss(student_logits, teacher_logits, target, teacher_feature=pooled)"
            )
        return self.terms(student_logits, teacher_logits, target, teacher_feature)["loss"]

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, margin={self.margin}, ensemble_norm={self.ensemble_norm!r}, "
            f"detach_ensemble={self.detach_ensemble}"
        )
