"""The three CIFAR10-DVS train/test split conventions. Accuracies on different splits are NOT comparable.

====================  ======================================================================================
name                  definition
====================  ======================================================================================
``"per_class_9to1"``  per class, the first :math:`\\lceil 0.9 n_c \\rceil` samples (in dataset order)
                      train, the rest test: spikingjelly
                      ``split_to_train_test_set(0.9, ds, 10, random_split=False)``. The default.
``"random_9to1"``     an unstratified seeded random 9:1 split of all samples:
                      ``torch.utils.data.random_split(ds, [9000, 1000], generator=manual_seed(seed))``
                      (ESD uses seed 42; Synergy draws a random 90/10 split per run).
``"tebn"``            TEBN's split: per class, samples with file index 0..99
                      (``cifar10_<class>_<i>.aedat``) test, 100..999 train (spikingjelly
                      ``CIFAR10DVSTEBNSplit``). spikingjelly warns that accuracy on this split "is typically
                      much higher than that on a random split".
====================  ======================================================================================
"""

from __future__ import annotations

import math

import numpy as np
import torch

SPLITS = ("per_class_9to1", "random_9to1", "tebn")

SPLIT_DESCRIPTIONS = {
    "per_class_9to1": "per class: first 90% (dataset order) train, last 10% test (spikingjelly "
    "split_to_train_test_set, random_split=False)",
    "random_9to1": "unstratified seeded random 9:1 (torch.utils.data.random_split with manual_seed(seed))",
    "tebn": "TEBN: per class, file indices 0-99 test, 100-999 train (spikingjelly CIFAR10DVSTEBNSplit)",
}


def split_indices(
    labels: np.ndarray,
    split: str = "per_class_9to1",
    *,
    index_in_class: np.ndarray | None = None,
    train_ratio: float = 0.9,
    seed: int = 42,
    tebn_test_per_class: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test sample indices for one of :data:`SPLITS`.

    Args:
        labels: ``[N]`` integer class of every sample, in dataset order.
        split (str, optional): one of :data:`SPLITS`. (default: ``"per_class_9to1"``)
        index_in_class: ``[N]`` file index of each sample inside its class (the ``<i>`` of
            ``cifar10_<class>_<i>.aedat``); required by ``"tebn"``.
        train_ratio (float, optional): train fraction of the 9:1 splits. (default: ``0.9``)
        seed (int, optional): seed of ``"random_9to1"``. (default: ``42``, ESD's)
        tebn_test_per_class (int, optional): file indices below this are TEBN test samples. (default: ``100``)

    Returns:
        ``(train, test)`` int64 index arrays, each sorted ascending except ``random_9to1`` (permutation
        order).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"split_indices: labels must have shape [N], got {labels.shape}")
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"split_indices: train_ratio must lie in (0, 1), got {train_ratio}")
    n = labels.shape[0]
    if split == "per_class_9to1":
        train, test = [], []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            pos = math.ceil(len(idx) * train_ratio)
            train.append(idx[:pos])
            test.append(idx[pos:])
        return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)
    if split == "random_9to1":
        n_train = math.floor(n * train_ratio)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy().astype(np.int64)
        return perm[:n_train], perm[n_train:]
    if split == "tebn":
        if index_in_class is None:
            raise ValueError("split_indices: split='tebn' needs index_in_class (the file index inside each "
                             "class)")
        index_in_class = np.asarray(index_in_class)
        if index_in_class.shape != labels.shape:
            raise ValueError(
                f"split_indices: index_in_class shape {index_in_class.shape} != labels shape {labels.shape}"
            )
        is_test = index_in_class < tebn_test_per_class
        return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)
    raise ValueError(f"split_indices: split must be one of {SPLITS}, got {split!r}")
