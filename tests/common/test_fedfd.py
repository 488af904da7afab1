"""FedFD: orthogonal projectors, feature loss, server distill/transfer; FedAvg and the Dirichlet split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from graphspike_kd.common.federated import (
    FedFDServer,
    OrthogonalProjector,
    dirichlet_partition,
    fedavg,
    fedfd_feature_loss,
)

# Tiny models: one intra-op thread avoids thread hand-off overhead on a shared CPU.
pytestmark = pytest.mark.usefixtures("single_thread")


class _Net(nn.Module):
    def __init__(self, d_in, d_feat, c=3):
        super().__init__()
        self.body = nn.Linear(d_in, d_feat)
        self.head = nn.Linear(d_feat, c)

    def forward(self, x, return_features=False):
        f = torch.relu(self.body(x))
        return (self.head(f), f) if return_features else self.head(f)


@pytest.mark.parametrize("d, d_a", [(8, 3), (3, 8), (5, 5)])
def test_projector_stays_orthogonal_through_training(d, d_a):
    torch.manual_seed(0)
    proj = OrthogonalProjector(d, d_a)
    opt = torch.optim.SGD(proj.parameters(), lr=0.5)
    x, target = torch.randn(16, d), torch.randn(16, d_a)
    for _ in range(5):
        loss = (proj(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = proj.weight.detach()
    gram = w @ w.T if d_a <= d else w.T @ w
    assert torch.allclose(gram, torch.eye(min(d, d_a)), atol=1e-5)
    if d_a >= d:  # isometry
        assert torch.allclose(proj(x).norm(dim=1), x.norm(dim=1), atol=1e-4)
    else:
        assert torch.all(proj(x).norm(dim=1) <= x.norm(dim=1) + 1e-5)
    with pytest.raises(ValueError, match=rf"\[B, {d}\]"):
        proj(torch.randn(2, d + 1))


def test_feature_loss_hand_case_and_weights():
    projs = {"a": OrthogonalProjector(2, 2), "b": OrthogonalProjector(2, 1)}
    with torch.no_grad():
        projs["a"].linear.weight = torch.eye(2)
        projs["b"].linear.weight = torch.tensor([[1.0, 0.0]])
    hg = torch.tensor([[1.0, 2.0]])
    feats = {"a": torch.tensor([[0.0, 0.0]]), "b": torch.tensor([[4.0]])}
    out = fedfd_feature_loss(hg, feats, projs)
    assert out["arch/a"].item() == pytest.approx(5.0, abs=1e-5)
    assert out["arch/b"].item() == pytest.approx(9.0, abs=1e-5)
    assert out["loss"].item() == pytest.approx(7.0, abs=1e-5)
    weighted = fedfd_feature_loss(hg, feats, projs, {"a": 3.0, "b": 1.0})
    assert weighted["loss"].item() == pytest.approx(0.75 * 5 + 0.25 * 9, abs=1e-5)
    with pytest.raises(ValueError, match="no projector"):
        fedfd_feature_loss(hg, {"c": torch.zeros(1, 2)}, projs)
    with pytest.raises(ValueError, match="do not match"):
        fedfd_feature_loss(hg, {"a": torch.zeros(1, 3)}, projs)


def test_server_distill_reduces_feature_loss_and_transfer():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    clients = {"a": [_Net(4, 6), _Net(4, 6)], "b": [_Net(4, 3)]}
    server = FedFDServer(_Net(4, 5), 5, {"a": 6, "b": 3}, distill_steps=1, lr=1e-2, batch_size=64)
    g = torch.Generator().manual_seed(0)
    first = server.distill(x, clients, generator=g)["feature_loss"]
    server.distill_steps = 40
    last = server.distill(x, clients, generator=g)["feature_loss"]
    assert last < first
    for p in server.projectors.values():
        w = p.weight.detach()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, torch.eye(min(w.shape)), atol=1e-5)
    model = _Net(4, 3)
    server.transfer_steps = 1
    before = server.transfer(x, "b", model, generator=g)["feature_loss"]
    server.transfer_steps = 40
    after = server.transfer(x, "b", model, generator=g)["feature_loss"]
    assert after < before
    with pytest.raises(ValueError, match="unknown architecture"):
        server.transfer(x, "zzz", model)
    with pytest.raises(ValueError, match="unknown architectures"):
        server.distill(x, {"zzz": [model]})


def test_fedavg_weighted_hand_case():
    a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        a.weight.fill_(1.0)
        a.bias.fill_(0.0)
        b.weight.fill_(4.0)
        b.bias.fill_(2.0)
    avg = fedavg([a, b], [2, 1])
    assert torch.allclose(avg["weight"], torch.full((1, 2), 2.0))
    assert torch.allclose(avg["bias"], torch.tensor([2.0 / 3]))
    bn1, bn2 = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    bn2.num_batches_tracked += 5
    assert fedavg([bn1, bn2])["num_batches_tracked"].item() == 0
    with pytest.raises(ValueError, match="does not match"):
        fedavg([nn.Linear(2, 1), nn.Linear(3, 1)])
    with pytest.raises(ValueError, match="weights"):
        fedavg([a, b], [1, -1])


def test_dirichlet_partition_is_a_partition_and_skewed():
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_partition(labels, 10, 0.1, np.random.default_rng(0), min_size=5)
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(500))
    assert min(len(p) for p in parts) >= 5
    # small alpha -> most clients are dominated by few classes
    top_share = [np.bincount(labels[p], minlength=10).max() / len(p) for p in parts]
    assert np.mean(top_share) > 0.4
    again = dirichlet_partition(labels, 10, 0.1, np.random.default_rng(0), min_size=5)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again, strict=True))
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(labels, 10, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="cannot give"):
        dirichlet_partition(labels[:5], 10, 1.0, np.random.default_rng(0))
