r"""PKD's three selectors: GNS (which nodes the LLM labels), DNS (which neighbours its prompt shows) and
NGS (which teacher each node learns from), after Wei et al., "Preference-driven Knowledge Distillation for
Few-shot Node Classification", NeurIPS 2025 (arXiv:2510.10116).

``k_uncertainty``        teacher disagreement :math:`\delta_K` (released code's pairwise KL, or the paper's
                         generalised Jensen-Shannon form)
``expansion_budget``     how many nodes GNS sends to the annotator (48 % of all nodes, or a count)
``gns_select``           the top-:math:`\delta_K` pool nodes within the budget
``dns_neighbours``       per-teacher k-nearest neighbours in embedding space, unioned and de-duplicated
``ngs_state``            the (documented, lighter) per-node state the teacher-selection policy sees
``PPOTeacherSelector``   NGS: MLP policy and value heads trained with clipped PPO
``majority_vote``        the teachers' per-node majority class
``random_teacher``, ``majority_teacher``, ``confident_teacher``
                         the rule teacher selectors that NGS is compared with (``rule_teacher_choice``
                         picks one by name)
``teacher_oracle``       evaluation only: the oracle selector's accuracy (a teacher that is right, if any
                         is), each teacher's accuracy and their pairwise agreement on the evaluation nodes

The exact typeset forms of the paper's :math:`\delta_K` and PPO losses could not be confirmed; the forms
here are reconstructed from the paper's prose and the released code (``GEEX-Weixing/PKD@c23c798``) and say
so where they do.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UNCERTAINTY_FORMS = ("pairwise", "js")
TEACHER_RULES = ("random", "majority", "confident")


def k_uncertainty(probs: Tensor, form: str = "pairwise", *, eps: float = 1e-8) -> Tensor:
    r"""K-uncertainty :math:`\delta_K`: how much ``B`` teachers disagree on each node.

    ``"pairwise"`` (default; the released ``node_filter.py``): one-directional KL summed over teacher
    pairs :math:`i < j`, on probabilities shifted by :math:`\epsilon` and not renormalised,

    .. math::
        \delta_K(v) = \sum_{i<j} \sum_c \tilde p_i(c) \log\frac{\tilde p_i(c)}{\tilde p_j(c)},
        \qquad \tilde p_b = p_b + \epsilon

    ``"js"`` (the paper's Definition D.1, reconstructed): generalised Jensen-Shannon divergence,

    .. math::
        M(v) = \frac{1}{B}\sum_b p_b(v),\qquad
        \delta_K(v) = \frac{1}{B}\sum_b \mathrm{KL}\big(p_b(v)\,\Vert\, M(v)\big)

    Both forms are non-negative and zero exactly when all teachers output the same distribution (every
    row of the shifted form sums to :math:`1 + C\epsilon`, so each pairwise term is that factor times a
    KL divergence). The pairwise form is not symmetric in the teachers' order.

    Args:
        probs (Tensor): teacher softmax outputs.
        form (str, optional): ``"pairwise"`` or ``"js"``. (default: ``"pairwise"``)
        eps (float, optional): the shift of the pairwise form and the log guard of the JS form.
            (default: ``1e-8``)

    Shapes:
        - **input:** probs :math:`(B, N, C)`, rows on the simplex
        - **output:** :math:`(N)`
    """
    if probs.dim() != 3:
        raise ValueError(f"probs must have shape [B, N, C], got {tuple(probs.shape)}")
    if probs.size(0) < 2:
        raise ValueError(f"K-uncertainty needs at least 2 teachers, got B={probs.size(0)}")
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("probs holds non-finite values")
    p = probs.float()
    if form == "pairwise":
        p = p + eps
        logp = p.log()
        b = p.size(0)
        i, j = torch.triu_indices(b, b, offset=1)
        return (p[i] * (logp[i] - logp[j])).sum(dim=-1).sum(dim=0)
    if form == "js":
        mean = p.mean(dim=0, keepdim=True)
        kl = torch.where(p > 0, p * ((p + eps).log() - (mean + eps).log()), torch.zeros_like(p))
        return kl.sum(dim=-1).mean(dim=0)
    raise ValueError(f"unknown K-uncertainty form {form!r}; valid: {', '.join(UNCERTAINTY_FORMS)}")


def expansion_budget(
    num_nodes: int,
    num_labelled: int,
    pool_size: int,
    *,
    fraction: float | None = 0.48,
    count: int | None = None,
) -> int:
    r"""Number of nodes GNS sends to the annotator.

    With ``fraction`` (the paper: "expand the dataset to 48 % of the total"), the labelled set grows to
    ``fraction`` of all nodes: :math:`W = \lfloor f N \rfloor - Q` (on Cora, :math:`\lfloor 0.48 \cdot
    2708\rfloor - 35 = 1264`). With ``count``, :math:`W` is that absolute number. Either way :math:`W` is
    capped by the pool and never negative.

    Args:
        num_nodes (int): :math:`N`. num_labelled (int): :math:`Q`, nodes with true labels.
        pool_size (int): unlabelled nodes the annotator may label.
        fraction (float, optional): target labelled fraction in ``(0, 1]``. (default: ``0.48``)
        count (int, optional): absolute budget; overrides ``fraction``. (default: ``None``)
    """
    if count is not None:
        if count < 0:
            raise ValueError(f"budget count must be >= 0, got {count}")
        wanted = int(count)
    else:
        if fraction is None or not 0.0 < fraction <= 1.0:
            raise ValueError(f"budget fraction must lie in (0, 1], got {fraction}")
        wanted = int(math.floor(fraction * num_nodes + 1e-9)) - int(num_labelled)
    return max(0, min(wanted, int(pool_size)))


def gns_select(
    probs: Tensor, pool_mask: Tensor, budget: int, *, form: str = "pairwise", eps: float = 1e-8
) -> Tensor:
    r"""GNS: the ``budget`` pool nodes with the largest :math:`\delta_K` (ties by node id), descending.

    Shapes:
        - **input:** probs :math:`(B, N, C)`, pool_mask :math:`(N)` bool
        - **output:** :math:`(W)` node ids, most uncertain first
    """
    n = probs.size(1)
    if pool_mask.shape != (n,):
        raise ValueError(f"pool_mask has shape {tuple(pool_mask.shape)}, expected ({n},)")
    pool = pool_mask.nonzero().view(-1)
    if budget < 0 or budget > pool.numel():
        raise ValueError(f"budget {budget} outside [0, pool size {pool.numel()}]")
    score = k_uncertainty(probs, form, eps=eps)[pool]
    order = torch.sort(score, descending=True, stable=True).indices
    return pool[order[:budget]]


def dns_neighbours(
    embeddings: list[Tensor] | tuple[Tensor, ...],
    nodes: Tensor,
    *,
    k: int = 4,
    candidates: Tensor | None = None,
    metric: str = "cosine",
    max_block: int = 2**24,
    search: str = "auto",
    exact_pairs: int = 2**30,
    nprobe: int = 8,
) -> dict[int, list[int]]:
    r"""DNS: for each node, the union over teachers of its ``k`` nearest neighbours in that teacher's
    embedding space, de-duplicated (first occurrence kept, teachers in order), never the node itself.

    The paper takes the union, not the intersection (which "may overfit to the adjacency structure");
    up to :math:`B \cdot k` neighbours per node. The distance metric is not stated in the paper
    (cosine here by default, Euclidean as an option: a reconstruction).

    The search is exact and runs in blocks of query rows: a block's distances to all :math:`N` nodes
    (at most ``max_block`` entries) are formed, masked and reduced to their top :math:`k` before the next
    block, so memory is :math:`O(\text{max\_block} + M k)` rather than :math:`O(M N)`. When
    :math:`M N \le` ``max_block`` (every shipped graph at the default) there is a single block, the dense
    computation itself.

    Exact search costs :math:`O(M N D)` time, quadratic in the graph size since the budget :math:`M` grows
    with :math:`N`. ``search="ivf"`` is the inverted-file approximation (Jégou et al., "Product
    quantization for nearest neighbor search", TPAMI 2011, without the quantisation): seeded k-means
    (10 Lloyd rounds on a sample of :math:`64L` nodes) splits the allowed nodes into
    :math:`L = \lceil\sqrt{N}\rceil` cells, and each query is compared exactly with the members of its
    ``nprobe`` nearest cells only, :math:`O(M \cdot \text{nprobe} \cdot N/L \cdot D)` time.
    ``search="auto"`` (the default) is exact when :math:`M N \le` ``exact_pairs`` (up to about 30k nodes
    at the default budget) and IVF beyond it.

    Args:
        embeddings (list of Tensor): one ``[N, D_b]`` embedding per teacher.
        nodes (Tensor): the ``[M]`` query node ids.
        k (int, optional): neighbours per teacher. (default: ``4``)
        candidates (Tensor, optional): bool ``[N]`` nodes allowed as neighbours. (default: all)
        metric (str, optional): ``"cosine"`` or ``"euclidean"``. (default: ``"cosine"``)
        max_block (int, optional): most distance entries held at once (rows per block: ``max_block // N``,
            at least 1). (default: ``2**24``, 64 MB of float32)
        search (str, optional): ``"auto"``, ``"exact"`` or ``"ivf"``. (default: ``"auto"``)
        exact_pairs (int, optional): the ``"auto"`` threshold on :math:`M N`. (default: ``2**30``)
        nprobe (int, optional): cells searched per query by IVF. (default: ``8``)

    Returns:
        dict mapping each query node id to its neighbour ids (a plain mapping, which is what the text
        annotators' ``neighbours=`` option takes).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_block < 1:
        raise ValueError(f"max_block must be >= 1, got {max_block}")
    if not embeddings:
        raise ValueError("dns_neighbours needs at least one teacher embedding")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric {metric!r}; valid: cosine, euclidean")
    if search not in ("auto", "exact", "ivf"):
        raise ValueError(f"unknown search {search!r}; valid: auto, exact, ivf")
    if nprobe < 1:
        raise ValueError(f"nprobe must be >= 1, got {nprobe}")
    n = embeddings[0].size(0)
    device = embeddings[0].device
    nodes = nodes.view(-1).long().to(device)
    allowed = (
        torch.ones(n, dtype=torch.bool, device=device)
        if candidates is None
        else candidates.bool().to(device).clone()
    )
    kk = min(k, max(int(allowed.sum()) - 1, 0))
    rows_per_block = max(1, max_block // max(n, 1))
    lists: list[list[int]] = [[] for _ in range(nodes.numel())]
    for emb in embeddings:
        if emb.dim() != 2 or emb.size(0) != n:
            raise ValueError(f"every embedding must be [N={n}, D], got {tuple(emb.shape)}")
        if kk == 0:
            continue
        e = emb.detach().float()
        if metric == "cosine":
            e = F.normalize(e, dim=1)
        if search == "ivf" or (search == "auto" and nodes.numel() * n > exact_pairs):
            for row, ids in enumerate(_ivf_nearest(e, nodes, allowed, kk, metric, nprobe, max_block)):
                lists[row].extend(ids)
            continue
        nearest = (
            torch.cat(
                [
                    _nearest_block(e, nodes[lo : lo + rows_per_block], allowed, kk, metric)
                    for lo in range(0, nodes.numel(), rows_per_block)
                ]
            )
            if nodes.numel()
            else torch.empty(0, kk, dtype=torch.long)
        )
        for row, ids in enumerate(nearest.tolist()):
            lists[row].extend(ids)
    return {int(v): list(dict.fromkeys(ids)) for v, ids in zip(nodes.tolist(), lists, strict=True)}


def _nearest_block(e: Tensor, block: Tensor, allowed: Tensor, k: int, metric: str) -> Tensor:
    """Indices ``[m, k]`` of the ``k`` nearest allowed nodes (self excluded) of the ``m`` nodes of
    ``block`` in the (already normalised, for cosine) embedding ``e``."""
    dist = -(e[block] @ e.T) if metric == "cosine" else torch.cdist(e[block], e)
    dist = dist.masked_fill(~allowed.view(1, -1), float("inf"))
    dist[torch.arange(block.numel(), device=e.device), block] = float("inf")
    return dist.topk(k, dim=1, largest=False).indices.cpu()


def _distances(a: Tensor, b: Tensor, metric: str) -> Tensor:
    """``[len(a), len(b)]`` distances (negative dot products for cosine on unit rows)."""
    return -(a @ b.T) if metric == "cosine" else torch.cdist(a, b)


def _ivf_nearest(
    e: Tensor, nodes: Tensor, allowed: Tensor, k: int, metric: str, nprobe: int, max_block: int
) -> list[list[int]]:
    """Approximate ``k`` nearest allowed nodes of each query by the inverted file of
    :func:`dns_neighbours`: ascending distance, the query itself excluded, fewer than ``k`` only when the
    probed cells hold fewer allowed nodes."""
    device = e.device
    members_all = allowed.nonzero().view(-1)
    cells = max(1, min(math.ceil(math.sqrt(e.size(0))), members_all.numel()))
    generator = torch.Generator().manual_seed(0)
    sample = members_all[torch.randperm(members_all.numel(), generator=generator)[: 64 * cells].to(device)]
    centroids = e[sample[:cells]].clone()

    def nearest_cells(x: Tensor, count: int) -> Tensor:
        step = max(1, max_block // cells)
        return torch.cat(
            [
                _distances(x[i : i + step], centroids, metric).topk(count, dim=1, largest=False).indices
                for i in range(0, x.size(0), step)
            ]
        )

    for _ in range(10):  # Lloyd rounds on the sample
        assign = nearest_cells(e[sample], 1).view(-1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, e[sample])
        counts = torch.bincount(assign, minlength=cells).view(-1, 1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if metric == "cosine":
            centroids = F.normalize(centroids, dim=1)
    cell_of = nearest_cells(e[members_all], 1).view(-1)
    order = torch.argsort(cell_of, stable=True)
    members = members_all[order]
    bounds = torch.searchsorted(cell_of[order], torch.arange(cells + 1, device=device)).tolist()
    probes = nearest_cells(e[nodes], min(nprobe, cells))  # [M, P]
    best_d = torch.full((nodes.numel(), probes.size(1) * k), float("inf"), device=device)
    best_i = torch.full_like(best_d, -1, dtype=torch.long)
    flat = probes.reshape(-1)  # (query, probe rank) pairs grouped by cell: one pass per cell
    by_cell = torch.argsort(flat, stable=True)
    q_bounds = torch.searchsorted(flat[by_cell], torch.arange(cells + 1, device=device)).tolist()
    for c in range(cells):
        pairs = by_cell[q_bounds[c] : q_bounds[c + 1]]
        cand = members[bounds[c] : bounds[c + 1]]
        if pairs.numel() == 0 or cand.numel() == 0:
            continue
        rows, rank = pairs // probes.size(1), pairs % probes.size(1)
        d = _distances(e[nodes[rows]], e[cand], metric)
        d = d.masked_fill(nodes[rows].view(-1, 1) == cand.view(1, -1), float("inf"))
        top = d.topk(min(k, cand.numel()), dim=1, largest=False)
        slots = rank.view(-1, 1) * k + torch.arange(top.indices.size(1), device=device).view(1, -1)
        best_d[rows.view(-1, 1), slots] = top.values
        best_i[rows.view(-1, 1), slots] = cand[top.indices]
    top = best_d.topk(k, dim=1, largest=False)
    ids = best_i.gather(1, top.indices).masked_fill(torch.isinf(top.values), -1).cpu().tolist()
    return [[v for v in row if v >= 0] for row in ids]


NGS_STATE_PARTS = (
    "features",
    "neighbour_features",
    "probs",
    "entropy",
    "agreement",
    "neighbour_probs",
    "degree",
    "confidence",
    "label_agreement",
)
NGS_STATE_DEFAULT = NGS_STATE_PARTS[:6]


def ngs_state(
    features: Tensor,
    edge_index: Tensor,
    teacher_probs: Tensor,
    *,
    max_features: int = 64,
    labels: Tensor | None = None,
    parts: tuple[str, ...] | list[str] = NGS_STATE_DEFAULT,
) -> Tensor:
    r"""The per-node state of the NGS policy: our documented lighter substitute for the paper's LLM hidden
    state of a per-node prompt (the paper freezes the LLM, so its state is a constant per node too). It is
    the concatenation of the blocks named in ``parts``, in the order of :data:`NGS_STATE_PARTS`:

    ======================  ==================================================================================
    ``features``            :math:`\tilde x_i`: the node representation reduced to at most ``max_features``
                            dimensions by PCA (``torch.pca_lowrank``, fixed sketch seed and ``niter``; a
                            sparse matrix stays sparse), standardised
    ``neighbour_features``  :math:`\frac{1}{|\mathcal N(i)|}\sum_{j\in\mathcal N(i)} \tilde x_j`
    ``probs``               every teacher's softmax :math:`p_{b,i}`
    ``entropy``             :math:`H(p_{b,i}) / \log C` per teacher
    ``agreement``           :math:`a_{b,i}`: the fraction of the other teachers sharing teacher :math:`b`'s
                            argmax
    ``neighbour_probs``     :math:`\bar p^{\mathcal N}_{b,i}`: teacher :math:`b`'s softmax averaged over
                            :math:`i`'s neighbours
    ``degree``              :math:`\log(1 + d_i)`
    ``confidence``          :math:`\max_c p_{b,i}(c)` per teacher
    ``label_agreement``     per teacher, the fraction of :math:`i`'s labelled neighbours (``labels >= 0``)
                            whose label is teacher :math:`b`'s argmax, and the fraction of neighbours that
                            are labelled (needs ``labels``: the expanded labels, never test labels)
    ======================  ==================================================================================

    The default (:data:`NGS_STATE_DEFAULT`) is the first six blocks.

    Args:
        features (Tensor): node features, dense or sparse (COO or CSR; never densified).
        edge_index (Tensor): the graph.
        teacher_probs (Tensor): the teachers' softmax.
        max_features (int, optional): PCA dimensions of ``features``. (default: ``64``)
        labels (Tensor, optional): ``[N]`` known labels, ``-1`` = none (``label_agreement``).
        parts (sequence of str, optional): the blocks. (default: :data:`NGS_STATE_DEFAULT`)

    Shapes:
        - **input:** features :math:`(N, F)`, edge_index :math:`(2, E)`, teacher_probs :math:`(B, N, C)`
        - **output:** :math:`(N, D)`; with the default blocks :math:`D = 2F' + B(2C + 2)`
    """
    if teacher_probs.dim() != 3:
        raise ValueError(f"teacher_probs must be [B, N, C], got {tuple(teacher_probs.shape)}")
    unknown = [q for q in parts if q not in NGS_STATE_PARTS]
    if unknown or not parts:
        raise ValueError(f"unknown or no NGS state parts {unknown}; valid: {', '.join(NGS_STATE_PARTS)}")
    if "label_agreement" in parts and labels is None:
        raise ValueError("the label_agreement state part needs labels")
    b, n, c = teacher_probs.shape
    if features.size(0) != n:
        raise ValueError(f"features have {features.size(0)} rows, teacher_probs {n} nodes")
    src, dst = edge_index
    deg_raw = torch.zeros(n).scatter_add_(0, dst, torch.ones(dst.numel()))
    deg = deg_raw.clamp(min=1).view(-1, 1)

    def neighbour_mean(h: Tensor) -> Tensor:
        return torch.zeros_like(h).index_add_(0, dst, h[src]) / deg

    blocks: dict[str, Tensor] = {}
    if "features" in parts or "neighbour_features" in parts:
        x = _reduced_features(features, max_features)
        blocks["features"] = x
        if "neighbour_features" in parts:
            blocks["neighbour_features"] = neighbour_mean(x)
    p = teacher_probs.float()
    top = p.argmax(-1)  # [B, N]
    blocks["probs"] = p.permute(1, 0, 2).reshape(n, b * c)
    blocks["entropy"] = (-(p * p.clamp(min=1e-12).log()).sum(-1)).T / math.log(c)
    blocks["agreement"] = (((top.unsqueeze(0) == top.unsqueeze(1)).float().sum(1) - 1) / max(b - 1, 1)).T
    if "neighbour_probs" in parts:
        neigh_p = torch.stack([neighbour_mean(p[t]) for t in range(b)])  # [B, N, C]
        blocks["neighbour_probs"] = neigh_p.permute(1, 0, 2).reshape(n, b * c)
    blocks["degree"] = torch.log1p(deg_raw).view(-1, 1)
    blocks["confidence"] = p.max(-1).values.T
    if "label_agreement" in parts:
        assert labels is not None
        known = labels >= 0
        onehot = F.one_hot(labels.clamp(min=0), c).float() * known.view(-1, 1)  # [N, C]
        counts = torch.zeros(n, c).index_add_(0, dst, onehot[src])  # labelled neighbours per class
        labelled = counts.sum(1, keepdim=True)
        share = counts.gather(1, top.T) / labelled.clamp(min=1)  # [N, B]
        blocks["label_agreement"] = torch.cat([share, labelled / deg], 1)
    return torch.cat([blocks[q] for q in NGS_STATE_PARTS if q in parts], dim=1)


def _reduced_features(features: Tensor, max_features: int) -> Tensor:
    """Features reduced to ``max_features`` PCA dimensions (sparse input stays sparse: COO for
    ``torch.pca_lowrank``), standardised per column."""
    if features.layout == torch.sparse_csr:
        x = features.to_sparse_coo().float()
    elif features.layout == torch.sparse_coo:
        x = features.coalesce().float()
    else:
        x = features.float()
    if x.size(1) > max_features:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(0)  # pca_lowrank draws a random sketch; fix it so the state is deterministic
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
                u, s, _ = torch.pca_lowrank(x, q=max_features, center=True, niter=4)
        finally:
            torch.random.set_rng_state(gen_state)
        x = u * s
    elif x.layout != torch.strided:  # few columns: dense is small
        x = x.to_dense()
    return (x - x.mean(0)) / x.std(0).clamp(min=1e-6)


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


@dataclass
class PPOStats:
    """Losses of one :meth:`PPOTeacherSelector.update` (means over its inner epochs)."""

    policy_loss: float
    value_loss: float
    entropy: float
    clip_fraction: float


class PPOTeacherSelector(nn.Module):
    r"""NGS: a policy that picks one of ``B`` teachers per node, trained with clipped PPO.

    The policy head gives :math:`\pi(\cdot \mid s_i)` over teachers, the value head :math:`V(s_i)` (a plain
    linear output, so it can be negative, unlike the released ``MLP_V`` which applies a ReLU). For sampled
    actions :math:`a_i`, rewards :math:`R_i` and the old log-probabilities, one update minimises
    (paper Appendix C; the typeset equations were not available, this is reconstructed from its prose)

    .. math::
        \mathcal{L} = -\frac{1}{n}\sum_i \min\big(r_i \hat A_i,\ \mathrm{clip}(r_i, 1-\epsilon, 1+\epsilon)
        \hat A_i\big) + c_1 \frac{1}{n}\sum_i \big(V(s_i) - R_i\big)^2 - c_2 \frac{1}{n}\sum_i
        H\big(\pi(\cdot\mid s_i)\big),

    :math:`r_i = \pi(a_i\mid s_i) / \pi_{old}(a_i\mid s_i)`, :math:`\hat A_i = R_i - V_{old}(s_i)`
    (standardised over the batch), :math:`\epsilon = 0.2`, :math:`c_1 = 0.5`, :math:`c_2 = 0.01`.
    There is no reward model and no reference model (as in the paper). Each node is a one-step episode.

    Args:
        state_dim (int): size of the state :math:`s_i` (see :func:`ngs_state`).
        num_teachers (int): :math:`B`.
        hidden (int, optional): hidden width of both MLP heads. (default: ``128``)
        clip (float, optional): :math:`\epsilon`. (default: ``0.2``)
        value_coef (float, optional): :math:`c_1`. (default: ``0.5``)
        entropy_coef (float, optional): :math:`c_2`. (default: ``0.01``)
        lr (float, optional): Adam learning rate of both heads (the paper's :math:`\rho_A, \rho_V` are not
            given). (default: ``3e-3``)
        ppo_epochs (int, optional): gradient steps per update on one batch of experience. (default: ``4``)

    Shapes:
        - **input:** states :math:`(n, D)`
        - **output:** policy logits :math:`(n, B)`, values :math:`(n)`
    """

    def __init__(
        self,
        state_dim: int,
        num_teachers: int,
        *,
        hidden: int = 128,
        clip: float = 0.2,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        lr: float = 3e-3,
        ppo_epochs: int = 4,
    ):
        super().__init__()
        if num_teachers < 1 or state_dim < 1:
            raise ValueError(f"need state_dim >= 1 and num_teachers >= 1, got {state_dim}, {num_teachers}")
        if not 0 < clip < 1:
            raise ValueError(f"clip must lie in (0, 1), got {clip}")
        self.state_dim, self.num_teachers = state_dim, num_teachers
        self.clip, self.value_coef, self.entropy_coef = clip, value_coef, entropy_coef
        self.lr, self.ppo_epochs = lr, ppo_epochs
        self.policy = _mlp(state_dim, hidden, num_teachers)
        self.value = _mlp(state_dim, hidden, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        with torch.no_grad():  # start from a uniform policy
            self.policy[-1].weight.mul_(0.01)
            self.policy[-1].bias.zero_()
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)

    def forward(self, states: Tensor) -> tuple[Tensor, Tensor]:
        return self.policy(states), self.value(states).view(-1)

    @torch.no_grad()
    def act(
        self, states: Tensor, *, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Actions (sampled in training, argmax at inference), their log-probabilities and the values."""
        logits, values = self(states)
        logp = logits.log_softmax(-1)
        if sample:
            actions = torch.multinomial(logp.exp(), 1, generator=generator).view(-1)
        else:
            actions = logits.argmax(-1)
        return actions, logp.gather(1, actions.view(-1, 1)).view(-1), values

    @torch.no_grad()
    def probabilities(self, states: Tensor) -> Tensor:
        return self.policy(states).softmax(-1)

    def loss_terms(
        self, states: Tensor, actions: Tensor, old_logp: Tensor, advantages: Tensor, returns: Tensor
    ) -> dict[str, Tensor]:
        """The three PPO terms (already weighted): ``policy``, ``value``, ``entropy`` (negated bonus)."""
        logits, values = self(states)
        logp_all = logits.log_softmax(-1)
        logp = logp_all.gather(1, actions.view(-1, 1)).view(-1)
        ratio = (logp - old_logp).exp()
        unclipped = ratio * advantages
        clipped = ratio.clamp(1 - self.clip, 1 + self.clip) * advantages
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        return {
            "policy": -torch.min(unclipped, clipped).mean(),
            "value": self.value_coef * F.mse_loss(values, returns),
            "entropy": -self.entropy_coef * entropy,
            "_clip_fraction": ((ratio - 1).abs() > self.clip).float().mean().detach(),
        }

    def update(
        self, states: Tensor, actions: Tensor, old_logp: Tensor, rewards: Tensor, old_values: Tensor
    ) -> PPOStats:
        """``ppo_epochs`` Adam steps on the clipped objective for one batch of one-step episodes."""
        n = states.size(0)
        for name, t in (
            ("actions", actions),
            ("old_logp", old_logp),
            ("rewards", rewards),
            ("old_values", old_values),
        ):
            if t.shape != (n,):
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected ({n},)")
        advantages = rewards - old_values
        if n > 1:
            advantages = (advantages - advantages.mean()) / advantages.std().clamp(min=1e-8)
        sums = {"policy": 0.0, "value": 0.0, "entropy": 0.0, "_clip_fraction": 0.0}
        for _ in range(self.ppo_epochs):
            terms = self.loss_terms(states, actions, old_logp, advantages, rewards)
            loss = terms["policy"] + terms["value"] + terms["entropy"]
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            for key in sums:
                sums[key] += float(terms[key].detach()) / self.ppo_epochs
        return PPOStats(
            sums["policy"],
            sums["value"] / self.value_coef if self.value_coef else 0.0,
            -sums["entropy"] / self.entropy_coef if self.entropy_coef else 0.0,
            sums["_clip_fraction"],
        )

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(state_dim={self.state_dim}, num_teachers={self.num_teachers}, clip={self.clip})"


# ------------------------------------------------------------------------------ rule teacher selectors
def _check_probs(probs: Tensor) -> tuple[int, int, int]:
    if probs.dim() != 3:
        raise ValueError(f"probs must have shape [B, N, C], got {tuple(probs.shape)}")
    b, n, c = probs.shape
    return b, n, c


def majority_vote(probs: Tensor) -> Tensor:
    r"""Per-node majority class of ``B`` teachers; ties go to the class with the highest mean probability.

    .. math::
        v_i = \arg\max_c \Big(\sum_b [\arg\max p_{b,i} = c] + 0.999\,\bar p_i(c)\Big),\qquad
        \bar p_i = \frac{1}{B}\sum_b p_{b,i}

    (the mean probability is below 1, so it only breaks ties between equal vote counts).

    Shapes:
        - **input:** probs :math:`(B, N, C)` softmax outputs
        - **output:** :math:`(N)` class ids
    """
    _check_probs(probs)
    votes = F.one_hot(probs.argmax(-1), probs.size(-1)).sum(0).float()
    return (votes + probs.mean(0) * 0.999).argmax(-1)


def random_teacher(probs: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    r"""One teacher per node drawn uniformly at random, :math:`a_i \sim \mathcal U\{0, \dots, B-1\}`
    (the paper's random-selection ablation of NGS).

    Args:
        probs (Tensor): teacher softmax outputs (only the shape is read).
        generator (torch.Generator, optional): the random source. (default: the global one)

    Shapes:
        - **input:** probs :math:`(B, N, C)`
        - **output:** :math:`(N)` teacher ids
    """
    b, n, _ = _check_probs(probs)
    return torch.randint(0, b, (n,), generator=generator)


def majority_teacher(probs: Tensor) -> Tensor:
    r"""Per node, the most confident of the teachers whose class is the majority vote :math:`v_i`
    (:func:`majority_vote`):

    .. math::
        a_i = \arg\max_{b\,:\,\arg\max p_{b,i} = v_i} \max_c p_{b,i}(c)

    At least one teacher votes for :math:`v_i`, so the set is never empty.

    Shapes:
        - **input:** probs :math:`(B, N, C)` softmax outputs
        - **output:** :math:`(N)` teacher ids
    """
    vote = majority_vote(probs)
    agree = probs.argmax(-1) == vote.view(1, -1)  # [B, N]
    conf = probs.max(-1).values.masked_fill(~agree, -1.0)
    return conf.argmax(0)


def confident_teacher(probs: Tensor) -> Tensor:
    r"""Per node, the teacher with the lowest-entropy prediction,
    :math:`a_i = \arg\min_b H(p_{b,i})`, :math:`H(p) = -\sum_c p(c)\log p(c)`.

    Shapes:
        - **input:** probs :math:`(B, N, C)` softmax outputs
        - **output:** :math:`(N)` teacher ids
    """
    _check_probs(probs)
    ent = -(probs * probs.clamp(min=1e-12).log()).sum(-1)
    return ent.argmin(0)


def rule_teacher_choice(probs: Tensor, rule: str, *, generator: torch.Generator | None = None) -> Tensor:
    """The teacher per node by the rule ``rule``: ``"random"`` (:func:`random_teacher`, drawing from
    ``generator``), ``"majority"`` (:func:`majority_teacher`) or ``"confident"`` (:func:`confident_teacher`).

    Shapes:
        - **input:** probs :math:`(B, N, C)` softmax outputs
        - **output:** :math:`(N)` teacher ids
    """
    if rule == "random":
        return random_teacher(probs, generator=generator)
    if rule == "majority":
        return majority_teacher(probs)
    if rule == "confident":
        return confident_teacher(probs)
    raise ValueError(f"unknown teacher rule {rule!r}; valid: {', '.join(TEACHER_RULES)}")


# ---------------------------------------------------------------------------- evaluation diagnostic
def teacher_oracle(
    probs: Tensor, y: Tensor, mask: Tensor, names: list[str] | tuple[str, ...] | None = None
) -> dict:
    r"""How much room a teacher selector has, measured on the evaluation nodes ``mask`` with their true
    labels (a diagnostic: no selector may read it). The **oracle selector** picks, per node, a teacher that
    is right if any teacher is, so its accuracy is the upper bound of every per-node teacher selector:

    .. math::
        \mathrm{oracle} = \frac{1}{|M|}\sum_{i\in M} \Big[\exists b:\ \arg\max_c p_{b,i}(c) = y_i\Big],
        \qquad
        \mathrm{agree}_{bb'} = \frac{1}{|M|}\sum_{i\in M}
        \big[\arg\max p_{b,i} = \arg\max p_{b',i}\big]

    Only ``y[mask]`` is read: labels outside ``mask`` do not change the result.

    Args:
        probs (Tensor): teacher softmax (or logits: only the argmax is read).
        y (Tensor): true labels (read on ``mask`` only).
        mask (Tensor): bool evaluation nodes :math:`M`.
        names (sequence of str, optional): teacher names for the keys. (default: ``"0"``, ``"1"``, ...)

    Returns:
        dict with ``oracle_acc``, ``best_teacher_acc`` (the best single teacher), ``oracle_gap`` (their
        difference), ``all_right`` and ``all_wrong`` (fractions of nodes where every / no teacher is
        right), ``teacher_acc`` (name → accuracy), ``agreement`` (``"a|b"`` → fraction of nodes where
        teachers ``a`` and ``b`` predict the same class) and ``num_nodes``; accuracies are ``nan`` when
        ``mask`` selects no node.

    Shapes:
        - **input:** probs :math:`(B, N, C)`, y :math:`(N)`, mask :math:`(N)` bool
    """
    b, n, _ = _check_probs(probs)
    if y.shape != (n,) or mask.shape != (n,):
        raise ValueError(f"y {tuple(y.shape)} and mask {tuple(mask.shape)} must both be ({n},)")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    names = [str(i) for i in range(b)] if names is None else [str(v) for v in names]
    if len(names) != b:
        raise ValueError(f"{len(names)} names for {b} teachers")
    idx = mask.nonzero().view(-1)
    top = probs.argmax(-1)[:, idx]  # [B, M]
    m = idx.numel()
    nan = float("nan")
    if m == 0:
        return {"oracle_acc": nan, "best_teacher_acc": nan, "oracle_gap": nan, "all_right": nan,
                "all_wrong": nan, "teacher_acc": {k: nan for k in names}, "agreement": {}, "num_nodes": 0}
    right = top == y[idx].view(1, -1)  # [B, M]
    acc = right.float().mean(1)
    oracle = float(right.any(0).float().mean())
    agreement = {
        f"{names[i]}|{names[j]}": float((top[i] == top[j]).float().mean())
        for i in range(b)
        for j in range(i + 1, b)
    }
    return {
        "oracle_acc": oracle,
        "best_teacher_acc": float(acc.max()),
        "oracle_gap": oracle - float(acc.max()),
        "all_right": float(right.all(0).float().mean()),
        "all_wrong": float((~right.any(0)).float().mean()),
        "teacher_acc": {k: float(a) for k, a in zip(names, acc.tolist(), strict=True)},
        "agreement": agreement,
        "num_nodes": m,
    }
