"""FedAvg: data-size-weighted parameter averaging of models that share one architecture."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


@torch.no_grad()
def fedavg(models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    r"""Weighted average of the floating-point entries of ``state_dict()`` (McMahan et al., 2017).

    .. math:: \theta = \sum_k \frac{n_k}{\sum_j n_j}\, \theta_k

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are taken from the first model.

    Args:
        models: models with identical state-dict keys and shapes.
        weights: per-model weights :math:`n_k` (e.g. sample counts); uniform if ``None``.

    Returns:
        The averaged state dict (load it with ``model.load_state_dict``).
    """
    if len(models) == 0:
        raise ValueError("fedavg: needs at least one model")
    w = torch.ones(len(models)) if weights is None else torch.as_tensor(list(weights), dtype=torch.float64)
    if w.shape[0] != len(models) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"fedavg: weights must be {len(models)} non-negative numbers with a positive sum, "
                         f"got {list(map(float, w))}")
    w = w / w.sum()
    states = [m.state_dict() for m in models]
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise ValueError(f"fedavg: model {i} does not match model 0 (keys or shapes differ)")
    out = {}
    for k in keys:
        ref = states[0][k]
        if ref.is_floating_point():
            out[k] = sum(float(wi) * s[k].double() for wi, s in zip(w, states, strict=True)).to(ref.dtype)
        else:
            out[k] = ref.clone()
    return out
