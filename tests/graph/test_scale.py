"""Scale-related guarantees: sparse TF-IDF equals the dense matrix, blocked DNS equals the one-block
search, the adjacency cache is keyed by content, H2GCN's two-hop rule, validation every k epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphspike_kd.graph.models import (
    ADJACENCY_STORE,
    H2GCN,
    _AdjacencyCache,
    build_model,
    graph_fingerprint,
    prepare_features,
)
from graphspike_kd.graph.selectors import dns_neighbours
from graphspike_kd.graph.text_features import tfidf_features
from graphspike_kd.graph.training import TrainConfig, train_node_classifier


def _graph(n: int = 80, e: int = 300, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    return torch.cat([ei, ei.flip(0)], dim=1)


def test_sparse_tfidf_is_the_dense_tfidf_as_csr():
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    texts = [" ".join(rng.choice(words, size=12)) for _ in range(40)]
    x = tfidf_features(texts, max_features=30, min_df=2)
    dense = TfidfVectorizer(
        max_features=30, min_df=2, stop_words="english", sublinear_tf=True, dtype=np.float32
    ).fit_transform(texts)
    ref = torch.from_numpy(np.asarray(dense.todense(), dtype=np.float32))
    assert x.layout == torch.sparse_csr
    assert torch.equal(x.to_dense(), ref)
    expected = prepare_features(ref)  # what every model made of the dense matrix
    assert torch.equal(x.crow_indices(), expected.crow_indices())
    assert torch.equal(x.col_indices(), expected.col_indices())
    assert torch.equal(x.values(), expected.values())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("block", [1, 97, 5000])
def test_blocked_dns_equals_the_dense_search(metric, block):
    g = torch.Generator().manual_seed(3)
    embeddings = [torch.randn(200, 16, generator=g), torch.randn(200, 8, generator=g)]
    nodes = torch.randperm(200, generator=g)[:60]
    allowed = torch.rand(200, generator=g) > 0.2
    dense = dns_neighbours(embeddings, nodes, k=5, candidates=allowed, metric=metric, max_block=10**9)
    blocked = dns_neighbours(embeddings, nodes, k=5, candidates=allowed, metric=metric, max_block=block)
    assert blocked == dense
    # the dense reference, written out: per teacher, top-k of the full distance matrix
    e = torch.nn.functional.normalize(embeddings[0], dim=1) if metric == "cosine" else embeddings[0]
    dist = -(e[nodes] @ e.T) if metric == "cosine" else torch.cdist(e[nodes], e)
    dist = dist.masked_fill(~allowed.view(1, -1), float("inf"))
    dist[torch.arange(60), nodes] = float("inf")
    first = dist.topk(5, dim=1, largest=False).indices
    for row, v in enumerate(nodes.tolist()):
        assert dense[v][:5] == first[row].tolist()
    with pytest.raises(ValueError, match="max_block"):
        dns_neighbours(embeddings, nodes, max_block=0)


def test_adjacency_cache_is_keyed_by_content_not_pointer():
    ADJACENCY_STORE.clear()
    ei = _graph()
    a, b = _AdjacencyCache(), _AdjacencyCache()
    adj = a.get(ei, 80, "gcn")
    assert b.get(ei.clone(), 80, "gcn") is adj  # an equal copy elsewhere in memory: same matrix
    assert a.get(ei, 81, "gcn") is not adj  # the node count is part of the key
    other = ei.clone()
    other[1, 0] = (other[1, 0] + 1) % 80
    assert graph_fingerprint(other) != graph_fingerprint(ei)
    assert not torch.equal(a.get(other, 80, "gcn").to_dense(), adj.to_dense())
    ei[1, 0] = other[1, 0]  # edited in place: same pointer, new content, new matrix
    torch.testing.assert_close(a.get(ei, 80, "gcn").to_dense(), a.get(other, 80, "gcn").to_dense())
    assert a.key(ei, 80)[2] == "cpu"


def test_freed_and_reused_memory_never_returns_a_stale_adjacency():
    ADJACENCY_STORE.clear()
    cache = _AdjacencyCache()
    for seed in range(6):  # new graphs, likely at recycled addresses
        ei = _graph(seed=seed)
        ref = torch.zeros(80, 80)
        ref[ei[0], ei[1]] = 1.0
        ref.fill_diagonal_(0)
        assert torch.equal(cache.get(ei, 80, "adj").to_dense(), ref)
        del ei


def test_walk_two_hop_matches_its_formula_and_auto_rule():
    ADJACENCY_STORE.clear()
    ei = _graph(n=50, e=120, seed=2)
    cache = _AdjacencyCache()
    a = cache.get(ei, 50, "adj").to_dense()
    walks = a @ a
    w = walks - torch.diag(torch.diagonal(walks))
    s = w.sum(1).clamp(min=1).pow(-0.5)
    h = torch.randn(50, 6, requires_grad=True)
    out = cache.walk2(ei, h)
    torch.testing.assert_close(out, s.view(-1, 1) * (w @ (s.view(-1, 1) * h)))
    out.sum().backward()
    torch.testing.assert_close(h.grad, (s.view(-1, 1) * (w.T @ s.view(-1, 1))).expand(50, 6))
    deg = a.sum(1)
    assert cache.two_hop_estimate(ei, 50) == int((deg * deg).sum() - deg.sum())
    exact = cache.get(ei, 50, "hop2")
    assert exact._nnz() <= cache.two_hop_estimate(ei, 50)
    model = H2GCN(8, 4, 3, two_hop_budget=10**9)
    assert model.two_hop_form(ei, 50) == "exact"
    assert H2GCN(8, 4, 3, two_hop_budget=10).two_hop_form(ei, 50) == "walk"
    x = torch.randn(50, 8)
    walk = build_model("h2gcn", 8, 4, 3, two_hop="walk").eval()
    assert walk(x, ei).shape == (50, 3)
    with pytest.raises(ValueError, match="two_hop"):
        H2GCN(8, 4, 3, two_hop="dense")


def test_h2gcn_auto_is_the_exact_model_below_the_budget():
    ei = _graph()
    x = torch.randn(80, 10)
    torch.manual_seed(0)
    auto = H2GCN(10, 8, 3).eval()
    torch.manual_seed(0)
    exact = H2GCN(10, 8, 3, two_hop="exact").eval()
    assert torch.equal(auto(x, ei), exact(x, ei))


def test_eval_every_validates_less_and_one_is_the_default_behaviour():
    ei = _graph()
    x = torch.randn(80, 10)
    y = torch.randint(0, 3, (80,))
    train = torch.zeros(80, dtype=torch.bool)
    train[:20] = True
    val = ~train
    runs = {}
    for k in (1, 4):
        model = build_model("gcn", 10, 8, 3)
        cfg = TrainConfig(epochs=10, patience=None, eval_every=k)
        runs[k] = train_node_classifier(model, x, ei, y, train, val_mask=val, val_y=y, config=cfg, seed=1)
    assert sum("val_acc" in r for r in runs[1].history) == 10
    assert [int(r["epoch"]) for r in runs[4].history if "val_acc" in r] == [4, 8, 10]
    assert runs[1].history[3]["val_acc"] == runs[4].history[3]["val_acc"]  # same model at epoch 4
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(eval_every=0)


def test_ivf_dns_finds_most_exact_neighbours_and_respects_the_rules():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 16, generator=g)
    y = torch.randint(0, 10, (1500,), generator=g)
    emb = centres[y] + 0.8 * torch.randn(1500, 16, generator=g)
    nodes = torch.randperm(1500, generator=g)[:300]
    allowed = torch.rand(1500, generator=g) > 0.1
    exact = dns_neighbours([emb], nodes, k=4, candidates=allowed, search="exact")
    ivf = dns_neighbours([emb], nodes, k=4, candidates=allowed, search="ivf")
    auto = dns_neighbours([emb], nodes, k=4, candidates=allowed, exact_pairs=1000)
    assert auto == ivf and dns_neighbours([emb], nodes, k=4, candidates=allowed) == exact
    found = sum(len(set(exact[v]) & set(ivf[v])) for v in exact)
    assert found / (4 * len(exact)) > 0.9
    e = torch.nn.functional.normalize(emb, dim=1)
    for v, ids in ivf.items():
        assert v not in ids and all(bool(allowed[i]) for i in ids) and len(ids) == 4
        d = (-(e[v] @ e[ids].T)).tolist()
        assert d == sorted(d)
    with pytest.raises(ValueError, match="search"):
        dns_neighbours([emb], nodes, search="hnsw")


def test_at_scale_preset_is_linear_and_overridable():
    from graphspike_kd.graph.pkd import PKD, SCALE_TEACHERS, PKDConfig

    config = PKDConfig.at_scale()
    assert config.teachers == SCALE_TEACHERS
    # no per-edge attention and no two-hop operator: their memory or time grows faster than the edges
    assert not {"gat", "h2gcn"} & set(config.teachers)
    assert config.train.eval_every > 1 and config.train.epochs < PKDConfig().train.epochs
    assert config.ngs_rounds < PKDConfig().ngs_rounds and config.final_epochs < PKDConfig().final_epochs
    # what the preset does not name keeps the defaults; overrides win over the preset
    assert config.denoise == PKDConfig().denoise and config.student == PKDConfig().student
    assert PKDConfig.at_scale(ngs_rounds=3, device="cpu").ngs_rounds == 3
    with pytest.raises(TypeError, match="ngs_round"):
        PKDConfig.at_scale(ngs_round=3)

    # the preset runs end to end (a tiny graph, a short schedule)
    from graphspike_kd.graph.annotators.oracle import OracleAnnotator
    from graphspike_kd.graph.splits import few_shot_split

    g = torch.Generator().manual_seed(0)
    n, c = 120, 3
    y = torch.arange(n) % c
    x = torch.nn.functional.one_hot(y, c).float() + 0.8 * torch.randn(n, c, generator=g)
    src = torch.randint(0, n, (400,), generator=g)
    same_class = (src + c * torch.randint(1, 5, (400,), generator=g)) % n
    anywhere = torch.randint(0, n, (400,), generator=g)
    dst = torch.where(torch.rand(400, generator=g) < 0.8, same_class, anywhere)
    from torch_geometric.data import Data
    from torch_geometric.utils import to_undirected

    data = Data(x=x, edge_index=to_undirected(torch.stack([src, dst])), y=y, num_nodes=n)
    data.name, data.class_names = "at_scale_toy", ["a", "b", "c"]
    split = few_shot_split(y, 3, protocol="paper", seed=0)
    short = TrainConfig(epochs=10, patience=5, eval_every=5)
    config = PKDConfig.at_scale(
        train=short, ngs_rounds=1, student_epochs_per_round=2, final_epochs=5, dns_k=0
    )
    pkd = PKD(config)
    result = pkd.fit(data, OracleAnnotator(data, accuracy=0.8, seed=0), split, seed=0)
    assert result.expansion.teacher_probs.shape[0] == len(SCALE_TEACHERS)
    assert pkd.evaluate(data, split, result)["test_acc"] > 1.0 / c
