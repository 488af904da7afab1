"""Shared pieces of the digits experiments: data (scikit-learn's bundled 8x8 digits, no download; the loader
is the public :func:`graphspike_kd.spiking.data.digits.load_digits_tensors`), a small MLP family and one
supervised training loop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphspike_kd.spiking.data.digits import load_digits_tensors

__all__ = ["MLP", "accuracy", "class_weighted_accuracy", "load_digits_tensors", "stratified_split",
           "train_supervised"]


def stratified_split(y: Tensor, fractions: Sequence[float], rng: np.random.Generator) -> list[Tensor]:
    """Split indices into len(fractions) + 1 parts per class (the last part takes the rest)."""
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in torch.unique(y).tolist():
        idx = rng.permutation(np.flatnonzero(y.numpy() == c))
        start = 0
        for k, f in enumerate(fractions):
            n = int(round(f * idx.shape[0]))
            parts[k].extend(idx[start:start + n].tolist())
            start += n
        parts[-1].extend(idx[start:].tolist())
    return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]


class MLP(nn.Module):
    """``in -> hidden[0] -> ... -> hidden[-1] (features) -> classes``, ReLU, optional BatchNorm.

    ``forward(x, return_features=True)`` returns ``(logits, features)``."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], num_classes: int, *, batch_norm: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_features
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_classes)
        self.feature_dim = d

    def forward(self, x: Tensor, return_features: bool = False):
        f = self.body(x)
        logits = self.head(f)
        return (logits, f) if return_features else logits


def train_supervised(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    optimizer: str = "sgd",
) -> None:
    """Plain cross-entropy training (SGD or Adam), reshuffled each epoch with ``generator``."""
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if idx.numel() < 2 and any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
                continue
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


@torch.no_grad()
def class_weighted_accuracy(model: nn.Module, x: Tensor, y: Tensor, class_weights: Tensor) -> float:
    """Accuracy on a test distribution re-weighted to ``class_weights`` (a client's label mix)."""
    model.eval()
    correct = (model(x).argmax(1) == y).float()
    per_class = torch.stack([correct[y == c].mean() for c in range(class_weights.shape[0])])
    w = class_weights / class_weights.sum()
    return float((w * per_class).sum())
