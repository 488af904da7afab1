"""The GNN zoo used as PKD teachers and students, on PyG layers, behind one builder.

Every model maps ``(x, edge_index)`` to class logits, has ``reset_parameters()`` and ``embed(x,
edge_index)`` (the node representation fed to the classifier, e.g. for neighbour search in a teacher's
embedding space), and prints as one line, e.g. ``GCN(1433, 64, 7, num_layers=2)``.

================  ==========================================================================  =========
name              model                                                                       reference
================  ==========================================================================  =========
``gcn``           graph convolution network                                                   [1]
``gat``           graph attention network (multi-head, concatenated hidden heads)             [2]
``sage``          GraphSAGE, mean aggregation                                                 [3]
``appnp``         MLP predictions propagated by personalised PageRank                        [4]
``gcnii``         GCN with initial residual and identity mapping (deep)                      [5]
``h2gcn``         ego/neighbour separation, 1- and 2-hop aggregation, combined rounds         [6]
``gprgnn``        MLP predictions propagated by learnable generalised PageRank weights        [7]
``dirgnn``        DirGNN: separate in- and out-neighbour SAGE aggregation                     [8]
``mlp``           multi-layer perceptron, ignores the graph                                   --
================  ==========================================================================  =========

[1] Kipf & Welling, arXiv:1609.02907. [2] Velickovic et al., arXiv:1710.10903. [3] Hamilton et al.,
arXiv:1706.02216. [4] Gasteiger et al., arXiv:1810.05997. [5] Chen et al., arXiv:2007.02133. [6] Zhu et al.,
arXiv:2006.11468. [7] Chien et al., arXiv:2006.07988. [8] Rossi et al., arXiv:2305.10498.

Node features may be dense or sparse CSR (:func:`prepare_features`); with sparse bag-of-words features
input dropout touches only the non-zero entries and the first layer is a sparse matmul, which on Cora's
2,708 x 1,433 matrix is an order of magnitude faster than the dense path and computes the same function;
its weight gradient reuses a cached transpose of the feature matrix (:mod:`~graphspike_kd.graph.sparse_ops`).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import APPNP as APPNPPropagation
from torch_geometric.nn import DirGNNConv, GATConv, GCN2Conv, GCNConv, SAGEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import coalesce, remove_self_loops

from graphspike_kd.graph.sparse_ops import enable_sparse_input


def prepare_features(x: Tensor, *, max_density: float = 0.25) -> Tensor:
    """Return ``x`` as a sparse CSR tensor when at most ``max_density`` of its entries are non-zero
    (bag of words, TF-IDF), else unchanged. Every model accepts both layouts; the trainer calls this once."""
    if x.layout != torch.strided or x.dim() != 2:
        return x
    if int(torch.count_nonzero(x)) > max_density * x.numel():
        return x
    with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return x.to_sparse_csr()


def input_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on node features; for a sparse CSR ``x`` only the stored (non-zero) values are dropped,
    which draws the same distribution as dense dropout (a zero stays zero) at a fraction of the cost."""
    if not training or p == 0.0:
        return x
    if x.layout == torch.sparse_csr:
        values = dropout(x.values(), p, training=True)
        return torch.sparse_csr_tensor(
            x.crow_indices(), x.col_indices(), values, x.shape, check_invariants=False
        )
    return dropout(x, p, training=True)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    r"""Inverted dropout; on CPU (2,708 x 896 floats, one thread) forward + backward take about half the time
    of a float-uniform mask and a third of :func:`torch.nn.functional.dropout`'s.

    The keep mask compares 15-bit uniform integers with :math:`t = \lceil 2^{15} p \rceil`; four of them
    come from each 64-bit draw of the generator, which is where the time goes (a float draw per element
    costs more than the rest of the layer). An element is dropped with probability
    :math:`p' = t / 2^{15}` (:math:`|p' - p| < 2^{-15}`, exact for ``p = 0.5``) and kept ones are scaled by
    :math:`1 / (1 - p')`, so the output is unbiased. Draws come from the default generator (seeded runs
    repeat exactly)."""
    if not training or p == 0.0:
        return x
    threshold = math.ceil(p * 32768)
    if threshold >= 32768:
        return torch.zeros_like(x)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_()
    uniform15 = words.view(torch.int16)[: x.numel()].view(x.shape) & 0x7FFF
    keep = (uniform15 >= threshold).to(x.dtype)
    return x * keep.mul_(32768.0 / (32768 - threshold))


def _dense(x: Tensor) -> Tensor:
    return x.to_dense() if x.layout != torch.strided else x


class NodeClassifier(nn.Module):
    """Base class: ``forward(x, edge_index) = head(embed(x, edge_index))``."""

    def __init__(
        self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int, dropout: float
    ):
        super().__init__()
        if min(in_channels, hidden_channels, out_channels) < 1:
            raise ValueError(
                f"{type(self).__name__}: channels must be positive, got in={in_channels}, "
                f"hidden={hidden_channels}, out={out_channels}"
            )
        if num_layers < 1:
            raise ValueError(f"{type(self).__name__}: num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.dropout = dropout

    def _finish_init(self) -> None:
        """End of every subclass ``__init__``: initialise, and give the layers that read the raw features
        the fast sparse path (:func:`~graphspike_kd.graph.sparse_ops.enable_sparse_input`)."""
        self.reset_parameters()
        enable_sparse_input(self, self.in_channels)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.hidden_channels}, {self.out_channels}, "
            f"num_layers={self.num_layers})"
        )


class _ConvStack(NodeClassifier):
    r"""``num_layers`` message-passing layers; ReLU and dropout between them; the last one is the head.

    With ``adjacency="gcn"`` the layers receive, instead of ``edge_index``, an operator ``h -> A h`` for the
    cached, normalised sparse adjacency :math:`\hat{\mathbf{D}}^{-1/2}\hat{\mathbf{A}}\hat{\mathbf{D}}^{-1/2}`
    (built once per graph, with its transpose for the backward pass, rather than once per layer call)."""

    def __init__(
        self,
        in_channels,
        hidden_channels,
        out_channels,
        num_layers,
        dropout,
        make_conv: Callable,
        adjacency: str | None = None,
    ):
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(
            make_conv(dims[i], dims[i + 1], i == num_layers - 1) for i in range(num_layers)
        )
        self._adjacency = adjacency
        self._adj = _AdjacencyCache()
        self._finish_init()

    def _graph(self, x: Tensor, edge_index: Tensor) -> Tensor | _AdjacencyOperator:
        if self._adjacency is None:
            return edge_index
        return _AdjacencyOperator(self._adj, edge_index, self._adjacency)

    def _hidden(self, x: Tensor, graph: Tensor) -> Tensor:
        x = input_dropout(x, self.dropout, self.training)
        for conv in self.convs[:-1]:
            x = F.relu(conv(x, graph))
            x = dropout(x, self.dropout, self.training)
        return x

    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self._hidden(x, self._graph(x, edge_index))

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        graph = self._graph(x, edge_index)
        return self.convs[-1](self._hidden(x, graph), graph)


class GCN(_ConvStack):
    r"""Graph convolution network (Kipf & Welling, arXiv:1609.02907).

    .. math::
        \mathbf{X}^{(l+1)} = \sigma\left(\hat{\mathbf{D}}^{-1/2}\hat{\mathbf{A}}\hat{\mathbf{D}}^{-1/2}
        \mathbf{X}^{(l)}\mathbf{\Theta}^{(l)}\right), \quad \hat{\mathbf{A}} = \mathbf{A} + \mathbf{I}

    Args:
        in_channels (int): input features. hidden_channels (int): hidden width. out_channels (int): classes.
        num_layers (int, optional): GCN layers. (default: ``2``)
        dropout (float, optional): dropout on the input and between layers. (default: ``0.5``)

    Shapes:
        - **input:** x :math:`(N, F_{in})`, edge_index :math:`(2, E)`
        - **output:** logits :math:`(N, C)`
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
    ):
        super().__init__(
            in_channels,
            hidden_channels,
            out_channels,
            num_layers,
            dropout,
            lambda i, o, last: _GCNLayer(i, o, normalize=False),
            adjacency="gcn",
        )


class _GCNLayer(GCNConv):
    """``GCNConv(normalize=False)``: ``lin``, then propagation, then ``bias``. Given an
    :class:`_AdjacencyOperator` (as :class:`GCN` passes) the propagation is its cached-transpose sparse
    matmul; given ``edge_index`` or a sparse matrix, PyG's."""

    def forward(self, x, edge_index, edge_weight=None):  # type: ignore[override]
        if isinstance(edge_index, _AdjacencyOperator):
            out = edge_index(self.lin(x))
            return out if self.bias is None else out + self.bias
        return super().forward(x, edge_index, edge_weight)


def _sage_layer(conv: SAGEConv, x: Tensor, edge_index: Tensor) -> Tensor:
    """``conv(x, edge_index)``, also for sparse ``x``: the mean commutes with the linear map, so project
    first (sparse matmul) and aggregate the projected rows."""
    if x.layout == torch.strided:
        return conv(x, edge_index)
    h = F.linear(x, conv.lin_l.weight)
    out = conv.propagate(edge_index, x=(h, h), size=None) + conv.lin_l.bias
    if conv.root_weight:
        out = out + conv.lin_r(x)
    return F.normalize(out, p=2.0, dim=-1) if conv.normalize else out


class _SAGELayer(SAGEConv):
    def forward(self, x, edge_index, size=None):  # type: ignore[override]
        if isinstance(x, Tensor) and x.layout != torch.strided:
            return _sage_layer(self, x, edge_index)
        return super().forward(x, edge_index, size)


class GraphSAGE(_ConvStack):
    r"""GraphSAGE with mean aggregation (Hamilton et al., arXiv:1706.02216).

    .. math::
        \mathbf{x}_i' = \mathbf{W}_1 \mathbf{x}_i
        + \mathbf{W}_2 \,\mathrm{mean}_{j \in \mathcal{N}(i)} \mathbf{x}_j

    Args: as :class:`GCN`. Shapes: as :class:`GCN`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
    ):
        super().__init__(
            in_channels,
            hidden_channels,
            out_channels,
            num_layers,
            dropout,
            lambda i, o, last: _SAGELayer(i, o),
        )


class GAT(_ConvStack):
    r"""Graph attention network (Velickovic et al., arXiv:1710.10903).

    .. math::
        \mathbf{x}_i' = \Big\Vert_{h=1}^{H} \sum_{j \in \mathcal{N}(i) \cup \{i\}}
        \alpha^{h}_{ij} \mathbf{\Theta}^{h} \mathbf{x}_j, \quad
        \alpha^h_{ij} = \mathrm{softmax}_j\left(\mathrm{LeakyReLU}\left(\mathbf{a}^{h\top}
        [\mathbf{\Theta}^h \mathbf{x}_i \Vert \mathbf{\Theta}^h \mathbf{x}_j]\right)\right)

    Hidden layers concatenate ``heads`` heads of ``hidden_channels // heads`` channels; the output layer
    averages ``heads`` heads (GAT's own output-layer choice is 1 head on Cora; both are options).

    Args:
        heads (int, optional): attention heads. (default: ``8``)
        output_heads (int, optional): heads of the last layer (averaged). (default: ``1``)
        others as :class:`GCN` (default dropout ``0.5`` also on the attention coefficients).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        heads: int = 8,
        output_heads: int = 1,
    ):
        if hidden_channels % heads:
            raise ValueError(f"GAT: hidden_channels ({hidden_channels}) must be divisible by heads ({heads})")

        def make(i: int, o: int, last: bool):
            if last:
                return GATConv(i, o, heads=output_heads, concat=False, dropout=dropout)
            return GATConv(i, o // heads, heads=heads, dropout=dropout)

        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout, make)
        self.heads = heads


class MLP(_ConvStack):
    r"""Multi-layer perceptron on node features; ``edge_index`` is accepted and ignored.

    .. math:: \mathbf{X}^{(l+1)} = \sigma\left(\mathbf{X}^{(l)} \mathbf{W}^{(l)} + \mathbf{b}^{(l)}\right)
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
    ):
        super().__init__(
            in_channels,
            hidden_channels,
            out_channels,
            num_layers,
            dropout,
            lambda i, o, last: _IgnoreGraph(nn.Linear(i, o)),
        )


class _IgnoreGraph(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.lin = lin

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        return self.lin(x)


class DirGNN(_ConvStack):
    r"""DirGNN (Rossi et al., arXiv:2305.10498) with SAGE aggregation in both edge directions.

    .. math::
        \mathbf{x}_i' = \alpha\,\mathrm{SAGE}_{\rightarrow}(\mathbf{x})_i + (1-\alpha)\,
        \mathrm{SAGE}_{\leftarrow}(\mathbf{x})_i + \mathbf{W}_{root}\mathbf{x}_i

    On the shipped (undirected) graphs both directions see the same neighbours, so it acts as a SAGE
    variant with a separate root weight; it is meant for directed user graphs and as a heterophily teacher.

    Args:
        alpha (float, optional): weight of the outgoing direction. (default: ``0.5``)
        others as :class:`GCN`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        alpha: float = 0.5,
    ):
        super().__init__(
            in_channels,
            hidden_channels,
            out_channels,
            num_layers,
            dropout,
            lambda i, o, last: DirGNNConv(SAGEConv(i, o, root_weight=False), alpha=alpha, root_weight=True),
        )

    def _hidden(self, x: Tensor, graph: Tensor) -> Tensor:
        return super()._hidden(_dense(x), graph)


class APPNP(NodeClassifier):
    r"""Predict then propagate (Gasteiger et al., arXiv:1810.05997).

    .. math::
        \mathbf{H} = f_\theta(\mathbf{X}),\quad \mathbf{Z}^{(0)} = \mathbf{H},\quad
        \mathbf{Z}^{(k+1)} = (1-\alpha)\hat{\mathbf{D}}^{-1/2}\hat{\mathbf{A}}\hat{\mathbf{D}}^{-1/2}
        \mathbf{Z}^{(k)} + \alpha\mathbf{H}

    :math:`f_\theta` is an MLP with ``num_layers`` linear layers.

    Args:
        K (int, optional): propagation steps. (default: ``10``)
        alpha (float, optional): teleport probability. (default: ``0.1``)
        others as :class:`GCN`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        K: int = 10,
        alpha: float = 0.1,
    ):
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        self.mlp = MLP(in_channels, hidden_channels, out_channels, num_layers, dropout)
        self.propagate = APPNPPropagation(K=K, alpha=alpha, normalize=False)
        self._adj = _AdjacencyCache()
        self._finish_init()

    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.mlp.embed(x, edge_index)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        # PyG's APPNP step, (1 - alpha) * A z + alpha * h, with the cached-transpose sparse matmul
        h = self.mlp(x, edge_index)
        z, alpha = h, self.propagate.alpha
        for _ in range(self.propagate.K):
            z = self._adj.matmul(edge_index, "gcn", z) * (1 - alpha) + alpha * h
        return z


class GPRGNN(NodeClassifier):
    r"""Generalised PageRank GNN (Chien et al., arXiv:2006.07988).

    .. math::
        \mathbf{H} = f_\theta(\mathbf{X}),\quad \mathbf{Z} = \sum_{k=0}^{K} \gamma_k
        \left(\hat{\mathbf{D}}^{-1/2}\hat{\mathbf{A}}\hat{\mathbf{D}}^{-1/2}\right)^k \mathbf{H}

    The weights :math:`\gamma_k` are learned, initialised to personalised PageRank
    :math:`\gamma_k = \alpha(1-\alpha)^k`, :math:`\gamma_K = (1-\alpha)^K`; they may turn negative, which is
    what lets GPR-GNN fit heterophilous graphs.

    Args:
        K (int, optional): propagation steps. (default: ``10``)
        alpha (float, optional): PPR initialisation. (default: ``0.1``)
        others as :class:`GCN`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        K: int = 10,
        alpha: float = 0.1,
    ):
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        self.K, self.alpha = K, alpha
        self.mlp = MLP(in_channels, hidden_channels, out_channels, num_layers, dropout)
        self.gamma = nn.Parameter(torch.empty(K + 1))
        self._adj = _AdjacencyCache()
        self._finish_init()

    def reset_parameters(self) -> None:
        self.mlp.reset_parameters()
        with torch.no_grad():
            k = torch.arange(self.K + 1, dtype=torch.float32)
            gamma = self.alpha * (1 - self.alpha) ** k
            gamma[-1] = (1 - self.alpha) ** self.K
            self.gamma.copy_(gamma)

    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.mlp.embed(x, edge_index)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.mlp(x, edge_index)
        out = self.gamma[0] * h
        for k in range(1, self.K + 1):
            h = self._adj.matmul(edge_index, "gcn", h)
            out = out + self.gamma[k] * h
        return out


class GCNII(NodeClassifier):
    r"""GCN with initial residual and identity mapping (Chen et al., arXiv:2007.02133).

    .. math::
        \mathbf{X}^{(l+1)} = \sigma\left(\left[(1-\alpha)\hat{\mathbf{P}}\mathbf{X}^{(l)} + \alpha
        \mathbf{X}^{(0)}\right]\left[(1-\beta_l)\mathbf{I} + \beta_l\mathbf{\Theta}^{(l)}\right]\right),
        \quad \beta_l = \log(\theta / l + 1)

    A linear layer maps the input to ``hidden_channels`` (giving :math:`\mathbf{X}^{(0)}`) and another maps
    the last layer to the classes.

    Args:
        num_layers (int, optional): GCNII layers. (default: ``8``)
        alpha (float, optional): initial-residual weight. (default: ``0.1``)
        theta (float, optional): identity-mapping strength. (default: ``0.5``)
        others as :class:`GCN`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 8,
        dropout: float = 0.5,
        alpha: float = 0.1,
        theta: float = 0.5,
    ):
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        self.lin_in = nn.Linear(in_channels, hidden_channels)
        self.convs = nn.ModuleList(
            GCN2Conv(hidden_channels, alpha=alpha, theta=theta, layer=i + 1, normalize=False)
            for i in range(num_layers)
        )
        self._adj = _AdjacencyCache()
        self.lin_out = nn.Linear(hidden_channels, out_channels)
        self._finish_init()

    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = input_dropout(x, self.dropout, self.training)
        adj = self._adj.get(edge_index, x.size(0), "gcn")
        x = x0 = F.relu(self.lin_in(x))
        for conv in self.convs:
            x = dropout(x, self.dropout, self.training)
            x = F.relu(conv(x, x0, adj))
        return dropout(x, self.dropout, self.training)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.lin_out(self.embed(x, edge_index))


class H2GCN(NodeClassifier):
    r"""H2GCN (Zhu et al., "Beyond Homophily in Graph Neural Networks", arXiv:2006.11468).

    Ego embedding, then ``num_layers`` rounds that aggregate the 1-hop and the *exact* 2-hop neighbourhoods
    separately (no self loops), concatenating them; the classifier sees the concatenation of every round:

    .. math::
        \mathbf{r}^{(0)} = \mathrm{ReLU}(\mathbf{X}\mathbf{W}_e),\quad
        \mathbf{r}^{(k)} = \left[\bar{\mathbf{A}}_1 \mathbf{r}^{(k-1)} \,\Vert\,
        \bar{\mathbf{A}}_2 \mathbf{r}^{(k-1)}\right],\quad
        \mathbf{z} = \left[\mathbf{r}^{(0)} \Vert \cdots \Vert \mathbf{r}^{(K)}\right]\mathbf{W}_c

    with :math:`\bar{\mathbf{A}}_h = \mathbf{D}_h^{-1/2}\mathbf{A}_h\mathbf{D}_h^{-1/2}` the symmetrically
    normalised adjacency of the nodes exactly :math:`h` hops away. The classifier input has
    :math:`(2^{K+1}-1)` times ``hidden_channels`` features.

    The exact two-hop adjacency has up to :math:`\sum_i d_i^2` non-zeros (every length-2 walk), which on a
    large heavy-tailed graph outgrows memory (tens of millions of entries at 169k nodes). ``two_hop="walk"``
    replaces it by the normalised matrix of non-backtracking length-2 walks, applied as two sparse products
    with the one-hop adjacency and never formed:

    .. math::
        \mathbf{W} = \mathbf{A}\mathbf{A} - \mathrm{diag}(\mathbf{A}\mathbf{A}),\qquad
        \bar{\mathbf{A}}_2 \mathbf{h} \approx \mathbf{S}\big(\mathbf{A}(\mathbf{A}\,\mathbf{S}\mathbf{h})
        - \mathrm{diag}(\mathbf{A}\mathbf{A})\,\mathbf{S}\mathbf{h}\big),\qquad
        \mathbf{S} = \mathrm{diag}(\mathbf{W}\mathbf{1})^{-1/2}

    (:math:`\mathbf{A}` binary without self loops; :math:`\mathbf{W}` weights a two-hop neighbour by its
    number of paths and keeps one-hop neighbours that close a triangle). It costs :math:`O(|E|)` memory
    and time per product instead of :math:`O(\sum_i d_i^2)`. ``two_hop="auto"`` (the default) uses the exact
    matrix when its size bound :math:`\sum_i d_i^2 - \sum_i d_i` is at most ``two_hop_budget`` non-zeros
    (the shipped graphs need at most about :math:`10^5`; a 30k-node citation-like graph about
    :math:`10^7`) and the walk form beyond it.

    Args:
        num_layers (int, optional): aggregation rounds :math:`K`. (default: ``2``)
        two_hop (str, optional): ``"auto"``, ``"exact"`` or ``"walk"``. (default: ``"auto"``)
        two_hop_budget (int, optional): the ``"auto"`` threshold on the estimated two-hop non-zeros.
            (default: ``2_000_000``, about 24 MB as CSR)
        others as :class:`GCN`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        two_hop: str = "auto",
        two_hop_budget: int = 2_000_000,
    ):
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        if two_hop not in TWO_HOP_FORMS:
            raise ValueError(f"H2GCN: unknown two_hop {two_hop!r}; valid: {', '.join(TWO_HOP_FORMS)}")
        if two_hop_budget < 0:
            raise ValueError(f"H2GCN: two_hop_budget must be >= 0, got {two_hop_budget}")
        self.two_hop, self.two_hop_budget = two_hop, two_hop_budget
        self.lin_ego = nn.Linear(in_channels, hidden_channels)
        self.lin_out = nn.Linear(hidden_channels * (2 ** (num_layers + 1) - 1), out_channels)
        self._adj = _AdjacencyCache()
        self._finish_init()

    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = input_dropout(x, self.dropout, self.training)
        r = F.relu(self.lin_ego(x))
        rounds = [r]
        walk = self.two_hop_form(edge_index, x.size(0)) == "walk"
        for _ in range(self.num_layers):
            hop1 = self._adj.matmul(edge_index, "hop1", r)
            hop2 = self._adj.walk2(edge_index, r) if walk else self._adj.matmul(edge_index, "hop2", r)
            r = torch.cat([hop1, hop2], dim=1)
            rounds.append(r)
        return dropout(torch.cat(rounds, dim=1), self.dropout, self.training)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.lin_out(self.embed(x, edge_index))

    def two_hop_form(self, edge_index: Tensor, num_nodes: int) -> str:
        """``"exact"`` or ``"walk"``: the two-hop form used on this graph (see the class docstring)."""
        if self.two_hop != "auto":
            return self.two_hop
        estimate = self._adj.two_hop_estimate(edge_index, num_nodes)
        return "exact" if estimate <= self.two_hop_budget else "walk"


TWO_HOP_FORMS = ("auto", "exact", "walk")


class _CachedSpMM(torch.autograd.Function):
    """``adj @ h`` whose backward multiplies by a precomputed ``adj_t`` (``adj`` itself when symmetric)
    instead of transposing the CSR matrix, a sort of all its non-zeros, on every call."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_t: Tensor, h: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, h)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return None, None, torch.sparse.mm(ctx.adj_t, grad)


def graph_fingerprint(edge_index: Tensor) -> str:
    """BLAKE2b digest of an ``edge_index``'s dtype, shape and values: two equal edge lists have the same
    fingerprint wherever they live in memory, and different ones (almost surely) different fingerprints."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{edge_index.dtype}{tuple(edge_index.shape)}".encode())
    h.update(edge_index.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _AdjacencyStore:
    """Process-wide store of the normalised adjacency matrices of the last ``max_graphs`` graphs, keyed by
    content: ``(graph_fingerprint(edge_index), num_nodes, device)``. Every model (and every retraining of
    one) on the same graph shares one copy of each matrix; the least recently used graph is dropped."""

    def __init__(self, max_graphs: int = 4) -> None:
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, dict[str, Any]] = OrderedDict()

    def entry(self, key: tuple) -> dict[str, Any]:
        if key in self._graphs:
            self._graphs.move_to_end(key)
        else:
            self._graphs[key] = {}
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        return self._graphs[key]

    def clear(self) -> None:
        self._graphs.clear()


ADJACENCY_STORE = _AdjacencyStore()


class _AdjacencyCache:
    """One model's view of :data:`ADJACENCY_STORE`: normalised sparse adjacency matrices (and their
    transposes) of the graph it is called on, keyed by the graph's content. The fingerprint of an
    ``edge_index`` is computed once per tensor object and version (the tensor is held, so its memory
    cannot be reused by another graph while it is remembered); an equal copy anywhere, on the same device,
    finds the same matrices."""

    def __init__(self) -> None:
        self._last: tuple[Tensor, int, str] | None = None

    def key(self, edge_index: Tensor, num_nodes: int) -> tuple:
        """``(fingerprint, num_nodes, device)`` of the graph."""
        last = self._last
        if last is not None and last[0] is edge_index and last[1] == edge_index._version:
            fingerprint = last[2]
        else:
            fingerprint = graph_fingerprint(edge_index)
            self._last = (edge_index, edge_index._version, fingerprint)
        return (fingerprint, int(num_nodes), str(edge_index.device))

    def _pair(self, edge_index: Tensor, num_nodes: int, kind: str) -> tuple[Tensor, Tensor]:
        mats = ADJACENCY_STORE.entry(self.key(edge_index, num_nodes))
        if kind not in mats:
            adj = _build_adjacency(edge_index, num_nodes, kind)
            mats[kind] = (adj, _transpose_csr(adj))
        return mats[kind]

    def get(self, edge_index: Tensor, num_nodes: int, kind: str) -> Tensor:
        """The ``kind`` adjacency (``"gcn"``, ``"hop1"``, ``"hop2"``, ``"adj"``) as sparse CSR ``[N, N]``."""
        return self._pair(edge_index, num_nodes, kind)[0]

    def matmul(self, edge_index: Tensor, kind: str, h: Tensor) -> Tensor:
        """``adj @ h`` with the ``kind`` adjacency, differentiable in ``h`` (cached transpose)."""
        adj, adj_t = self._pair(edge_index, h.size(0), kind)
        return _CachedSpMM.apply(adj, adj_t, h)

    def two_hop_estimate(self, edge_index: Tensor, num_nodes: int) -> int:
        r""":math:`\sum_i d_i^2 - \sum_i d_i` of the binary graph without self loops: the number of
        length-2 walks between distinct endpoints, a bound on the exact two-hop adjacency's non-zeros."""
        mats = ADJACENCY_STORE.entry(self.key(edge_index, num_nodes))
        if "two_hop_estimate" not in mats:
            adj = self.get(edge_index, num_nodes, "adj")
            deg = adj.crow_indices().diff().double()
            mats["two_hop_estimate"] = int((deg * deg).sum() - deg.sum())
        return mats["two_hop_estimate"]

    def walk2(self, edge_index: Tensor, h: Tensor) -> Tensor:
        r"""Normalised non-backtracking two-walk product :math:`\mathbf{S}(\mathbf{A}(\mathbf{A}\mathbf{S}h)
        - \mathrm{diag}(\mathbf{A}\mathbf{A})\mathbf{S}h)` (see :class:`H2GCN`), differentiable in ``h``;
        never forms :math:`\mathbf{A}^2`."""
        n = h.size(0)
        mats = ADJACENCY_STORE.entry(self.key(edge_index, n))
        if "walk2_scale" not in mats:
            adj = self.get(edge_index, n, "adj")
            back = _backtrack_counts(adj)  # diag(A A)
            ones = torch.ones(n, 1, dtype=adj.dtype, device=adj.device)
            rows = torch.sparse.mm(adj, torch.sparse.mm(adj, ones)).view(-1) - back
            mats["walk2_scale"] = (rows.clamp(min=1).pow(-0.5).view(-1, 1), back.view(-1, 1))
        scale, back = mats["walk2_scale"]
        sh = h * scale
        return (self.matmul(edge_index, "adj", self.matmul(edge_index, "adj", sh)) - back * sh) * scale


def _backtrack_counts(adj: Tensor) -> Tensor:
    r""":math:`\mathrm{diag}(\mathbf{A}\mathbf{A})_i = \sum_j A_{ij}A_{ji}` of a binary CSR matrix: the
    number of reciprocated edges of node :math:`i` (its degree on an undirected graph)."""
    n = adj.size(0)
    rows = torch.repeat_interleave(torch.arange(n, device=adj.device), adj.crow_indices().diff())
    cols = adj.col_indices()
    forward, backward = rows * n + cols, cols * n + rows
    mutual = torch.isin(backward, forward).to(adj.dtype)
    return torch.zeros(n, dtype=adj.dtype, device=adj.device).index_add_(0, rows, mutual)


class _AdjacencyOperator:
    """``h -> adj @ h`` for one cached adjacency kind of one graph (what :class:`GCN` passes its layers)."""

    def __init__(self, cache: _AdjacencyCache, edge_index: Tensor, kind: str) -> None:
        self.cache, self.edge_index, self.kind = cache, edge_index, kind

    def __call__(self, h: Tensor) -> Tensor:
        return self.cache.matmul(self.edge_index, self.kind, h)


def _transpose_csr(adj: Tensor) -> Tensor:
    """The transpose of a CSR matrix as CSR; ``adj`` itself when it is symmetric."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        t = adj.to_sparse_coo().t().coalesce().to_sparse_csr()
    same = (
        torch.equal(t.crow_indices(), adj.crow_indices())
        and torch.equal(t.col_indices(), adj.col_indices())
        and torch.equal(t.values(), adj.values())
    )
    return adj if same else t


def _sym_norm(edge_index: Tensor, num_nodes: int) -> Tensor:
    if edge_index.numel() == 0:
        return torch.sparse_coo_tensor(edge_index, torch.zeros(0), (num_nodes, num_nodes)).coalesce()
    deg = torch.zeros(num_nodes).scatter_add_(0, edge_index[0], torch.ones(edge_index.size(1)))
    inv = deg.clamp(min=1).pow(-0.5)
    values = inv[edge_index[0]] * inv[edge_index[1]]
    return torch.sparse_coo_tensor(edge_index, values, (num_nodes, num_nodes)).coalesce()


def _build_adjacency(edge_index: Tensor, num_nodes: int, kind: str) -> Tensor:
    with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return _build_adjacency_impl(edge_index, num_nodes, kind)


def _build_adjacency_impl(edge_index: Tensor, num_nodes: int, kind: str) -> Tensor:
    device = edge_index.device
    return _adjacency_cpu(edge_index.detach().cpu(), num_nodes, kind).to(device)


def _adjacency_cpu(edge_index: Tensor, num_nodes: int, kind: str) -> Tensor:
    if kind == "gcn":
        ei, w = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
        return torch.sparse_coo_tensor(ei, w, (num_nodes, num_nodes)).coalesce().to_sparse_csr()
    ei, _ = remove_self_loops(coalesce(edge_index, num_nodes=num_nodes))
    if kind == "adj":
        ones = torch.ones(ei.size(1))
        return torch.sparse_coo_tensor(ei, ones, (num_nodes, num_nodes)).coalesce().to_sparse_csr()
    if kind == "hop1":
        return _sym_norm(ei, num_nodes).to_sparse_csr()
    if kind == "hop2":
        a = torch.sparse_coo_tensor(ei, torch.ones(ei.size(1)), (num_nodes, num_nodes)).coalesce()
        two = torch.sparse.mm(a, a).coalesce().indices()
        keep = (two[0] != two[1]) & ~torch.isin(two[0] * num_nodes + two[1], ei[0] * num_nodes + ei[1])
        return _sym_norm(two[:, keep], num_nodes).to_sparse_csr()
    raise ValueError(f"unknown adjacency kind {kind!r}")


MODELS: dict[str, type[NodeClassifier]] = {
    "gcn": GCN,
    "gat": GAT,
    "sage": GraphSAGE,
    "appnp": APPNP,
    "gcnii": GCNII,
    "h2gcn": H2GCN,
    "gprgnn": GPRGNN,
    "dirgnn": DirGNN,
    "mlp": MLP,
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(MODELS)


def build_model(
    name: str, in_channels: int, hidden_channels: int, out_channels: int, **kwargs
) -> NodeClassifier:
    """Build a node classifier by name (case-insensitive; ``"graphsage"`` is an alias of ``"sage"``).

    Args:
        name (str): one of :func:`available_models`.
        in_channels (int): input feature size. hidden_channels (int): hidden width.
        out_channels (int): number of classes.
        **kwargs: model options (``num_layers``, ``dropout``, ``heads``, ``K``, ``alpha``, ...).

    Raises:
        ValueError: unknown name (the message lists the valid ones) or a bad option for that model.
    """
    key = name.lower().replace("-", "").replace("_", "")
    key = {"graphsage": "sage", "gcn2": "gcnii"}.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(available_models())}")
    try:
        return MODELS[key](in_channels, hidden_channels, out_channels, **kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options for model {name!r}: {exc}") from exc


# ------------------------------------------------------------------- teachers that fail differently
class SGC(NodeClassifier):
    r"""Simplified graph convolution (Wu et al., "Simplifying Graph Convolutional Networks", ICML 2019,
    arXiv:1902.07153): a fixed low-pass polynomial filter followed by one linear map,

    .. math::
        \mathbf{Z} = \big(\hat{\mathbf{D}}^{-1/2}\hat{\mathbf{A}}\hat{\mathbf{D}}^{-1/2}\big)^{K}
        \mathbf{X}\mathbf{W} + \mathbf{b}

    (computed as :math:`\mathbf{X}\mathbf{W}` first, then :math:`K` sparse propagations: the same linear
    function, and the only matmul with the raw features is sparse when they are). There is no hidden layer:
    ``num_layers`` is the filter order :math:`K`, ``hidden_channels`` is accepted for a uniform builder and
    not used.

    Args:
        in_channels (int): feature size. hidden_channels (int): unused. out_channels (int): classes.
        num_layers (int, optional): the filter order :math:`K`. (default: ``2``)
        dropout (float, optional): input dropout. (default: ``0.5``)

    Shapes: x :math:`(N, F)` dense or sparse CSR, edge_index :math:`(2, E)` → :math:`(N, C)`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
    ):
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        self.lin = MLP(in_channels, hidden_channels, out_channels, num_layers=1, dropout=dropout)
        self._adj = _AdjacencyCache()
        self._finish_init()

    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.forward(x, edge_index)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.lin(x, edge_index)  # the one-layer MLP applies the input dropout
        for _ in range(self.num_layers):
            h = self._adj.matmul(edge_index, "gcn", h)
        return h


class LabelPropagation(NodeClassifier):
    r"""Label propagation (Zhou et al., "Learning with Local and Global Consistency", NeurIPS 2003): the
    labelled nodes' one-hot labels diffused over the graph, with no features and no parameters,

    .. math::
        \mathbf{Y}^{(0)} = \mathbf{Y}_L,\qquad
        \mathbf{Y}^{(k+1)} = \alpha\,\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}\mathbf{Y}^{(k)}
        + (1-\alpha)\,\mathbf{Y}_L

    (``torch_geometric.nn.models.LabelPropagation``, values clamped to :math:`[0, 1]` after each step).
    Its errors come from the graph alone, unlike a feature model's. It has nothing to train: call
    :meth:`fit_labels` with the labels, then ``forward`` returns :math:`\log` of the row-normalised
    :math:`\mathbf{Y}^{(K)}` (a node no label reaches gets the uniform distribution). ``in_channels``,
    ``hidden_channels``, ``num_layers`` and ``dropout`` are accepted for a uniform builder and not used.

    Args:
        K (int, optional): propagation steps. (default: ``50``)
        alpha (float, optional): :math:`\alpha`. (default: ``0.9``)

    Shapes: x :math:`(N, F)` (ignored), edge_index :math:`(2, E)` → :math:`(N, C)` log-probabilities.
    """

    trainable = False

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        K: int = 50,
        alpha: float = 0.9,
    ):
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        if K < 1 or not 0.0 < alpha < 1.0:
            raise ValueError(f"LabelPropagation: need K >= 1 and 0 < alpha < 1, got K={K}, alpha={alpha}")
        self.K, self.alpha = K, alpha
        self._probs: Tensor | None = None
        self._finish_init()

    def reset_parameters(self) -> None:
        self._probs = None

    def fit_labels(self, x: Tensor, edge_index: Tensor, targets: Tensor, mask: Tensor) -> LabelPropagation:
        """Propagate ``targets[mask]`` (class ids; ``-1`` nodes are skipped) over the graph; returns self.

        Shapes: targets :math:`(N)`, mask :math:`(N)` bool."""
        from torch_geometric.nn.models import LabelPropagation as PyGLabelPropagation

        mask = mask & (targets >= 0)
        if not bool(mask.any()):
            raise ValueError("LabelPropagation.fit_labels: no labelled node")
        if int(targets.max()) >= self.out_channels:
            raise ValueError(f"label {int(targets.max())} outside {self.out_channels} classes")
        y = torch.where(mask, targets, torch.zeros_like(targets))
        with torch.no_grad():
            out = PyGLabelPropagation(self.K, self.alpha)(y, edge_index, mask)
        total = out.sum(1, keepdim=True)
        uniform = torch.full_like(out, 1.0 / self.out_channels)
        self._probs = torch.where(total > 0, out / total.clamp(min=1e-12), uniform)
        return self

    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        if self._probs is None:
            raise RuntimeError("LabelPropagation: call fit_labels(x, edge_index, targets, mask) first")
        return self._probs

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.embed(x, edge_index).clamp(min=1e-8).log()

    def __repr__(self) -> str:
        return f"LabelPropagation({self.out_channels}, K={self.K}, alpha={self.alpha})"


class CorrectAndSmooth(NodeClassifier):
    r"""Correct and Smooth (Huang et al., "Combining Label Propagation and Simple Models Out-performs Graph
    Neural Networks", ICLR 2021, arXiv:2010.13993): a feature-only MLP base predictor :math:`\mathbf{Z}`,
    then two label propagations over the graph (``torch_geometric.nn.models.CorrectAndSmooth``):

    .. math::
        \mathbf{E}^{(0)}_L = \mathbf{Y}_L - \mathbf{Z}_L,\ \
        \hat{\mathbf{E}} = \mathrm{LP}_{\alpha_1}(\mathbf{E}^{(0)}),\ \
        \mathbf{Z}' = \mathbf{Z} + \sigma\,\hat{\mathbf{E}} / \lVert\hat{\mathbf{E}}_i\rVert_1
        \ \text{(correct)};
        \qquad
        \mathbf{G}^{(0)} = \mathbf{Z}' \text{ with } \mathbf{G}^{(0)}_L = \mathbf{Y}_L,\ \
        \mathbf{G} = \mathrm{LP}_{\alpha_2}(\mathbf{G}^{(0)}) \ \text{(smooth)}

    with :math:`\sigma` the mean :math:`L_1` error on the labelled nodes (autoscale). The MLP is trained
    as any model (``forward`` gives its logits until labels are attached); :meth:`fit_labels` attaches the
    labels, after which ``forward`` returns :math:`\log` of the row-normalised, clamped :math:`\mathbf{G}`.

    Args:
        num_layers (int, optional): MLP layers. (default: ``2``)
        dropout (float, optional): MLP dropout. (default: ``0.5``)
        K (int, optional): steps of each propagation. (default: ``50``)
        correct_alpha (float, optional): :math:`\alpha_1`. (default: ``0.5``)
        smooth_alpha (float, optional): :math:`\alpha_2`. (default: ``0.8``)

    Shapes: x :math:`(N, F)` dense or sparse CSR, edge_index :math:`(2, E)` → :math:`(N, C)`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        K: int = 50,
        correct_alpha: float = 0.5,
        smooth_alpha: float = 0.8,
    ):
        super().__init__(in_channels, hidden_channels, out_channels, num_layers, dropout)
        if K < 1 or not (0.0 < correct_alpha < 1.0 and 0.0 < smooth_alpha < 1.0):
            raise ValueError(
                f"CorrectAndSmooth: need K >= 1 and alphas in (0, 1), got K={K}, "
                f"correct_alpha={correct_alpha}, smooth_alpha={smooth_alpha}"
            )
        self.K, self.correct_alpha, self.smooth_alpha = K, correct_alpha, smooth_alpha
        self.mlp = MLP(in_channels, hidden_channels, out_channels, num_layers, dropout)
        self._labels: tuple[Tensor, Tensor] | None = None
        self._finish_init()

    def reset_parameters(self) -> None:
        self.mlp.reset_parameters()
        self._labels = None

    def fit_labels(self, x: Tensor, edge_index: Tensor, targets: Tensor, mask: Tensor) -> CorrectAndSmooth:
        """Attach the labels ``targets[mask]`` (``-1`` nodes skipped) that correct and smooth use; returns
        self. Shapes: targets :math:`(N)`, mask :math:`(N)` bool."""
        mask = mask & (targets >= 0)
        if not bool(mask.any()):
            raise ValueError("CorrectAndSmooth.fit_labels: no labelled node")
        self._labels = (targets.clone(), mask.clone())
        return self

    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.mlp.embed(x, edge_index)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        logits = self.mlp(x, edge_index)
        if self._labels is None:
            return logits
        from torch_geometric.nn.models import CorrectAndSmooth as PyGCorrectAndSmooth

        targets, mask = self._labels
        cs = PyGCorrectAndSmooth(self.K, self.correct_alpha, self.K, self.smooth_alpha, autoscale=True)
        with torch.no_grad():
            z = logits.detach().softmax(-1)
            z = cs.correct(z, targets[mask], mask, edge_index)
            z = cs.smooth(z, targets[mask], mask, edge_index).clamp(min=0)
        total = z.sum(1, keepdim=True)
        z = torch.where(total > 0, z / total.clamp(min=1e-12), torch.full_like(z, 1.0 / z.size(1)))
        return z.clamp(min=1e-8).log()


MODELS.update({"sgc": SGC, "cs": CorrectAndSmooth})
# models with no features and nothing to train: built by build_teacher only
LABEL_ONLY_MODELS: dict[str, type[NodeClassifier]] = {"labelprop": LabelPropagation}


def available_teachers() -> list[str]:
    """Names accepted by :func:`build_teacher`: :func:`available_models` and the label-only models."""
    return available_models() + list(LABEL_ONLY_MODELS)


def build_teacher(
    name: str, in_channels: int, hidden_channels: int, out_channels: int, **kwargs
) -> NodeClassifier:
    """:func:`build_model`, plus the label-only models (``"labelprop"``: :class:`LabelPropagation`), which
    have nothing to train and read the labels themselves (:func:`is_trainable`, :func:`needs_labels`).

    Raises:
        ValueError: unknown name (the message lists the valid ones) or a bad option for that model.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key in LABEL_ONLY_MODELS:
        try:
            return LABEL_ONLY_MODELS[key](in_channels, hidden_channels, out_channels, **kwargs)
        except TypeError as exc:
            raise ValueError(f"bad options for model {name!r}: {exc}") from exc
    if key not in MODELS:
        raise ValueError(f"unknown teacher {name!r}; valid: {', '.join(available_teachers())}")
    return build_model(name, in_channels, hidden_channels, out_channels, **kwargs)


def needs_labels(model: nn.Module) -> bool:
    """True for a model that reads the labels themselves at inference (:class:`LabelPropagation`,
    :class:`CorrectAndSmooth`): after training, call ``model.fit_labels(x, edge_index, targets, mask)``."""
    return hasattr(model, "fit_labels")


def is_trainable(model: nn.Module) -> bool:
    """False for a model with nothing to train (:class:`LabelPropagation`): skip the optimiser."""
    return getattr(model, "trainable", True)
