"""Angular-KD: view heads, inter/intra-angle losses, ensemble target, registry entry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from graphspike_kd.common import get_loss
from graphspike_kd.common.losses import (
    AngularKDLoss,
    AngularViewHeads,
    angular_ensemble_target,
    inter_angle_terms,
    intra_angle_loss,
)


def _batch(b=6, c=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, c, generator=g),
        torch.randn(b, c, generator=g),
        torch.randint(0, c, (b,), generator=g),
        torch.randn(b, d, generator=g),
    )


def test_heads_orthogonal_init_and_bn_init():
    heads = AngularViewHeads(12, 4, num_views=5, seed=3)
    eye = torch.eye(12)
    for i in range(5):
        w = heads.weight[i].detach()
        assert torch.allclose(w @ w.T, eye, atol=1e-5)
    # different heads get different orthogonal matrices
    assert not torch.allclose(heads.weight[0], heads.weight[1])
    # BN affine params are per-head constants (all channels equal), distinct per head
    gammas = [bn.weight.detach() for bn in heads.bn]
    assert all(torch.all(gm == gm[0]) for gm in gammas)
    assert len({float(gm[0]) for gm in gammas}) == 5
    assert heads.dropouts == pytest.approx([0.15, 0.2, 0.25, 0.3, 0.35])
    assert torch.all(heads.classifier_bias == 0)
    assert repr(heads).startswith("AngularViewHeads(12, 4, num_views=5")


def test_heads_shapes_and_seed_determinism():
    x = torch.randn(7, 12)
    a, b = AngularViewHeads(12, 4, seed=1).eval(), AngularViewHeads(12, 4, seed=1).eval()
    fa, la = a(x)
    fb, lb = b(x)
    assert fa.shape == (7, 5, 12) and la.shape == (7, 5, 4)
    assert torch.equal(fa, fb) and torch.equal(la, lb)
    with pytest.raises(ValueError, match=r"\[B, 12\]"):
        a(torch.randn(7, 11))
    with pytest.raises(ValueError, match="dropouts"):
        AngularViewHeads(12, 4, num_views=2, dropouts=[0.1, 1.0])
    with pytest.raises(ValueError, match="num_views"):
        AngularViewHeads(12, 4, num_views=1)


def test_ensemble_l1_is_distribution_and_l2_reproduces_244():
    t, _, _, _ = _batch()
    views = torch.randn(6, 5, 5)
    q1 = angular_ensemble_target(t, views)
    assert torch.allclose(q1.sum(1), torch.ones(6), atol=1e-6)
    q2 = angular_ensemble_target(t, views, ensemble_norm="l2")
    expected = (5 * 0.8 + 1.0) / math.sqrt(5 * 0.8**2 + 1.0)
    assert expected == pytest.approx(2.44, abs=0.01)
    assert torch.allclose(q2.sum(1), torch.full((6,), expected), atol=1e-5)
    # hand case: identical views and teacher -> target = teacher softmax
    same = angular_ensemble_target(t, t[:, None].expand(6, 3, 5), temperature=2.0)
    assert torch.allclose(same, torch.softmax(t / 2.0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="ensemble_norm"):
        angular_ensemble_target(t, views, ensemble_norm="l3")


def test_inter_angle_hand_computed_two_samples():
    # B = 2, N = 2, D = 2; teacher axes e1, e2; all views equal the own teacher -> all clipped to 1.
    t = torch.eye(2)
    v = t[:, None, :].expand(2, 2, 2).clone()
    out = inter_angle_terms(t, v, margin=0.2, contrastive_temperature=0.5)
    # row logits: [1/0.5, 0] -> CE = log(1 + e^-2); mean over rows, / N
    ce = math.log(1 + math.exp(-2.0))
    assert out["constraint"].item() == pytest.approx(ce / 2, rel=1e-5)
    # all samples inside the margin: diversity = sum_{i != j} softplus(<v_i, v_j>) / (N (N-1) B)
    assert out["inside_margin"].item() == 1.0
    assert out["diversity"].item() == pytest.approx(2 * 2 * math.log1p(math.e) / (2 * 1 * 2), rel=1e-5)


def test_views_inside_margin_get_no_constraint_pull():
    t = F.normalize(torch.randn(4, 6), dim=1)
    v = (t[:, None, :] + 0.01 * torch.randn(4, 3, 6)).requires_grad_()
    vn = F.normalize(v, dim=2)
    out = inter_angle_terms(t, vn, margin=0.2)
    # positives are clipped to constants; the negatives still pull -> gradient only through negatives.
    # With the margin 0, the positive is not clipped and the loss is different.
    out0 = inter_angle_terms(t, vn, margin=0.0)
    assert out["constraint"].item() != pytest.approx(out0["constraint"].item())
    # outside the margin (orthogonal views), no diversity term at all
    far = torch.zeros(4, 3, 6)
    far[..., 0] = 1.0
    t2 = torch.zeros(4, 6)
    t2[:, 1] = 1.0
    assert inter_angle_terms(t2, far)["diversity"].item() == 0.0


def test_diversity_normalised_over_feature_axis_has_gradient():
    crit = AngularKDLoss(in_features=4, num_classes=3, num_views=2, margin=2.0, seed=0)
    s, t, y, f = _batch(b=5, c=3, d=4)
    terms = crit.terms(s, t, y, f)
    assert terms["inside_margin_feat"].item() == 1.0  # margin 2 -> everything is inside
    crit.zero_grad()
    terms["diversity_feat"].backward()
    assert crit.heads.weight.grad.abs().sum() > 0  # public code adds it with .item(): no gradient


def test_intra_angle_simplex_minimum_and_hand_case():
    # residuals forming a regular simplex (N = 3 in 2-D): cos = -1/2 between all pairs
    t = torch.zeros(1, 2)
    ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    v = -torch.stack([ang.cos(), ang.sin()], dim=1)[None]
    assert intra_angle_loss(t, v).item() == pytest.approx(math.log1p(math.exp(-0.5)), rel=1e-5)
    # identical residuals: cos = 1
    same = torch.ones(3, 2, 2)
    assert intra_angle_loss(torch.zeros(3, 2), same).item() == pytest.approx(math.log1p(math.e), rel=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), st.integers(2, 5), st.integers(0, 10_000))
def test_intra_angle_bounds_property(b, n, seed):
    g = torch.Generator().manual_seed(seed)
    val = intra_angle_loss(torch.randn(b, 3, generator=g), torch.randn(b, n, 3, generator=g)).item()
    assert math.log1p(math.exp(-1)) - 1e-6 <= val <= math.log1p(math.e) + 1e-6


def test_registry_forward_and_gradients_split():
    crit = get_loss("angular", in_features=8, num_classes=5)
    assert isinstance(crit, AngularKDLoss)
    s, t, y, f = _batch()
    s.requires_grad_()
    terms = crit.terms(s, t, y, f)
    assert {"kd", "inter_feat", "intra_feat", "inter_logit", "intra_logit", "view_ce", "loss"} <= set(terms)
    expected = (
        terms["kd"] + 0.1 * terms["inter_feat"] + terms["intra_feat"] + terms["inter_logit"]
        + terms["intra_logit"] + 0.8 * terms["view_ce"]
    )
    assert torch.allclose(terms["loss"], expected)
    # KD term vs the ensemble target: hand formula
    q = terms["ensemble"].detach()
    kd = 16 * (q * (q.log() - F.log_softmax(s / 4, 1))).sum(1).mean()
    assert torch.allclose(terms["kd"], kd, atol=1e-5)
    # detached ensemble: the student's KD does not reach the heads
    crit.zero_grad()
    terms["kd"].backward(retain_graph=True)
    assert crit.heads.weight.grad is None or crit.heads.weight.grad.abs().sum() == 0
    crit.zero_grad()
    crit.eval()
    loss = crit(s, t, y, teacher_feature=f)
    loss.backward()
    assert crit.heads.weight.grad.abs().sum() > 0 and s.grad is not None


def test_undetached_ensemble_reaches_heads():
    crit = AngularKDLoss(8, 5, detach_ensemble=False)
    s, t, y, f = _batch()
    crit.terms(s, t, y, f)["kd"].backward()
    assert crit.heads.weight.grad.abs().sum() > 0


def test_bad_inputs_raise():
    crit = AngularKDLoss(8, 5)
    s, t, y, f = _batch()
    with pytest.raises(ValueError, match="teacher_feature"):
        crit(s, t, y)
    with pytest.raises(ValueError, match="target"):
        crit(s, t, teacher_feature=f)
    with pytest.raises(ValueError, match="shape"):
        crit(s, t[:, :4], y, teacher_feature=f)
    with pytest.raises(ValueError, match=r"\[B, 8\]"):
        crit(s, t, y, teacher_feature=f[:, :7])
    with pytest.raises(ValueError, match="temperature"):
        AngularKDLoss(8, 5, temperature=0.0)
    with pytest.raises(ValueError, match="margin"):
        inter_angle_terms(torch.randn(2, 3), torch.randn(2, 2, 3), margin=-1)
    with pytest.raises(ValueError, match="views"):
        intra_angle_loss(torch.randn(2, 3), torch.randn(2, 1, 3))
