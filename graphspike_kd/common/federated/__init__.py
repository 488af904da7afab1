"""Federated-learning server procedures for model-heterogeneous KD (algorithms, not per-batch losses).

- :mod:`.fedfd`: FedFD feature distillation through per-architecture orthogonal projectors.
- :mod:`.fedfree`: FedFree Gaussian pseudo-data layer alignment and Knowledge Gain Entropy.
- :func:`fedavg`, :func:`dirichlet_partition`: the FedAvg baseline and the non-IID split of the
  simulations.

These are framework-free functions and classes that operate on ``nn.Module`` objects in one process;
an engine such as Flower can call them from a custom strategy's ``aggregate_fit``.
"""

from graphspike_kd.common.federated.fedavg import fedavg
from graphspike_kd.common.federated.fedfd import (
    FedFDServer,
    OrthogonalProjector,
    default_feature_fn,
    fedfd_feature_loss,
)
from graphspike_kd.common.federated.fedfree import (
    FedFreeServer,
    alignable_layers,
    copy_overlap_,
    gaussian_probes,
    histogram_entropy,
    knowledge_gain_entropy,
    layer_alignment_loss,
    layer_change_norms,
    map_layers_by_depth,
    top_k_changed_layers,
)
from graphspike_kd.common.federated.partition import dirichlet_partition

__all__ = [
    "FedFDServer",
    "FedFreeServer",
    "OrthogonalProjector",
    "alignable_layers",
    "copy_overlap_",
    "default_feature_fn",
    "dirichlet_partition",
    "fedavg",
    "fedfd_feature_loss",
    "gaussian_probes",
    "histogram_entropy",
    "knowledge_gain_entropy",
    "layer_alignment_loss",
    "layer_change_norms",
    "map_layers_by_depth",
    "top_k_changed_layers",
]
