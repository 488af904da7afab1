"""Client data partitions for federated simulations."""

from __future__ import annotations

import numpy as np


def dirichlet_partition(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int = 2,
    max_tries: int = 100,
) -> list[np.ndarray]:
    r"""Non-IID split: for each class :math:`c`, proportions :math:`q_c \sim \mathrm{Dir}(\alpha \mathbf 1_K)`
    over the :math:`K` clients, and the class's samples are dealt out accordingly (Hsu et al. 2019).

    Smaller ``alpha`` = more skewed label distributions. Redraws (up to ``max_tries``) until every client
    holds at least ``min_size`` samples.

    Args:
        labels (np.ndarray): ``[n]`` integer class labels.
        num_clients (int): :math:`K`.
        alpha (float): Dirichlet concentration, > 0.
        rng (np.random.Generator): the only source of randomness.
        min_size (int, optional): minimum samples per client. (default: ``2``)

    Returns:
        ``num_clients`` sorted index arrays that partition ``range(n)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"dirichlet_partition: labels must be 1-D, got shape {labels.shape}")
    if num_clients < 1 or alpha <= 0:
        raise ValueError(
            f"dirichlet_partition: needs num_clients >= 1 and alpha > 0, got {num_clients}, {alpha}"
        )
    if num_clients * min_size > labels.shape[0]:
        raise ValueError(
            f"dirichlet_partition: {labels.shape[0]} samples cannot give {num_clients} clients "
            f"{min_size} each"
        )
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            q = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(q)[:-1] * idx.shape[0]).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"dirichlet_partition: no split with >= {min_size} samples per client after {max_tries} draws "
        f"(alpha={alpha}, num_clients={num_clients}); raise alpha or lower min_size"
    )
