r"""Knowledge-distillation detection: which candidate teacher, if any, was an open-weights student
distilled from? (Shi, Zheng, Song, Yeh, "Knowledge Distillation Detection for Open-weights Models",
NeurIPS 2025, arXiv:2510.02302.)

Given the student :math:`g_\theta` (weights available) and black-box candidate teachers
:math:`f^{(1)}, \dots, f^{(K)}`:

.. math:: k^* = \arg\max_k S\big(g_\theta, f^{(k)}, P\big)

with probes :math:`P` synthesised from the student alone (data-free, :func:`synthesize_probes`) and a
score :math:`S`:

- ``"kl"``: :func:`kl_inverse_score`, :math:`\frac1N \sum_n 1/(\mathrm{KL}(f(x_n) \| g(x_n)) + \epsilon)`;
- ``"acs"``: :func:`aligned_cosine_similarity` of the penultimate features after orthogonal Procrustes;
- ``"cka"``: :func:`linear_cka` or :func:`kernel_cka` (RBF, median heuristic) of the features.

The classification pipeline of the paper is unreleased; the probe objective below follows the paper's
description (class-target mixup CE + BatchNorm-statistics matching) by model inversion (optimising the
inputs directly), and which features ACS / CKA use (the penultimate ones, through ``feature_fn``) is our
choice. The released text-to-image scorer has an AUC loop that rebinds its score array (IndexError for
more than one run); :func:`detection_metrics` computes AUCs on the whole score matrix at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCORES = ("kl", "acs", "cka")
FeatureFn = Callable[[nn.Module, Tensor], tuple[Tensor, Tensor]]


def default_feature_fn(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``model(x, return_features=True)`` → ``(logits [N, C], features [N, d])``."""
    return model(x, return_features=True)


def _check_pair(x: Tensor, y: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: expects [N, d1] and [N, d2] with the same N, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: needs at least 2 samples, got {x.shape[0]}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError(f"{name}: inputs contain non-finite values")
    return x.detach().double(), y.detach().double()


def kl_inverse_score(student_logits: Tensor, teacher_logits: Tensor, *, eps: float = 1e-6) -> float:
    r"""Point-wise score
    :math:`S = \frac1N \sum_n \big(\mathrm{KL}(p_f(x_n) \| p_g(x_n)) + \epsilon\big)^{-1}`
    with :math:`p = \mathrm{softmax}` (the direction a distilled student was trained to minimise).
    Higher = more similar.

    Shapes: :math:`(N, C)`, :math:`(N, C)` → float."""
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(f"kl_inverse_score: expects two [N, C] logits of one shape, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if eps <= 0:
        raise ValueError(f"kl_inverse_score: eps must be > 0, got {eps}")
    s, t = student_logits.detach().double(), teacher_logits.detach().double()
    kl = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="none", log_target=True).sum(1)
    return float((1.0 / (kl.clamp_min(0) + eps)).mean())


def orthogonal_procrustes(source: Tensor, target: Tensor) -> Tensor:
    r""":math:`R = \arg\min_{R^\top R = I} \|A R - B\|_F = U V^\top`, :math:`U \Sigma V^\top = A^\top B`
    (``source`` = :math:`A` :math:`(N, d_2)`, ``target`` = :math:`B` :math:`(N, d_1)`; :math:`R` is
    :math:`(d_2, d_1)`, semi-orthogonal when :math:`d_1 \ne d_2`)."""
    u, _, vh = torch.linalg.svd(source.T @ target, full_matrices=False)
    return u @ vh


def aligned_cosine_similarity(x: Tensor, y: Tensor) -> float:
    r"""Aligned cosine similarity (ACS): rows L2-normalised and centred, :math:`R` the orthogonal
    Procrustes map from :math:`\tilde Y` to :math:`\tilde X`, then
    :math:`\frac1N \sum_n \cos(\tilde X_n, \tilde Y_n R)`. Equals 1 for ``y = x Q`` with any orthogonal
    :math:`Q`.

    Shapes: :math:`(N, d_1)`, :math:`(N, d_2)` → float in :math:`[-1, 1]`."""
    x, y = _check_pair(x, y, "aligned_cosine_similarity")
    xt = F.normalize(x, dim=1)
    yt = F.normalize(y, dim=1)
    xt = xt - xt.mean(0)
    yt = yt - yt.mean(0)
    r = orthogonal_procrustes(yt, xt)
    return float(F.cosine_similarity(xt, yt @ r, dim=1, eps=1e-12).mean())


def _centre_gram(k: Tensor) -> Tensor:
    n = k.shape[0]
    h = torch.eye(n, dtype=k.dtype, device=k.device) - 1.0 / n
    return h @ k @ h


def _cka_from_grams(kx: Tensor, ky: Tensor) -> float:
    kx, ky = _centre_gram(kx), _centre_gram(ky)
    hsic = (kx * ky).sum()
    den = torch.sqrt((kx * kx).sum() * (ky * ky).sum())
    return float(hsic / den) if float(den) > 0 else 0.0


def linear_cka(x: Tensor, y: Tensor) -> float:
    r"""Linear CKA (Kornblith et al., 2019):
    :math:`\mathrm{HSIC}(K, L) / \sqrt{\mathrm{HSIC}(K, K)\,\mathrm{HSIC}(L, L)}` with
    :math:`K = XX^\top`, :math:`L = YY^\top`, centred. Invariant to orthogonal transforms and isotropic
    scaling of either side. Shapes: :math:`(N, d_1)`, :math:`(N, d_2)` → float in :math:`[0, 1]`."""
    x, y = _check_pair(x, y, "linear_cka")
    return _cka_from_grams(x @ x.T, y @ y.T)


def kernel_cka(x: Tensor, y: Tensor, *, sigma_scale: float = 1.0) -> float:
    r"""RBF-kernel CKA with the median heuristic: :math:`k(a, b) = \exp(-\|a-b\|^2 / (2\sigma^2))`,
    :math:`\sigma = s \cdot \sqrt{\mathrm{median}\|a-b\|^2}` over distinct pairs. Shapes as
    :func:`linear_cka`."""
    x, y = _check_pair(x, y, "kernel_cka")

    def rbf(z: Tensor) -> Tensor:
        d2 = torch.cdist(z, z).pow(2)
        off = d2[~torch.eye(z.shape[0], dtype=torch.bool)]
        med = float(off.median())
        sigma2 = (sigma_scale**2) * (med if med > 0 else 1.0)
        return torch.exp(-d2 / (2 * sigma2))

    return _cka_from_grams(rbf(x), rbf(y))


class _BNStatsHook:
    """Forward hook recording :math:`\\|\\mu - \\mu^r\\|^2 + \\|\\sigma - \\sigma^r\\|^2` at one BN layer."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        self.loss: Tensor | None = None
        self.handle = bn.register_forward_hook(self)

    def __call__(self, module: nn.modules.batchnorm._BatchNorm, inputs: tuple[Tensor, ...], _out) -> None:
        x = inputs[0]
        dims = [0] + list(range(2, x.ndim))
        mean = x.mean(dims)
        std = (x.var(dims, unbiased=False) + module.eps).sqrt()
        run_std = (module.running_var + module.eps).sqrt()
        self.loss = (mean - module.running_mean).pow(2).sum() + (std - run_std).pow(2).sum()


def synthesize_probes(
    model: nn.Module,
    num_probes: int,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    steps: int = 200,
    lr: float = 0.05,
    bn_weight: float = 1.0,
    mixup: bool = True,
    input_range: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Data-free probes from the student alone, by model inversion (inputs optimised with Adam):

    .. math::
        \min_{\hat x}\ \frac1N\sum_n \mathrm{CE}\big(g_\theta(\hat x_n),\ w_n e_{a_n} + (1-w_n) e_{b_n}\big)
            + \lambda_{BN} \sum_l \|\mu_l(\hat x) - \mu^r_l\|^2 + \|\sigma_l(\hat x) - \sigma^r_l\|^2

    Classes :math:`a_n` cycle through all classes, :math:`b_n` is random and :math:`w_n \sim U(0.5, 1)`
    (``mixup=False``: :math:`w_n = 1`): confident, boundary-probing inputs whose batch statistics match
    the student's BatchNorm running statistics. The model is put in eval mode (running statistics are
    read, never updated) and its parameters are not changed.

    Args:
        model (nn.Module): the student; ``model(x)`` returns logits.
        num_probes (int): :math:`N` (the paper uses 50–100).
        input_shape (sequence of int): shape of one input, e.g. ``(64,)``.
        num_classes (int): :math:`C`.
        steps (int, optional): Adam steps. (default: ``200``)
        lr (float, optional): Adam lr. (default: ``0.05``)
        bn_weight (float, optional): :math:`\lambda_{BN}`; needs BatchNorm layers when > 0.
            (default: ``1.0``)
        mixup (bool, optional): mixed class targets. (default: ``True``)
        input_range (tuple, optional): clamp the probes to ``(lo, hi)`` after each step.
        generator (torch.Generator, optional): initial noise and targets.

    Returns:
        probes of shape :math:`(N, *\text{input\_shape})`, detached.
    """
    if num_probes < 2 or num_classes < 2 or steps < 0:
        raise ValueError(f"synthesize_probes: needs num_probes >= 2, num_classes >= 2, steps >= 0, got "
                         f"{num_probes}, {num_classes}, {steps}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn_weight > 0 and not bns:
        raise ValueError(
            "synthesize_probes: BatchNorm-statistics matching needs BatchNorm layers in the model "
            "(none found); pass bn_weight=0 for plain model inversion"
        )
    was_training = model.training
    model.eval()
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    hooks = [_BNStatsHook(bn) for bn in bns] if bn_weight > 0 else []
    try:
        x = torch.randn((num_probes, *input_shape), generator=generator).requires_grad_()
        a = torch.arange(num_probes) % num_classes
        b = torch.randint(0, num_classes, (num_probes,), generator=generator)
        w = 0.5 + 0.5 * torch.rand(num_probes, generator=generator) if mixup else torch.ones(num_probes)
        soft = w[:, None] * F.one_hot(a, num_classes) + (1 - w[:, None]) * F.one_hot(b, num_classes)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            logits = model(x)
            loss = -(soft * F.log_softmax(logits, 1)).sum(1).mean()
            if hooks:
                loss = loss + bn_weight * sum(h.loss for h in hooks if h.loss is not None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if input_range is not None:
                with torch.no_grad():
                    x.clamp_(*input_range)
    finally:
        for h in hooks:
            h.handle.remove()
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    return x.detach()


@torch.no_grad()
def detection_scores(
    student: nn.Module,
    teachers: Sequence[nn.Module],
    probes: Tensor,
    *,
    score: str = "kl",
    feature_fn: FeatureFn = default_feature_fn,
    eps: float = 1e-6,
) -> Tensor:
    """:math:`S(g_\\theta, f^{(k)}, P)` for every candidate teacher, shape :math:`(K)`. ``"kl"`` uses
    logits only (black-box teachers); ``"acs"`` and ``"cka"`` (linear) use ``feature_fn`` features."""
    if score not in SCORES:
        raise ValueError(f"detection_scores: score must be one of {SCORES}, got {score!r}")
    if len(teachers) == 0:
        raise ValueError("detection_scores: no candidate teachers")
    student.eval()
    s_logits, s_feat = feature_fn(student, probes)
    out = []
    for t in teachers:
        t.eval()
        t_logits, t_feat = feature_fn(t, probes)
        if score == "kl":
            out.append(kl_inverse_score(s_logits, t_logits, eps=eps))
        elif score == "acs":
            out.append(aligned_cosine_similarity(s_feat, t_feat))
        else:
            out.append(linear_cka(s_feat, t_feat))
    return torch.tensor(out, dtype=torch.float64)


def detect_teacher(scores: Tensor) -> int:
    """The decision :math:`k^* = \\arg\\max_k S_k` (first index on ties)."""
    if scores.ndim != 1 or scores.numel() == 0:
        raise ValueError(f"detect_teacher: expects a non-empty [K] score vector, got {tuple(scores.shape)}")
    return int(torch.argmax(scores))


def detection_metrics(scores: Tensor, labels: Sequence[int]) -> dict[str, float]:
    r"""Metrics over a set of students.

    ``scores`` :math:`(S, K)`, ``labels[s]`` = the true teacher index, or ``-1`` for an independent
    (non-distilled) student. Returns:

    - ``"accuracy"``: fraction of distilled students whose :math:`k^*` is their teacher (multiple choice);
    - ``"auc_ovr"``: mean one-vs-rest AUC of :math:`\mathrm{softmax}(S)` over the distilled students
      (the paper's AUC; for :math:`K = 2` the plain binary AUC);
    - ``"auc_pairs"``: AUC of the raw score over all (student, teacher) pairs, positive = "distilled from
      this teacher" — independent students only contribute negatives, so it also measures whether
      they are told apart.
    """
    from sklearn.metrics import roc_auc_score

    scores = scores.detach().double()
    lab = np.asarray(labels)
    if scores.ndim != 2 or scores.shape[0] != lab.shape[0]:
        raise ValueError(f"detection_metrics: scores must be [S, K] with S = len(labels) = {lab.shape[0]}, "
                         f"got {tuple(scores.shape)}")
    k = scores.shape[1]
    if lab.min() < -1 or lab.max() >= k:
        raise ValueError(f"detection_metrics: labels must be -1 or in [0, {k}), got {lab.tolist()}")
    dist = lab >= 0
    out: dict[str, float] = {"num_students": float(lab.shape[0]), "num_distilled": float(dist.sum())}
    if dist.any():
        pred = scores.argmax(1).numpy()
        out["accuracy"] = float((pred[dist] == lab[dist]).mean())
        probs = torch.softmax(scores[torch.as_tensor(dist)], 1).numpy()
        aucs = []
        for c in range(k):
            y = (lab[dist] == c).astype(int)
            if 0 < y.sum() < y.shape[0]:
                aucs.append(roc_auc_score(y, probs[:, c]))
        out["auc_ovr"] = float(np.mean(aucs)) if aucs else float("nan")
    pos = np.zeros(scores.shape, dtype=int)
    for i, t in enumerate(lab):
        if t >= 0:
            pos[i, t] = 1
    flat = pos.reshape(-1)
    out["auc_pairs"] = (float(roc_auc_score(flat, scores.numpy().reshape(-1)))
                        if 0 < flat.sum() < flat.shape[0] else float("nan"))
    return out
