from __future__ import annotations

import pytest
import torch

from graphspike_kd.graph.models import available_models, build_model, input_dropout, prepare_features
from graphspike_kd.graph.training import TrainConfig, predict, target_loss, train_node_classifier


def _toy_graph(n=40, f=24, c=3, seed=0):
    """Homophilous toy graph: class = node id mod 3, one class-revealing feature, edges inside a class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = (torch.rand(n, f, generator=g) < 0.1).float()
    x[torch.arange(n), y] = 1.0
    src = torch.randint(0, n, (80,), generator=g)
    dst = src + c * torch.randint(1, 4, (80,), generator=g)
    dst = torch.where(dst < n, dst, dst - c * ((dst - src) // c))
    dst = torch.where(dst < n, dst, src)
    keep = src != dst
    edge_index = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
    edge_index = torch.unique(edge_index, dim=1)
    return x, edge_index, y


@pytest.mark.parametrize("name", available_models())
def test_forward_shapes_repr_and_sparse_input(name):
    x, edge_index, _ = _toy_graph()
    kwargs = {"num_layers": 2} if name == "gcnii" else {}
    model = build_model(name, 24, 16, 3, **kwargs)
    assert repr(model).endswith("(24, 16, 3, num_layers=2)")
    model.eval()
    out = model(x, edge_index)
    assert out.shape == (40, 3) and torch.isfinite(out).all()
    assert model.embed(x, edge_index).shape[0] == 40
    # sparse CSR features compute the same function
    torch.testing.assert_close(model(prepare_features(x), edge_index), out, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_builder_errors_and_aliases():
    with pytest.raises(ValueError, match="valid: gcn"):
        build_model("transformer", 4, 8, 2)
    with pytest.raises(ValueError, match="bad options"):
        build_model("gcn", 4, 8, 2, heads=3)
    with pytest.raises(ValueError, match="divisible"):
        build_model("gat", 4, 10, 2, heads=4)
    assert type(build_model("GraphSAGE", 4, 8, 2)).__name__ == "GraphSAGE"
    assert type(build_model("gcn2", 4, 8, 2)).__name__ == "GCNII"


def test_sparse_input_dropout_keeps_zeros_and_scales():
    x = prepare_features((torch.rand(200, 100) < 0.05).float())
    assert x.layout == torch.sparse_csr
    torch.manual_seed(0)
    d = input_dropout(x, 0.5, True).to_dense()
    dense = x.to_dense()
    assert bool((d[dense == 0] == 0).all())
    assert set(d[dense != 0].unique().tolist()) <= {0.0, 2.0}
    assert 0.35 < float((d[dense != 0] > 0).float().mean()) < 0.65


def test_target_loss_hard_soft_weighted():
    logits = torch.randn(5, 3)
    y = torch.tensor([0, 2, -1, 1, 1])
    mask = torch.tensor([True, True, True, False, True])
    hard = target_loss(logits, y, mask)
    soft = target_loss(logits, torch.nn.functional.one_hot(y.clamp(min=0), 3).float(), mask & (y >= 0))
    torch.testing.assert_close(hard, soft)
    w = torch.tensor([1.0, 0.0, 5.0, 1.0, 1.0])
    expected = torch.nn.functional.cross_entropy(logits[[0, 4]], y[[0, 4]])
    torch.testing.assert_close(target_loss(logits, y, mask, w), expected)
    with pytest.raises(ValueError, match="soft targets have shape"):
        target_loss(logits, torch.rand(5, 4), mask)


@pytest.mark.parametrize("name", ["gcn", "h2gcn"])
def test_trainer_deterministic_and_learns(name):
    x, edge_index, y = _toy_graph()
    train = torch.zeros(40, dtype=torch.bool)
    train[:15] = True
    val = ~train
    params = []
    for _ in range(2):
        model = build_model(name, 24, 16, 3)
        res = train_node_classifier(
            model,
            x,
            edge_index,
            y,
            train,
            val_mask=val,
            val_y=y,
            config=TrainConfig(epochs=60, patience=20),
            seed=7,
        )
        params.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*params, strict=True):
        assert torch.equal(a, b)
    assert res.best_val_acc is not None and res.best_val_acc > 0.6
    assert res.history[0]["target"] > res.history[res.best_epoch - 1]["target"]
    other = build_model(name, 24, 16, 3)
    train_node_classifier(other, x, edge_index, y, train, config=TrainConfig(epochs=60), seed=8)
    assert not all(torch.equal(a, b) for a, b in zip(params[0], other.parameters(), strict=True))


def test_trainer_soft_targets_weights_and_extra_terms():
    x, edge_index, y = _toy_graph()
    soft = torch.nn.functional.one_hot(y, 3).float() * 0.8 + 0.2 / 3
    mask = torch.ones(40, dtype=torch.bool)
    weight = torch.linspace(0.1, 1.0, 40)
    model = build_model("gcn", 24, 16, 3)
    seen = []

    def entropy(logits):
        p = logits.softmax(-1)
        seen.append(True)
        return {"entropy": 0.1 * -(p * p.clamp_min(1e-12).log()).sum(-1).mean()}

    res = train_node_classifier(
        model,
        x,
        edge_index,
        soft,
        mask,
        sample_weight=weight,
        extra_loss=entropy,
        config=TrainConfig(epochs=30),
        seed=0,
    )
    assert res.best_val_acc is None and res.epochs_run == 30 and len(seen) == 30
    assert {"target", "entropy", "loss"} <= set(res.history[-1])
    assert (predict(model, x, edge_index).argmax(-1) == y).float().mean() > 0.6
    with pytest.raises(ValueError, match="val_y"):
        train_node_classifier(model, x, edge_index, y, mask, val_mask=mask)
