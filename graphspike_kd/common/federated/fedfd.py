r"""FedFD: server-side *feature* distillation for model-heterogeneous federated learning — a reconstruction.

Li et al., "Feature Distillation is the Better Choice for Model-Heterogeneous Federated Learning",
NeurIPS 2025, arXiv:2507.10348. Confirmed from the abstract: after aggregation, the server distils an
ensemble of the clients' **features** (not logits) into a global model that keeps **one projection
layer per client architecture**, **orthogonally re-parameterised** so that no architecture biases the
ensemble through the scale of its feature space. The loss form, the projection direction and the
back-transfer to the client architectures below are **inferred**.

Round (see :class:`FedFDServer`):

1. clients train locally; models of one architecture are averaged (:func:`~.fedavg.fedavg`);
2. :meth:`FedFDServer.distill`: on unlabeled proxy data, the global model :math:`g` and the projectors
   :math:`P_a` minimise :func:`fedfd_feature_loss` (+ a logit-ensemble KD term that trains the global
   head);
3. :meth:`FedFDServer.transfer`: each architecture's averaged model is pulled towards the projected
   global feature :math:`P_a h_g(x)` (and the global logits) — how knowledge crosses architectures;
4. the averaged models go back to the clients.

Models plug in through ``feature_fn(model, x) -> (logits, features)``; the default calls
``model(x, return_features=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

FeatureFn = Callable[[nn.Module, Tensor], tuple[Tensor, Tensor]]


def default_feature_fn(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``model(x, return_features=True)`` → ``(logits [B, C], features [B, d])``."""
    return model(x, return_features=True)


class OrthogonalProjector(nn.Module):
    r"""A bias-free linear map :math:`P \in \mathbb{R}^{d_a \times d}` kept (semi-)orthogonal by
    ``torch.nn.utils.parametrizations.orthogonal``.

    .. math:: y = P h, \qquad P P^\top = I_{d_a}\ (d_a \le d) \quad\text{or}\quad P^\top P = I_d\ (d_a > d)

    For :math:`d_a \ge d` it is an isometry (:math:`\|Ph\| = \|h\|`); for :math:`d_a < d` it is a
    projection onto a :math:`d_a`-dimensional subspace (:math:`\|Ph\| \le \|h\|`).

    Args:
        in_features (int): global feature size :math:`d`.
        out_features (int): client-architecture feature size :math:`d_a`.

    Shapes: :math:`(B, d)` → :math:`(B, d_a)`.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"OrthogonalProjector: sizes must be >= 1, got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.linear = parametrizations.orthogonal(nn.Linear(in_features, out_features, bias=False))

    @property
    def weight(self) -> Tensor:
        return self.linear.weight

    def reset_parameters(self) -> None:
        # re-draw through the parametrisation so the weight stays orthogonal
        with torch.no_grad():
            w = torch.empty(self.out_features, self.in_features)
            nn.init.orthogonal_(w)
            self.linear.weight = w

    def forward(self, h: Tensor) -> Tensor:
        if h.ndim != 2 or h.shape[1] != self.in_features:
            raise ValueError(
                f"OrthogonalProjector: input must have shape [B, {self.in_features}], got {tuple(h.shape)}"
            )
        return self.linear(h)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_features}, {self.out_features})"


def fedfd_feature_loss(
    global_features: Tensor,
    arch_features: Mapping[str, Tensor],
    projectors: Mapping[str, nn.Module],
    arch_weights: Mapping[str, float] | None = None,
) -> dict[str, Tensor]:
    r"""Feature-ensemble distillation through per-architecture orthogonal projections (inferred form).

    .. math::
        \mathcal{L}_{FD} = \sum_{a} \omega_a \cdot \frac1B \sum_b
            \Big\| P_a h_g(x_b) - \bar h_a(x_b) \Big\|_2^2,
        \qquad \bar h_a = \frac{1}{|K_a|}\sum_{k \in K_a} h_k

    ``arch_features[a]`` is the already-averaged :math:`\bar h_a` (treated as a constant target);
    :math:`\omega_a` are normalised to sum to 1 (uniform if ``None``; pass data shares to weight by data).

    Shapes: global_features :math:`(B, d)`, each ``arch_features[a]`` :math:`(B, d_a)`.

    Returns:
        dict with ``"loss"`` and ``"arch/<a>"`` (each architecture's unweighted term).
    """
    if not arch_features:
        raise ValueError("fedfd_feature_loss: arch_features is empty")
    missing = set(arch_features) - set(projectors)
    if missing:
        raise ValueError(f"fedfd_feature_loss: no projector for architectures {sorted(missing)}")
    if arch_weights is None:
        arch_weights = {a: 1.0 for a in arch_features}
    total_w = sum(float(arch_weights[a]) for a in arch_features)
    if total_w <= 0 or any(float(arch_weights[a]) < 0 for a in arch_features):
        raise ValueError(f"fedfd_feature_loss: arch_weights must be >= 0 with a positive sum, got "
                         f"{dict(arch_weights)}")
    hg = global_features.float()
    out: dict[str, Tensor] = {}
    loss = hg.new_zeros(())
    for a, target in arch_features.items():
        projected = projectors[a](hg)
        if projected.shape != target.shape:
            raise ValueError(
                f"fedfd_feature_loss: architecture {a!r}: projected global features {tuple(projected.shape)} "
                f"do not match client features {tuple(target.shape)}"
            )
        term = (projected - target.detach().float()).pow(2).sum(dim=1).mean()
        out[f"arch/{a}"] = term
        loss = loss + float(arch_weights[a]) / total_w * term
    out["loss"] = loss
    return out


class FedFDServer(nn.Module):
    r"""Server state and procedures of FedFD (reconstruction; see the module docstring).

    Args:
        global_model (nn.Module): the server model; ``feature_fn(global_model, x)`` gives
            ``(logits, features [B, d])``.
        global_dim (int): :math:`d`.
        arch_dims (Mapping[str, int]): feature size :math:`d_a` of each client architecture.
        feature_fn (callable, optional): ``(model, x) -> (logits, features)``.
            (default: :func:`default_feature_fn`)
        lr (float, optional): Adam learning rate of the server steps. (default: ``1e-3``)
        distill_steps (int, optional): server steps per :meth:`distill`. (default: ``50``)
        transfer_steps (int, optional): steps per architecture in :meth:`transfer`. (default: ``50``)
        kd_weight (float, optional): weight of the logit KD terms. (default: ``1.0``)
        temperature (float, optional): KD temperature. (default: ``2.0``)
        batch_size (int, optional): proxy mini-batch. (default: ``64``)
    """

    def __init__(
        self,
        global_model: nn.Module,
        global_dim: int,
        arch_dims: Mapping[str, int],
        *,
        feature_fn: FeatureFn = default_feature_fn,
        lr: float = 1e-3,
        distill_steps: int = 50,
        transfer_steps: int = 50,
        kd_weight: float = 1.0,
        temperature: float = 2.0,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        if not arch_dims:
            raise ValueError("FedFDServer: arch_dims is empty")
        if temperature <= 0:
            raise ValueError(f"FedFDServer: temperature must be > 0, got {temperature}")
        self.global_model = global_model
        self.projectors = nn.ModuleDict({a: OrthogonalProjector(global_dim, d) for a, d in arch_dims.items()})
        self.feature_fn = feature_fn
        self.lr, self.distill_steps, self.transfer_steps = lr, distill_steps, transfer_steps
        self.kd_weight, self.temperature, self.batch_size = kd_weight, temperature, batch_size

    def _batches(self, proxy_x: Tensor, steps: int, generator: torch.Generator | None):
        n = proxy_x.shape[0]
        for _ in range(steps):
            idx = torch.randint(0, n, (min(self.batch_size, n),), generator=generator)
            yield proxy_x[idx]

    def _kd(self, student_logits: Tensor, teacher_probs: Tensor) -> Tensor:
        t = self.temperature
        return t * t * F.kl_div(F.log_softmax(student_logits / t, 1), teacher_probs, reduction="batchmean")

    def distill(
        self,
        proxy_x: Tensor,
        client_models: Mapping[str, Sequence[nn.Module]],
        *,
        arch_weights: Mapping[str, float] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, float]:
        """Train the global model and the projectors on the clients' feature ensemble (step 2)."""
        if proxy_x.ndim < 2 or proxy_x.shape[0] == 0:
            raise ValueError(
                f"FedFDServer.distill: proxy_x must be a non-empty batch, got {tuple(proxy_x.shape)}"
            )
        unknown = set(client_models) - set(self.projectors)
        if unknown:
            raise ValueError(f"FedFDServer.distill: unknown architectures {sorted(unknown)}; "
                             f"known: {sorted(self.projectors)}")
        for models in client_models.values():
            for m in models:
                m.eval()
        self.global_model.train()
        opt = torch.optim.Adam(list(self.global_model.parameters()) + list(self.projectors.parameters()),
                               lr=self.lr)
        last: dict[str, float] = {}
        for x in self._batches(proxy_x, self.distill_steps, generator):
            with torch.no_grad():
                feats, probs = {}, []
                for a, models in client_models.items():
                    outs = [self.feature_fn(m, x) for m in models]
                    feats[a] = torch.stack([f for _, f in outs]).mean(0)
                    probs += [torch.softmax(lg / self.temperature, 1) for lg, _ in outs]
                teacher_probs = torch.stack(probs).mean(0)
            logits, hg = self.feature_fn(self.global_model, x)
            terms = fedfd_feature_loss(hg, feats, self.projectors, arch_weights)
            kd = self._kd(logits, teacher_probs)
            loss = terms["loss"] + self.kd_weight * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            last = {"feature_loss": float(terms["loss"].detach()), "kd": float(kd.detach())}
        self.global_model.eval()
        return last

    def transfer(
        self, proxy_x: Tensor, arch: str, model: nn.Module, *, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        r"""Pull ``model`` (architecture ``arch``) towards :math:`P_a h_g(x)` and the global logits
        (step 3): minimise :math:`\|h_a(x) - P_a h_g(x)\|^2 + \lambda_{kd} T^2 \mathrm{KL}(p_g \| p_a)`
        on proxy data."""
        if arch not in self.projectors:
            raise ValueError(
                f"FedFDServer.transfer: unknown architecture {arch!r}; known: {sorted(self.projectors)}"
            )
        self.global_model.eval()
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        last: dict[str, float] = {}
        for x in self._batches(proxy_x, self.transfer_steps, generator):
            with torch.no_grad():
                g_logits, hg = self.feature_fn(self.global_model, x)
                target = self.projectors[arch](hg)
                g_probs = torch.softmax(g_logits / self.temperature, 1)
            logits, h = self.feature_fn(model, x)
            feat = (h - target).pow(2).sum(1).mean()
            kd = self._kd(logits, g_probs)
            loss = feat + self.kd_weight * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            last = {"feature_loss": float(feat.detach()), "kd": float(kd.detach())}
        model.eval()
        return last

    def extra_repr(self) -> str:
        return (
            f"archs={list(self.projectors)}, distill_steps={self.distill_steps}, "
            f"transfer_steps={self.transfer_steps}"
        )
