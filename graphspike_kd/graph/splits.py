"""Few-shot node splits: ``k`` labelled nodes per class (1, 3 or 5), seeded, under two protocols.

``"paper"`` (the PKD paper's protocol, NeurIPS 2025, §4.1): the ``k`` shots per class are the only
    training labels; of the remaining nodes a random 32 % of all nodes form the validation set and a
    random 20 % of all nodes the test set, both with **true** labels. Model selection (early stopping,
    choosing a teacher) uses the validation labels. The rest (48 % of all nodes minus the shots) is the
    unlabelled ``pool`` from which an annotator may label nodes: "expand to 48 %" means annotating all of it.

``"strict"``: no true label beyond the ``k`` shots is ever used for training or model selection. The
    test set is the dataset's Planetoid test set when it has one (``planetoid_test_mask``), otherwise all
    non-shot nodes. The validation set is empty, so trainers run a fixed number of epochs. The pool is
    every non-shot node outside the test set; where the test set takes all of them (WebKB), the pool is the
    test nodes themselves (transductive: an annotator may label them, but their true labels are never read).

A class with fewer than ``k`` nodes contributes all of them as shots (and then has none left to test).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

PROTOCOLS = ("paper", "strict")


@dataclass(frozen=True)
class FewShotSplit:
    """Boolean node masks of one few-shot split (all of shape ``[N]``)."""

    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor
    pool_mask: Tensor
    protocol: str
    shots: int
    seed: int

    @property
    def train_index(self) -> Tensor:
        return self.train_mask.nonzero().view(-1)

    @property
    def val_index(self) -> Tensor:
        return self.val_mask.nonzero().view(-1)

    @property
    def test_index(self) -> Tensor:
        return self.test_mask.nonzero().view(-1)

    @property
    def pool_index(self) -> Tensor:
        return self.pool_mask.nonzero().view(-1)

    @property
    def has_validation(self) -> bool:
        return bool(self.val_mask.any())


def few_shot_split(
    y: Tensor,
    shots: int,
    *,
    protocol: str = "paper",
    seed: int = 0,
    val_fraction: float = 0.32,
    test_fraction: float = 0.20,
    planetoid_test_mask: Tensor | None = None,
) -> FewShotSplit:
    """Draw a seeded few-shot split.

    Args:
        y (Tensor): node labels ``[N]``; nodes with ``y < 0`` (unlabelled) are never shots, validation or
            test nodes.
        shots (int): labelled nodes per class (the paper uses 1, 3 and 5).
        protocol (str, optional): ``"paper"`` or ``"strict"`` (see the module docstring). (default:
            ``"paper"``)
        seed (int, optional): the split depends only on ``seed`` and ``y``. (default: ``0``)
        val_fraction (float, optional): validation size as a fraction of all nodes, ``"paper"`` only.
            (default: ``0.32``)
        test_fraction (float, optional): test size as a fraction of all nodes, ``"paper"`` only.
            (default: ``0.20``)
        planetoid_test_mask (Tensor, optional): the fixed test set of the ``"strict"`` protocol.
            (default: ``None``: all non-shot nodes)
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if y.dim() != 1:
        raise ValueError(f"y must be a 1-D label vector, got shape {tuple(y.shape)}")
    n = y.numel()
    generator = torch.Generator().manual_seed(seed)
    labelled = y >= 0

    train_mask = torch.zeros(n, dtype=torch.bool)
    for c in torch.unique(y[labelled]).tolist():
        members = (y == c).nonzero().view(-1)
        chosen = members[torch.randperm(members.numel(), generator=generator)[:shots]]
        train_mask[chosen] = True

    val_mask = torch.zeros(n, dtype=torch.bool)
    test_mask = torch.zeros(n, dtype=torch.bool)
    if protocol == "paper":
        if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"need 0 <= val_fraction + test_fraction < 1, got {val_fraction} + {test_fraction}"
            )
        rest = (labelled & ~train_mask).nonzero().view(-1)
        rest = rest[torch.randperm(rest.numel(), generator=generator)]
        n_val, n_test = round(val_fraction * n), round(test_fraction * n)
        if n_val + n_test > rest.numel():
            raise ValueError(
                f"{n_val} validation + {n_test} test nodes requested but only {rest.numel()} labelled "
                "non-shot nodes exist"
            )
        val_mask[rest[:n_val]] = True
        test_mask[rest[n_val : n_val + n_test]] = True
        pool_mask = ~(train_mask | val_mask | test_mask)
    else:
        if planetoid_test_mask is not None:
            if planetoid_test_mask.shape != (n,):
                raise ValueError(
                    f"planetoid_test_mask has shape {tuple(planetoid_test_mask.shape)}, expected ({n},)"
                )
            test_mask = planetoid_test_mask.bool() & ~train_mask & labelled
        else:
            test_mask = labelled & ~train_mask
        pool_mask = ~(train_mask | test_mask)
        if not pool_mask.any():
            pool_mask = ~train_mask
    return FewShotSplit(train_mask, val_mask, test_mask, pool_mask, protocol, shots, seed)
