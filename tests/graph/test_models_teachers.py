"""The teachers whose errors differ from message-passing GNNs: SGC, label propagation, correct and smooth."""

import pytest
import torch
import torch.nn.functional as F

from graphspike_kd.graph.models import (
    CorrectAndSmooth,
    LabelPropagation,
    available_models,
    available_teachers,
    build_model,
    build_teacher,
    is_trainable,
    needs_labels,
    prepare_features,
)
from graphspike_kd.graph.training import TrainConfig, accuracy, train_node_classifier

pytestmark = pytest.mark.usefixtures("single_thread")


def _path(n=6):
    """A path 0-1-...-(n-1), both directions."""
    src = torch.arange(n - 1)
    ei = torch.stack([src, src + 1])
    return torch.cat([ei, ei.flip(0)], 1)


def _sbm(n_per_class=40, classes=3, seed=0, feature_signal=0.6):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    n = y.numel()
    prob = torch.where(y.view(-1, 1) == y.view(1, -1), torch.tensor(0.1), torch.tensor(0.005))
    adj = torch.triu(torch.rand(n, n, generator=g) < prob, 1)
    ei = adj.nonzero().T
    ei = torch.cat([ei, ei.flip(0)], 1)
    x = torch.cat([F.one_hot(y, classes).float() * feature_signal, torch.randn(n, 12, generator=g)], 1)
    return x, ei, y


def test_registry_names():
    assert {"sgc", "cs"} <= set(available_models()) and "labelprop" not in available_models()
    assert set(available_models()) | {"labelprop"} == set(available_teachers())
    for name in ("sgc", "labelprop", "cs"):
        m = build_teacher(name, 10, 8, 3)
        assert "(" in repr(m) and "\n" not in repr(m)
    assert not is_trainable(build_teacher("labelprop", 10, 8, 3))
    assert is_trainable(build_model("sgc", 10, 8, 3))
    assert needs_labels(build_model("cs", 10, 8, 3)) and not needs_labels(build_model("gcn", 10, 8, 3))
    with pytest.raises(ValueError, match="labelprop"):
        build_teacher("nope", 10, 8, 3)
    with pytest.raises(ValueError, match="bad options"):
        build_teacher("labelprop", 10, 8, 3, heads=2)


def test_sgc_is_the_k_step_filter_of_a_linear_map():
    x, ei, _ = _sbm(n_per_class=10)
    m = build_model("sgc", x.size(1), 8, 3, num_layers=2).eval()
    lin = m.lin.convs[0].lin
    # dense reference: A_hat = D^-1/2 (A + I) D^-1/2
    n = x.size(0)
    a = torch.zeros(n, n)
    a[ei[0], ei[1]] = 1.0
    a = a + torch.eye(n)
    d = a.sum(1).pow(-0.5)
    a_hat = d.view(-1, 1) * a * d.view(1, -1)
    expected = a_hat @ a_hat @ (x @ lin.weight.T + lin.bias)
    assert torch.allclose(m(x, ei), expected, atol=1e-5)
    # sparse features give the same function
    xs = prepare_features(torch.where(x > 1.5, x, torch.zeros_like(x)))
    assert xs.layout == torch.sparse_csr
    assert torch.allclose(m(xs, ei), m(xs.to_dense(), ei), atol=1e-5)
    assert repr(m) == f"SGC({x.size(1)}, 8, 3, num_layers=2)"


def test_label_propagation_hand_case():
    ei = _path(5)
    targets = torch.tensor([0, -1, -1, -1, 1])
    mask = torch.tensor([True, False, False, False, True])
    lp = LabelPropagation(1, 1, 2, K=30, alpha=0.9)
    with pytest.raises(RuntimeError, match="fit_labels"):
        lp(torch.zeros(5, 1), ei)
    lp.fit_labels(torch.zeros(5, 1), ei, targets, mask)
    p = lp(torch.zeros(5, 1), ei).exp()
    assert torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)
    assert p.argmax(1).tolist()[:2] == [0, 0] and p.argmax(1).tolist()[3:] == [1, 1]
    assert p[2, 0].item() == pytest.approx(0.5, abs=1e-4)  # the middle node is equidistant
    # a node no label reaches (an isolated one) gets the uniform distribution
    lp6 = LabelPropagation(1, 1, 2).fit_labels(torch.zeros(6, 1), ei, torch.tensor([0, -1, -1, -1, 1, -1]),
                                                torch.tensor([True, False, False, False, True, False]))
    assert torch.allclose(lp6.embed(None, ei)[5], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="no labelled node"):
        lp.fit_labels(torch.zeros(5, 1), ei, targets, torch.zeros(5, dtype=torch.bool))
    lp.reset_parameters()
    with pytest.raises(RuntimeError):
        lp(torch.zeros(5, 1), ei)


def test_label_propagation_uses_the_graph_not_the_features():
    x, ei, y = _sbm()
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(y.numel(), generator=g) < 0.1
    lp = LabelPropagation(x.size(1), 8, 3).fit_labels(x, ei, y, mask)
    assert accuracy(lp(x, ei), y, ~mask) > 0.65  # homophilous graph: chance is 1/3
    assert torch.equal(lp(torch.randn_like(x), ei), lp(x, ei))  # features are ignored
    shuffled = torch.randperm(y.numel(), generator=g)[ei]  # same degree sequence, labels no longer match
    lp_shuffled = LabelPropagation(x.size(1), 8, 3).fit_labels(x, shuffled, y, mask)
    assert accuracy(lp_shuffled(x, shuffled), y, ~mask) < 0.5


def test_correct_and_smooth_improves_its_base_mlp_on_a_homophilous_graph():
    x, ei, y = _sbm(feature_signal=0.3)
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(y.numel(), generator=g) < 0.15
    model = CorrectAndSmooth(x.size(1), 16, 3)
    train_node_classifier(model, x, ei, y, mask, config=TrainConfig(epochs=60), seed=0)
    model.eval()
    base = accuracy(model(x, ei), y, ~mask)  # no labels attached: the MLP's logits
    model.fit_labels(x, ei, y, mask)
    out = model(x, ei)
    assert torch.allclose(out.exp().sum(1), torch.ones(y.numel()), atol=1e-4)
    assert accuracy(out, y, ~mask) > base + 0.05
    # C&S keeps the labelled nodes' labels after smoothing
    assert accuracy(out, y, mask) == 1.0
    model.reset_parameters()
    assert model._labels is None
