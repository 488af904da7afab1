"""The one full-batch trainer for every node classifier of :mod:`graphspike_kd.graph.models`.

It fits hard labels (``LongTensor [N]``, ``-1`` = no label) or soft targets (``FloatTensor [N, C]``, rows
on the probability simplex) on a node mask, with optional per-node weights, plus any extra loss terms a
caller adds (e.g. PKD's distillation and entropy terms). Losses are returned as a dict of named terms, so
every term can be logged. Model selection follows the split protocol: with a validation mask, the weights
with the best validation accuracy (ties: lower validation loss) are restored, stopping after ``patience``
epochs without improvement; without one (the ``"strict"`` protocol), it trains exactly ``epochs`` epochs
and keeps the last weights. Everything runs under a forked RNG seeded with ``seed``: parameters are reset
from that seed, so a call is deterministic on CPU and leaves the global RNG untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule (defaults: the PKD paper's Appendix C, Adam lr 1e-2, weight decay 5e-4).

    Args:
        lr (float): Adam learning rate. (default: ``0.01``)
        weight_decay (float): L2 penalty. (default: ``5e-4``)
        epochs (int): maximum epochs with a validation set; the exact count without one. (default: ``300``)
        patience (int | None): stop after this many epochs without a better validation accuracy; ``None``
            runs all epochs. (default: ``100``)
        eval_every (int): validate every this many epochs (and after the last one); patience still
            counts epochs. A validation pass is a full forward, about a third of a training epoch, so on a
            large graph ``eval_every=5`` saves about a fifth of the time. (default: ``1``)
    """

    lr: float = 0.01
    weight_decay: float = 5e-4
    epochs: int = 300
    patience: int | None = 100
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0 or self.epochs < 1:
            raise ValueError(
                f"bad TrainConfig: lr={self.lr}, weight_decay={self.weight_decay}, epochs={self.epochs}"
            )
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")


@dataclass
class TrainResult:
    """What :func:`train_node_classifier` returns. ``model`` holds the selected weights, in eval mode."""

    model: nn.Module
    best_epoch: int
    epochs_run: int
    best_val_acc: float | None
    history: list[dict[str, float]] = field(default_factory=list)


def target_loss(logits: Tensor, targets: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
    r"""Weighted cross-entropy of ``logits`` against hard or soft ``targets`` over the nodes in ``mask``.

    .. math::
        \mathcal{L} = \frac{\sum_{i \in M} w_i\, \ell_i}{\sum_{i \in M} w_i},\qquad
        \ell_i = -\log p_{i, y_i} \;\text{(hard)}\quad\text{or}\quad \ell_i = -\sum_c q_{ic} \log p_{ic}
        \;\text{(soft)}

    Hard targets equal to ``-1`` are left out of :math:`M`.

    Shapes:
        - **input:** logits :math:`(N, C)`; targets :math:`(N)` long or :math:`(N, C)` float; mask
          :math:`(N)` bool; weight :math:`(N)` float, non-negative
        - **output:** scalar
    """
    n, c = logits.shape
    if mask.shape != (n,):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected ({n},)")
    log_p = F.log_softmax(logits.float(), dim=1)
    if targets.dtype in (torch.int64, torch.int32):
        if targets.shape != (n,):
            raise ValueError(f"hard targets have shape {tuple(targets.shape)}, expected ({n},)")
        mask = mask & (targets >= 0)
        if bool((targets[mask] >= c).any()):
            raise ValueError(
                f"hard targets hold class {int(targets[mask].max())} but logits have {c} classes"
            )
        per_node = -log_p[mask].gather(1, targets[mask].long().view(-1, 1)).view(-1)
    else:
        if targets.shape != (n, c):
            raise ValueError(f"soft targets have shape {tuple(targets.shape)}, expected ({n}, {c})")
        per_node = -(targets[mask].float() * log_p[mask]).sum(dim=1)
    if per_node.numel() == 0:
        raise ValueError("no training node: the mask selects no node with a target")
    if weight is None:
        return per_node.mean()
    if weight.shape != (n,):
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected ({n},)")
    w = weight[mask].float()
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError("per-node weights must be non-negative with a positive sum on the mask")
    return (w * per_node).sum() / w.sum()


def _cuda_devices(device: torch.device) -> list[int]:
    """The CUDA device whose generator :func:`torch.random.fork_rng` must also save (none on CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, edge_index: Tensor) -> Tensor:
    """Logits of ``model`` in eval mode (the training mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    out = model(x, edge_index)
    model.train(was_training)
    return out


def accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    """Accuracy of ``argmax(logits)`` on the nodes in ``mask`` (``nan`` when the mask is empty)."""
    if not bool(mask.any()):
        return float("nan")
    return float((logits[mask].argmax(dim=1) == y[mask]).float().mean())


def train_node_classifier(
    model: nn.Module,
    x: Tensor,
    edge_index: Tensor,
    targets: Tensor | None,
    train_mask: Tensor,
    *,
    sample_weight: Tensor | None = None,
    target_weight: float = 1.0,
    extra_loss: Callable[[Tensor], dict[str, Tensor]] | None = None,
    val_mask: Tensor | None = None,
    val_y: Tensor | None = None,
    config: TrainConfig = TrainConfig(),
    seed: int = 0,
    reset: bool = True,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` full-batch with Adam.

    The loss is ``target_weight * target_loss(logits, targets, train_mask, sample_weight)`` plus every term
    of ``extra_loss(logits)`` (a dict of scalars, e.g. ``{"distill": ..., "entropy": ...}``).

    Labels, masks and weights are moved to the device of ``x`` (put the model, ``x`` and ``edge_index``
    on the device to train there).

    Args:
        model: any module ``model(x, edge_index) -> logits [N, C]`` with ``reset_parameters()``.
        targets (Tensor | None): hard ``[N]`` (``-1`` = none) or soft ``[N, C]``; ``None`` with
            ``extra_loss`` only.
        train_mask (Tensor): bool ``[N]``, the nodes whose targets count.
        sample_weight (Tensor, optional): per-node weights ``[N]``. (default: ``None``, all 1)
        target_weight (float, optional): factor on the target loss (PKD's :math:`\\beta`). (default: ``1.0``)
        extra_loss (callable, optional): ``logits -> dict[str, Tensor]`` of additional terms.
        val_mask (Tensor, optional): bool ``[N]`` validation nodes; ``None`` or empty = no model selection.
        val_y (Tensor, optional): validation labels ``[N]`` (true labels under the paper protocol).
        config (TrainConfig, optional): optimiser and schedule.
        seed (int, optional): seeds parameter reset and dropout. (default: ``0``)
        reset (bool, optional): reset the parameters from ``seed`` first. (default: ``True``)
        progress (bool, optional): tqdm bar over epochs. (default: ``False``)
    """
    if targets is None and extra_loss is None:
        raise ValueError("nothing to train on: give targets, extra_loss, or both")
    use_val = val_mask is not None and bool(val_mask.any())
    if use_val and val_y is None:
        raise ValueError("val_mask given without val_y (the labels to select the model by)")

    from graphspike_kd.graph.models import prepare_features

    x = prepare_features(x)
    device = x.device
    train_mask = train_mask.to(device)
    targets = None if targets is None else targets.to(device)
    sample_weight = None if sample_weight is None else sample_weight.to(device)
    if use_val:
        val_mask, val_y = val_mask.to(device), val_y.to(device)
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(seed)
        if reset:
            if not hasattr(model, "reset_parameters"):
                raise TypeError(f"{type(model).__name__} has no reset_parameters(); pass reset=False")
            model.reset_parameters()
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        best_state, best_epoch, best_acc, best_loss = None, 0, -1.0, float("inf")
        history: list[dict[str, float]] = []
        epochs = tqdm(
            range(1, config.epochs + 1), disable=not progress, desc=type(model).__name__, leave=False
        )
        epoch = 0
        for epoch in epochs:
            model.train()
            optimizer.zero_grad()
            logits = model(x, edge_index)
            terms: dict[str, Tensor] = {}
            if targets is not None:
                terms["target"] = target_weight * target_loss(logits, targets, train_mask, sample_weight)
            if extra_loss is not None:
                terms.update(extra_loss(logits))
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch}: "
                    + ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
                )
            loss.backward()
            optimizer.step()
            record = {
                "epoch": float(epoch),
                "loss": float(loss.detach()),
                **{k: float(v.detach()) for k, v in terms.items()},
            }
            if use_val and (epoch % config.eval_every == 0 or epoch == config.epochs):
                out = predict(model, x, edge_index)
                val_acc = accuracy(out, val_y, val_mask)
                val_loss = float(F.cross_entropy(out[val_mask], val_y[val_mask]))
                record.update(val_acc=val_acc, val_loss=val_loss)
                if val_acc > best_acc or (val_acc == best_acc and val_loss < best_loss):
                    best_acc, best_loss, best_epoch = val_acc, val_loss, epoch
                    best_state = copy.deepcopy(model.state_dict())
                elif config.patience is not None and epoch - best_epoch >= config.patience:
                    history.append(record)
                    break
            history.append(record)
        if use_val and best_state is not None:
            model.load_state_dict(best_state)
        else:
            best_epoch = epoch
    model.eval()
    return TrainResult(model, best_epoch, epoch, best_acc if use_val else None, history)
