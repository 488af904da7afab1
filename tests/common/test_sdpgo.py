"""SDPGO (experimental reconstruction): proximal weights, loss, history buffer, experimental gate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from graphspike_kd.common import get_loss
from graphspike_kd.common.losses import PredictionHistory, SDPGOLoss, proximal_gradient_weights, sdpgo_loss


def test_experimental_flag_required():
    with pytest.raises(ValueError, match="experimental=True"):
        get_loss("sdpgo")
    with pytest.raises(ValueError, match="experimental=True"):
        SDPGOLoss(experimental=False)
    with pytest.raises(ValueError, match="experimental=True"):
        sdpgo_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]))
    assert isinstance(get_loss("sdpgo", experimental=True), SDPGOLoss)


def test_proximal_weights_hand_case():
    # logits 0 over 2 classes: softmax = [.5, .5], target 0 -> g = [-.5, .5], |g| = .5
    w = proximal_gradient_weights(torch.zeros(1, 2), torch.tensor([0]), lam=0.1)
    assert torch.allclose(w, torch.ones(1, 2))
    # three classes, logits [log 2, 0, 0] -> p = [.5, .25, .25], y = 1 -> |g| = [.5, .75, .25]
    z = torch.tensor([[torch.log(torch.tensor(2.0)), 0.0, 0.0]])
    w = proximal_gradient_weights(z, torch.tensor([1]), lam=0.25)
    # shrink: [.25, .5, 0] -> mean 0.25 -> [1, 2, 0]
    assert torch.allclose(w, torch.tensor([[1.0, 2.0, 0.0]]), atol=1e-6)
    # everything under the threshold -> zero row
    assert torch.all(proximal_gradient_weights(torch.zeros(1, 2), torch.tensor([0]), lam=0.6) == 0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(2, 6), st.floats(0.0, 0.3), st.integers(0, 1000))
def test_weights_nonnegative_mean_one(n, c, lam, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    w = proximal_gradient_weights(z, y, lam=lam)
    assert torch.all(w >= 0)
    m = w.mean(1)
    assert torch.all((m - 1).abs() < 1e-5) or torch.all((m == 0) | ((m - 1).abs() < 1e-5))


def test_loss_reduces_to_ce_when_history_equals_current_and_hand_value():
    z = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    # KL(p || p) = 0 whatever the weights -> CE only
    out = sdpgo_loss(z, z, y, experimental=True)
    assert torch.allclose(out, F.cross_entropy(z, y), atol=1e-6)
    # lam = 0: weights = |g| / mean|g|; compare to a direct formula
    h = torch.randn(4, 5)
    g = torch.softmax(z, 1) - F.one_hot(y, 5)
    w = g.abs() / g.abs().mean(1, keepdim=True)
    p = torch.softmax(h / 2, 1)
    kd = (w * p * (p.log() - F.log_softmax(z / 2, 1))).sum(1)
    ref = (F.cross_entropy(z, y, reduction="none") + 0.5 * 4 * kd).mean()
    got = sdpgo_loss(z, h, y, lam=0.0, beta=0.5, temperature=2.0, experimental=True)
    assert torch.allclose(got, ref, atol=1e-5)


def test_history_gradient_and_buffer():
    hist = PredictionHistory(10, 3, momentum=0.5)
    idx = torch.tensor([1, 4])
    cur = torch.randn(2, 3)
    assert torch.equal(hist.get(idx, cur), cur)  # unseen -> current logits
    hist.update(idx, cur)
    assert torch.equal(hist.get(idx, torch.zeros(2, 3)), cur)
    hist.update(idx, torch.zeros(2, 3))
    assert torch.allclose(hist.get(idx, torch.zeros(2, 3)), 0.5 * cur)
    with pytest.raises(ValueError, match="indices"):
        hist.update(torch.tensor([10]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="momentum"):
        PredictionHistory(3, 2, momentum=1.0)
    z = torch.randn(2, 3, requires_grad=True)
    h = torch.randn(2, 3, requires_grad=True)
    get_loss("sdpgo", experimental=True)(z, h, torch.tensor([0, 2])).backward()
    assert z.grad is not None and h.grad is None  # the history is detached


def test_bad_input():
    crit = get_loss("sdpgo", experimental=True)
    with pytest.raises(ValueError, match="target"):
        crit(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="shape"):
        crit(torch.randn(2, 3), torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="lam"):
        get_loss("sdpgo", experimental=True, lam=-1.0)


def _frozen_sdpgo_kd(s, h, w, temperature):
    """SDPGO's class-weighted KL as written before sharing the soft-target core."""
    log_q = F.log_softmax(s / temperature, dim=1)
    log_p_hist = F.log_softmax(h.detach() / temperature, dim=1)
    return (w * log_p_hist.exp() * (log_p_hist - log_q)).sum(dim=1)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kd_term_bit_identical_to_the_direct_formula(temperature, dtype):
    from graphspike_kd.common.losses import sdpgo_terms

    g = torch.Generator().manual_seed(5)
    s = (torch.randn(16, 30, generator=g, dtype=dtype) * 3).requires_grad_(True)
    h = torch.randn(16, 30, generator=g, dtype=dtype) * 3
    y = torch.randint(0, 30, (16,), generator=g)
    terms = sdpgo_terms(s, h, y, lam=0.01, temperature=temperature, experimental=True)
    old = _frozen_sdpgo_kd(s, h, terms["weights"], temperature)
    assert torch.equal(terms["kd"], old)
    (g_new,) = torch.autograd.grad(terms["kd"].sum(), s)
    (g_old,) = torch.autograd.grad(old.sum(), s)
    assert torch.equal(g_new, g_old)


def test_kd_term_finite_for_huge_logits():
    from graphspike_kd.common.losses import sdpgo_terms

    big = torch.finfo(torch.float32).max
    g = torch.Generator().manual_seed(6)
    # rows agree on a far-ahead top class: the KL is near 0, yet z / T overflows
    top = torch.randint(0, 10, (8, 1), generator=g)
    s = (torch.randn(8, 10, generator=g) * 1e37).scatter(1, top, big).requires_grad_(True)
    h = (torch.randn(8, 10, generator=g) * 1e37).scatter(1, top, big)
    y = torch.randint(0, 10, (8,), generator=g)
    terms = sdpgo_terms(s, h, y, lam=0.01, temperature=0.5, experimental=True)
    with torch.no_grad():
        assert not bool(torch.isfinite(_frozen_sdpgo_kd(s, h, terms["weights"], 0.5)).all())
    assert bool(torch.isfinite(terms["kd"]).all())
    assert bool((terms["kd"] >= 0).all())
    terms["kd"].sum().backward()
    assert bool(torch.isfinite(s.grad).all())
