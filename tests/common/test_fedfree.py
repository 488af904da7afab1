"""FedFree: histogram entropy / KGE, top-k upload, depth mapping, alignment, distribution."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from graphspike_kd.common.federated import (
    FedFreeServer,
    copy_overlap_,
    gaussian_probes,
    histogram_entropy,
    knowledge_gain_entropy,
    layer_alignment_loss,
    layer_change_norms,
    map_layers_by_depth,
    top_k_changed_layers,
)


def _mlp(*dims):
    layers = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_histogram_entropy_hand_cases():
    assert histogram_entropy(torch.zeros(10)) == 0.0
    # two values at the ends of the range: two bins of 1/2 each -> log 2
    assert histogram_entropy(torch.tensor([0.0, 1.0])) == pytest.approx(math.log(2))
    # 256 evenly spaced values, one per bin -> log 256 (the maximum with 256 bins)
    w = (torch.arange(256, dtype=torch.float64) + 0.5) / 256
    assert histogram_entropy(w) == pytest.approx(math.log(256), rel=1e-9)
    assert histogram_entropy(w, bins=4) == pytest.approx(math.log(4), rel=1e-9)
    with pytest.raises(ValueError, match="non-finite"):
        histogram_entropy(torch.tensor([0.0, float("inf")]))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 500), st.integers(0, 1000))
def test_entropy_bounds_and_kge_antisymmetry(n, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, generator=g), torch.rand(n, generator=g)
    h = histogram_entropy(a)
    assert 0.0 <= h <= math.log(256) + 1e-9
    assert knowledge_gain_entropy(a, b) == pytest.approx(-knowledge_gain_entropy(b, a))
    # affine invariance: the histogram is over the tensor's own range. In floating point it is exact only
    # for a map that leaves every (w - min) / (max - min) bit-identical, e.g. a power-of-two scale and a
    # shift that are exact in float64 for float32 data (3 * a + 1 in float32 rounds, and a value next to a
    # bin edge can change bins: n = 330, seed = 259 did)
    assert histogram_entropy(4 * a.double() + 1) == pytest.approx(h, abs=1e-12)


def test_top_k_changed_layers():
    before = _mlp(4, 5, 3, 2)
    after = _mlp(4, 5, 3, 2)
    after.load_state_dict(before.state_dict())
    with torch.no_grad():
        after[2].weight += 1.0  # layer 1
        after[4].bias += 0.1  # layer 2
    norms = layer_change_norms(before, after)
    assert norms[0].item() == 0.0
    assert norms[1].item() == pytest.approx(math.sqrt(15))
    assert top_k_changed_layers(norms, 2) == [1, 2]
    assert top_k_changed_layers(torch.tensor([1.0, 3.0, 3.0]), 2) == [1, 2]
    with pytest.raises(ValueError, match="alignable layers"):
        layer_change_norms(_mlp(4, 2), _mlp(4, 3, 2))


def test_depth_mapping():
    assert map_layers_by_depth(_mlp(4, 8, 2), _mlp(4, 6, 5, 2)) == [0, 2]
    assert map_layers_by_depth(_mlp(4, 8, 8, 8, 2), _mlp(4, 6, 2)) == [0, 0, 1, 1]
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    assert map_layers_by_depth(conv, _mlp(4, 2)) == [None, 0]


def test_copy_overlap_block_and_flat():
    dst = torch.zeros(3, 4)
    src = torch.arange(6.0).view(2, 3)
    assert copy_overlap_(dst, src) == 6
    assert torch.equal(dst[:2, :3], src) and torch.all(dst[2] == 0) and torch.all(dst[:, 3] == 0)
    dst = torch.full((3, 4), -1.0)
    assert copy_overlap_(dst, src, "flat") == 6
    assert torch.equal(dst.view(-1)[:6], src.view(-1)) and torch.all(dst.view(-1)[6:] == -1)


def test_alignment_recovers_client_linear_layer():
    torch.manual_seed(0)
    client, glob = nn.Linear(3, 4), nn.Linear(5, 2)
    server = FedFreeServer(_mlp(5, 2), server_lr=0.05, align_steps=300,
                           generator=torch.Generator().manual_seed(0))
    server.global_model = nn.Sequential(glob)
    model = nn.Sequential(client)
    server.align([(model, [0])])
    # least squares on isotropic probes: the overlapping block converges to the client's, the rest to 0
    assert torch.allclose(glob.weight[:, :3], client.weight[:2], atol=0.05)
    assert torch.allclose(glob.weight[:, 3:], torch.zeros(2, 2), atol=0.05)
    assert torch.allclose(glob.bias, client.bias[:2], atol=0.05)
    probes = gaussian_probes(glob, 7, generator=torch.Generator().manual_seed(1))
    assert probes.shape == (7, 5)
    assert layer_alignment_loss(client, glob, probes).item() < 0.05
    with pytest.raises(ValueError, match="cannot align"):
        layer_alignment_loss(nn.Conv2d(1, 1, 3), glob, probes)


def test_distribute_replaces_only_with_positive_kge():
    torch.manual_seed(0)
    glob = _mlp(4, 4, 2)
    client = _mlp(4, 4, 2)
    server = FedFreeServer(glob)
    with torch.no_grad():
        client[0].weight.zero_()  # entropy 0 (+ bias) -> the global layer has more entropy
        client[0].bias.zero_()
        client[2].weight.copy_(glob[2].weight)
        client[2].bias.copy_(glob[2].bias)
    out = server.distribute(client, [0, 1])
    assert out["replaced"] == 1.0 and out["client_layer"] == 0.0 and out["kge"] > 0
    assert torch.equal(client[0].weight, glob[0].weight)
    # now identical everywhere: KGE = 0, nothing is sent
    assert server.distribute(client, [0, 1])["replaced"] == 0.0


def test_server_bad_settings():
    with pytest.raises(ValueError, match="invalid settings"):
        FedFreeServer(_mlp(2, 2), top_k=0)
    with pytest.raises(ValueError, match="copy_mode"):
        FedFreeServer(_mlp(2, 2), copy_mode="zero")
    with pytest.raises(ValueError, match="out of range"):
        FedFreeServer(_mlp(2, 2)).align([(_mlp(2, 2), [3])])
