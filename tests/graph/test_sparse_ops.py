"""The fast sparse paths of the GNN zoo: CSR first layer, cached-transpose adjacency matmul, dropout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from graphspike_kd.graph.models import (
    _AdjacencyCache,
    available_models,
    build_model,
    dropout,
    input_dropout,
    prepare_features,
)
from graphspike_kd.graph.sparse_ops import _TRANSPOSES, csr_linear, enable_sparse_input


def _sparse_features(n=60, f=40, density=0.08, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=g) < density).float() * torch.rand(n, f, generator=g)
    x[:, 0] = 0.0  # an empty column: the transpose must keep it
    x[3] = 0.0  # and an empty row
    return x


def _graph(n=60, e=200, seed=0, undirected=True):
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    keep = src != dst
    ei = torch.stack([src[keep], dst[keep]])
    if undirected:
        ei = torch.cat([ei, ei.flip(0)], dim=1)
    return torch.unique(ei, dim=1)


def test_csr_linear_matches_dense_linear_forward_and_backward():
    x = _sparse_features()
    csr = prepare_features(x, max_density=1.0)
    w = torch.randn(7, 40, requires_grad=True)
    b = torch.randn(7, requires_grad=True)
    g = torch.randn(60, 7)
    out = csr_linear(csr, w, b)
    (out * g).sum().backward()
    w_ref, b_ref = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ref = F.linear(x, w_ref, b_ref)
    (ref * g).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(w.grad, w_ref.grad)
    torch.testing.assert_close(b.grad, b_ref.grad)


def test_csr_linear_reuses_the_structure_for_new_values():
    csr = prepare_features(_sparse_features(), max_density=1.0)
    first = _TRANSPOSES.get(csr)
    torch.manual_seed(1)
    dropped = input_dropout(csr, 0.5, True)  # same structure, new values
    assert _TRANSPOSES.get(dropped)[2] is first[2]
    w = torch.randn(5, 40, requires_grad=True)
    csr_linear(dropped, w).sum().backward()
    w_ref = w.detach().clone().requires_grad_()
    F.linear(dropped.to_dense(), w_ref).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad)
    # another matrix gets its own structure
    other = prepare_features(_sparse_features(seed=3), max_density=1.0)
    assert not torch.equal(_TRANSPOSES.get(other)[1], first[1])


def test_csr_linear_falls_back_for_dense_input_and_checks_shapes():
    x = torch.randn(4, 3)
    w = torch.randn(2, 3)
    torch.testing.assert_close(csr_linear(x, w), F.linear(x, w))
    with pytest.raises(ValueError, match="x has 3 features but weight expects 5"):
        csr_linear(x.to_sparse_csr(), torch.randn(2, 5))


def test_enable_sparse_input_keeps_parameters_and_state_dict():
    lin = torch.nn.Sequential(torch.nn.Linear(40, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    keys = list(lin.state_dict())
    weights = [p.detach().clone() for p in lin.parameters()]
    assert enable_sparse_input(lin, 40) == 1
    assert enable_sparse_input(lin, 40) == 0  # already switched
    assert isinstance(lin[0], torch.nn.Linear) and type(lin[0]) is not torch.nn.Linear
    assert type(lin[2]) is torch.nn.Linear
    assert list(lin.state_dict()) == keys
    assert all(torch.equal(a, b) for a, b in zip(weights, lin.parameters(), strict=True))
    x = _sparse_features()
    torch.testing.assert_close(lin(prepare_features(x, max_density=1.0)), lin(x))


@pytest.mark.parametrize("name", available_models())
def test_every_model_has_the_same_gradients_for_sparse_and_dense_features(name):
    x, ei = _sparse_features(), _graph()
    kwargs = {"num_layers": 2} if name == "gcnii" else {}
    model = build_model(name, 40, 16, 3, **kwargs).eval()  # no dropout: both passes see the same function
    g = torch.randn(60, 3)
    (model(x, ei) * g).sum().backward()
    dense_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (model(prepare_features(x, max_density=1.0), ei) * g).sum().backward()
    for ref, p in zip(dense_grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["gcn", "hop1", "hop2"])
@pytest.mark.parametrize("undirected", [True, False])
def test_cached_adjacency_matmul_gradient_also_for_directed_graphs(kind, undirected):
    ei = _graph(undirected=undirected, seed=5)
    cache = _AdjacencyCache()
    h = torch.randn(60, 4, requires_grad=True)
    g = torch.randn(60, 4)
    (cache.matmul(ei, kind, h) * g).sum().backward()
    adj = cache.get(ei, 60, kind).to_dense()
    h_ref = h.detach().clone().requires_grad_()
    ((adj @ h_ref) * g).sum().backward()
    torch.testing.assert_close(h.grad, h_ref.grad)
    symmetric = torch.equal(adj, adj.T)
    assert (cache._pair(ei, 60, kind)[1] is cache.get(ei, 60, kind)) == symmetric
    if undirected:
        assert symmetric


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_rate_scale_and_unbiasedness(p):
    torch.manual_seed(0)
    n = 400_000
    out = dropout(torch.ones(n), p, True)
    dropped = float((out == 0).sum()) / n
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(dropped - p) < 6 * sigma + 2**-15
    kept = out[out != 0]
    p_eff = math.ceil(p * 2**15) / 2**15
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p_eff)))
    assert abs(float(out.mean()) - 1.0) < 6 * math.sqrt(p / ((1 - p) * n))


def test_dropout_identity_cases_determinism_and_gradient():
    x = torch.randn(33, 7, requires_grad=True)
    assert dropout(x, 0.5, False) is x and dropout(x, 0.0, True) is x
    assert bool((dropout(x, 0.99999, True) == 0).all())
    torch.manual_seed(3)
    a = dropout(x, 0.5, True)
    torch.manual_seed(3)
    b = dropout(x, 0.5, True)
    torch.testing.assert_close(a, b)
    assert set((a / x).detach().round().unique().tolist()) <= {0.0, 2.0}
    a.sum().backward()
    torch.testing.assert_close(x.grad, (a / x).detach())
