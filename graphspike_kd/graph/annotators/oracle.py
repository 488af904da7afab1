r"""``oracle`` backend: a simulated annotator with a chosen accuracy, for CPU runs, tests and ablations.

For node :math:`i` with true class :math:`y_i` and a per-node generator seeded by ``(seed, i)``:

.. math::
    \hat{y}_i = \begin{cases} y_i & \text{with probability } a \\
    c \ne y_i \text{ drawn with probability } \propto M_{y_i c} & \text{otherwise} \end{cases}

where :math:`a` is ``accuracy`` and :math:`M` a ``[C, C]`` confusion matrix (uniform over the wrong
classes by default; pass e.g. the confusion of a real LLM, estimated by :func:`confusion_matrix`, to
simulate *systematic* errors, which cost a GNN far more than uniform noise of the same rate). The
answer of a node depends only on ``(seed, node)``, never on which other nodes are asked with it, so
cached and fresh answers agree. Confidence is :math:`a` for every answer (calibrated by construction).
It plays the role of a noisy LLM annotator of known accuracy behind the common interface.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from .base import Annotator, QueryResult, dataset_fields
from .cache import AnnotationCache

__all__ = ["OracleAnnotator", "confusion_matrix"]


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Row-normalised ``[C, C]`` counts of ``(true, predicted)`` pairs; invalid predictions (-1) skipped."""
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    keep = p >= 0
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (t[keep], p[keep]), 1.0)
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.full_like(counts, 1.0 / num_classes), where=rows > 0)


class OracleAnnotator(Annotator):
    """True label with probability ``accuracy``, else a wrong class drawn from ``confusion``.

    Args:
        dataset (torch_geometric.data.Data): with ``name``, ``class_names`` and ``y``.
        accuracy (float): probability of answering the true class, in ``[0, 1]``. (default: :obj:`0.7`)
        confusion (array, optional): ``[C, C]`` non-negative weights; row ``y`` gives the odds of each
            wrong class when the true class is ``y`` (its diagonal is ignored). A row without
            off-diagonal mass falls back to uniform. (default: uniform)
        seed (int): seeds every node's generator together with the node id. (default: :obj:`0`)
        cache: the annotation cache (default: in memory).
    """

    backend = "oracle"

    def __init__(
        self,
        dataset: Any,
        *,
        accuracy: float = 0.7,
        confusion: Any = None,
        seed: int = 0,
        cache: AnnotationCache | str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> None:
        fields = dataset_fields(dataset)
        y = getattr(dataset, "y", None)
        if y is None:
            raise ValueError(f"dataset {fields['name']!r} has no labels `y`; the oracle annotator needs them")
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy must lie in [0, 1], got {accuracy}")
        self.y = np.asarray(y.cpu() if hasattr(y, "cpu") else y).reshape(-1).astype(np.int64)
        c = len(fields["class_names"])
        weights = np.ones((c, c)) if confusion is None else np.array(confusion, dtype=np.float64)
        if weights.shape != (c, c) or (weights < 0).any() or not np.isfinite(weights).all():
            raise ValueError(
                f"confusion must be a non-negative finite [{c}, {c}] matrix, got shape {weights.shape}"
            )
        np.fill_diagonal(weights, 0.0)
        empty = weights.sum(axis=1) == 0
        weights[empty] = 1.0
        np.fill_diagonal(weights, 0.0)
        self.wrong_probs = weights / weights.sum(axis=1, keepdims=True)
        self.accuracy = float(accuracy)
        self.seed = int(seed)
        kind = "uniform" if confusion is None else "confusion"
        super().__init__(
            dataset_name=fields["name"],
            class_names=fields["class_names"],
            model_name=f"oracle(accuracy={self.accuracy:g}, {kind}, seed={self.seed})",
            num_nodes=fields["num_nodes"] or self.y.size,
            cache=cache,
            progress=progress,
        )

    def prompt_for(self, node: int) -> str:
        return str(int(self.y[node]))

    def config_fingerprint(self) -> str:
        return super().config_fingerprint() + np.round(self.wrong_probs, 6).tobytes().hex()

    def _query(self, nodes: list[int]) -> Iterable[QueryResult]:
        for n in nodes:
            rng = np.random.default_rng([self.seed, int(n)])
            truth = int(self.y[n])
            if self.num_classes == 1 or rng.random() < self.accuracy:
                label = truth
            else:
                label = int(rng.choice(self.num_classes, p=self.wrong_probs[truth]))
            yield QueryResult(
                n, label, self.accuracy, "oracle: true label" if label == truth else "oracle: noise"
            )
