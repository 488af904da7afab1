"""Tests of the core logit losses: hand-computed values, identities, properties, gradients, precision,
and input validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from graphspike_kd.common import available_losses, get_loss
from graphspike_kd.common.losses import (
    dist_loss,
    dist_terms,
    dkd_loss,
    dkd_terms,
    kd_loss,
    pearson_correlation,
    pld_loss,
    teacher_optimal_permutation,
)

# --------------------------------------------------------------------------------------------------
# strategies


@st.composite
def logit_pairs(draw, min_n=1, max_n=6, min_c=2, max_c=7, scale=5.0):
    n = draw(st.integers(min_n, max_n))
    c = draw(st.integers(min_c, max_c))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


def _rand(n, c, seed=0, dtype=torch.float64, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=dtype) * scale
    t = torch.randn(n, c, generator=g, dtype=dtype) * scale
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


# --------------------------------------------------------------------------------------------------
# hand-computed cases


def test_kd_hand_computed():
    # one sample, two classes, T = 1: p_t = softmax([0, ln 3]) = [1/4, 3/4], p_s = [1/2, 1/2]
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kd_loss(s, t, temperature=1.0).item() == pytest.approx(expected, rel=1e-12)
    # T = 2 scales logits by 1/2 and the loss by 4: p_t = softmax([0, ln 3 / 2]) = [1/(1+√3), √3/(1+√3)]
    pt = torch.tensor([1.0, math.sqrt(3.0)], dtype=torch.float64) / (1 + math.sqrt(3.0))
    expected2 = 4 * float((pt * (pt / 0.5).log()).sum())
    assert kd_loss(s, t, temperature=2.0).item() == pytest.approx(expected2, rel=1e-12)


def test_kd_batchmean_not_classmean():
    s, t, _ = _rand(5, 9, seed=1)
    ref = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
    assert torch.allclose(kd_loss(s, t), ref, atol=1e-12)


def test_dkd_hand_computed():
    # three classes, target 0, T = 1.
    s = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(2.0), 0.0, math.log(3.0)]], dtype=torch.float64)  # p_t = [2, 1, 3] / 6
    y = torch.tensor([0])
    b_t, b_s = [1 / 3, 2 / 3], [1 / 3, 2 / 3]
    tckd = sum(a * math.log(a / b) for a, b in zip(b_t, b_s, strict=True))  # = 0
    q_t, q_s = [1 / 4, 3 / 4], [1 / 2, 1 / 2]
    nckd = sum(a * math.log(a / b) for a, b in zip(q_t, q_s, strict=True))
    out = dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=1.0)
    assert out.item() == pytest.approx(1.0 * tckd + 8.0 * nckd, rel=1e-12)
    terms = dkd_terms(s, t, y, temperature=1.0)
    assert terms["tckd"].item() == pytest.approx(0.0, abs=1e-12)
    assert terms["nckd"].item() == pytest.approx(nckd, rel=1e-12)
    assert terms["teacher_target_prob"].item() == pytest.approx(1 / 3, rel=1e-12)


def test_dkd_binary_has_zero_nckd_and_reduces_to_weighted_kd():
    s, t, y = _rand(6, 2, seed=3)
    terms = dkd_terms(s, t, y, temperature=2.0)
    assert torch.all(terms["nckd"] == 0)
    out = dkd_loss(s, t, y, alpha=0.7, beta=8.0, temperature=2.0)
    assert torch.allclose(out, 0.7 * kd_loss(s, t, temperature=2.0), atol=1e-12)


def test_dist_hand_computed():
    # two samples, three classes, T = 1. Compute Pearson correlations by hand on the softmax outputs.
    s = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    ps, pt = s.softmax(1), t.softmax(1)

    def pearson(u, v):
        u = [a - sum(u) / len(u) for a in u]
        v = [a - sum(v) / len(v) for a in v]
        return sum(a * b for a, b in zip(u, v, strict=True)) / math.sqrt(
            sum(a * a for a in u) * sum(b * b for b in v)
        )

    rows = [pearson(ps[i].tolist(), pt[i].tolist()) for i in range(2)]
    cols = [pearson(ps[:, j].tolist(), pt[:, j].tolist()) for j in range(3)]
    expected = 1.0 * (1 - sum(rows) / 2) + 0.5 * (1 - sum(cols) / 3)
    assert dist_loss(s, t, beta=1.0, gamma=0.5).item() == pytest.approx(expected, rel=1e-10)


def test_pld_hand_computed():
    # C = 3, target 2, teacher logits [1, 3, 0] -> π* = [2, 1, 0]; student logits [a, b, c].
    s = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 3.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([2])
    assert teacher_optimal_permutation(t, y).tolist() == [[2, 1, 0]]
    w = t.softmax(1)[0]
    a, b, c = s[0].tolist()
    expected = (
        w[2].item() * (math.log(math.exp(c) + math.exp(b) + math.exp(a)) - c)
        + w[1].item() * (math.log(math.exp(b) + math.exp(a)) - b)
        + w[0].item() * 0.0  # last position: log(exp(a)) - a
    )
    assert pld_loss(s, t, y).item() == pytest.approx(expected, rel=1e-12)


def test_pld_teacher_ties_break_by_class_index():
    t = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert teacher_optimal_permutation(t, torch.tensor([0])).tolist() == [[0, 1, 2, 3]]
    assert teacher_optimal_permutation(t, torch.tensor([2])).tolist() == [[2, 1, 3, 0]]


def test_pld_wrong_teacher_downweights_the_ce_step():
    s, _, _ = _rand(1, 5, seed=4)
    y = torch.tensor([0])
    right = torch.tensor([[5.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    wrong = torch.tensor([[-5.0, 0.0, 0.0, 0.0, 5.0]], dtype=torch.float64)
    ce = F.cross_entropy(s, y).item()
    # The CE-like first step carries the teacher's probability of the true class.
    assert pld_loss(s, right, y).item() == pytest.approx(
        ce * right.softmax(1)[0, 0].item() + _pld_tail(s, right, y), rel=1e-10
    )
    assert right.softmax(1)[0, 0] > 0.9 > wrong.softmax(1)[0, 0]


def _pld_tail(s, t, y):
    """Σ_{k>=2} α_k (suffix-LSE − s) by the direct definition (one sample)."""
    perm = teacher_optimal_permutation(t, y)[0].tolist()
    w = t.softmax(1)[0]
    total = 0.0
    for k in range(1, len(perm)):
        rest = s[0, perm[k:]]
        total += w[perm[k]].item() * (torch.logsumexp(rest, 0).item() - s[0, perm[k]].item())
    return total


# --------------------------------------------------------------------------------------------------
# identities and properties (hypothesis)


def _pld_direct(s, t, y, temperature=1.0):
    """Suffix log-sum-exp form of PLD, written directly from the definition with a loop."""
    out = []
    for i in range(s.shape[0]):
        perm = teacher_optimal_permutation(t[i : i + 1], y[i : i + 1])[0]
        w = (t[i] / temperature).softmax(0)[perm]
        ss = s[i, perm]
        out.append(sum(w[k] * (torch.logsumexp(ss[k:], 0) - ss[k]) for k in range(len(perm))))
    return torch.stack(out).mean()


@settings(max_examples=40, deadline=None)
@given(logit_pairs(), st.sampled_from([0.5, 1.0, 4.0]))
def test_losses_nonnegative(pair, temperature):
    s, t, y = pair
    assert kd_loss(s, t, temperature=temperature) >= -1e-12
    assert dkd_loss(s, t, y, temperature=temperature) >= -1e-12
    assert pld_loss(s, t, y, temperature=temperature) >= -1e-12
    if s.shape[0] >= 2:
        assert dist_loss(s, t, temperature=temperature) >= -1e-9


@settings(max_examples=40, deadline=None)
@given(logit_pairs(min_n=2))
def test_zero_when_student_equals_teacher(pair):
    s, _, y = pair
    assert kd_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert dkd_loss(s, s.clone(), y).item() == pytest.approx(0.0, abs=1e-12)
    probs = s.softmax(1)
    # Pearson correlation of a zero-variance vector is 0 by convention, so require spread.
    assume(bool((probs.std(0) > 1e-3).all()) and bool((probs.std(1) > 1e-3).all()))
    assert dist_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(logit_pairs(), st.sampled_from([1.0, 4.0]))
def test_dkd_identity_kl_equals_tckd_plus_weighted_nckd(pair, temperature):
    s, t, y = pair
    terms = dkd_terms(s, t, y, temperature=temperature)
    kl = kd_loss(s, t, temperature=temperature, reduction="none") / temperature**2
    rhs = terms["tckd"] + (1 - terms["teacher_target_prob"]) * terms["nckd"]
    assert torch.allclose(kl, rhs, atol=1e-9, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(logit_pairs(), st.floats(-50, 50))
def test_pld_translation_invariant_in_student(pair, shift):
    s, t, y = pair
    assert torch.allclose(pld_loss(s + shift, t, y), pld_loss(s, t, y), atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(logit_pairs(), st.sampled_from([0.5, 1.0, 3.0]))
def test_pld_vectorised_equals_direct_suffix_form(pair, temperature):
    s, t, y = pair
    assert torch.allclose(pld_loss(s, t, y, temperature=temperature), _pld_direct(s, t, y, temperature))


@settings(max_examples=30, deadline=None)
@given(logit_pairs())
def test_pld_equals_cross_entropy_when_teacher_mass_on_target(pair):
    s, t, y = pair
    t = t.clone()
    t[torch.arange(len(y)), y] = 1e4  # softmax puts all mass on the target
    assert torch.allclose(pld_loss(s, t, y), F.cross_entropy(s, y), atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(logit_pairs())
def test_pld_equals_listmle_with_uniform_weights(pair):
    s, _, y = pair
    n, c = s.shape
    t = torch.zeros(n, c, dtype=s.dtype)  # uniform weights 1/C; π* = target, then class index order
    listmle = []
    for i in range(n):
        order = [int(y[i])] + [j for j in range(c) if j != int(y[i])]
        si = s[i, order]
        listmle.append(sum(torch.logsumexp(si[k:], 0) - si[k] for k in range(c)))
    assert torch.allclose(pld_loss(s, t, y), torch.stack(listmle).mean() / c, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    logit_pairs(min_n=2, min_c=3),
    st.floats(0.1, 10.0),
    st.floats(-3.0, 3.0),
    st.floats(0.1, 10.0),
    st.floats(-3.0, 3.0),
)
def test_dist_terms_invariant_to_positive_affine_maps(pair, a1, b1, a2, b2):
    s, t, _ = pair
    ps, pt = s.softmax(1), t.softmax(1)
    assume(bool((ps.std(0) > 1e-3).all() and (ps.std(1) > 1e-3).all()))
    assume(bool((pt.std(0) > 1e-3).all() and (pt.std(1) > 1e-3).all()))
    base = dist_terms(ps, pt)
    moved = dist_terms(a1 * ps + b1, a2 * pt + b2)
    for key in ("inter", "intra"):
        assert moved[key].item() == pytest.approx(base[key].item(), abs=1e-9)


def test_dist_row_term_is_per_sample_and_column_term_per_class():
    s, t, _ = _rand(4, 6, seed=5)
    ps, pt = s.softmax(1), t.softmax(1)
    rows = torch.stack([pearson_correlation(ps[i : i + 1], pt[i : i + 1], dim=1)[0] for i in range(4)])
    cols = torch.stack([pearson_correlation(ps[:, j : j + 1], pt[:, j : j + 1], dim=0)[0] for j in range(6)])
    terms = dist_terms(ps, pt)
    assert torch.allclose(terms["inter"], 1 - rows.mean())
    assert torch.allclose(terms["intra"], 1 - cols.mean())
    assert dist_loss(s, t, beta=1.0, gamma=0.0).item() == pytest.approx(terms["inter"].item(), rel=1e-12)


def test_pld_gradient_matches_closed_form():
    s, t, y = _rand(3, 6, seed=6)
    s.requires_grad_(True)
    pld_loss(s, t, y, reduction="sum").backward()
    perm = teacher_optimal_permutation(t, y)
    w = t.softmax(1)
    expected = torch.zeros_like(s)
    for i in range(3):
        for k in range(6):
            rest = perm[i, k:]
            sigma = torch.zeros(6, dtype=s.dtype)
            sigma[rest] = s.detach()[i, rest].softmax(0)
            sigma[perm[i, k]] -= 1.0
            expected[i] += w[i, perm[i, k]] * sigma
    assert torch.allclose(s.grad, expected, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# gradients, extreme magnitudes, precision


LOSS_CALLS = {
    "kd": lambda s, t, y: kd_loss(s, t),
    "dkd": lambda s, t, y: dkd_loss(s, t, y),
    "dist": lambda s, t, y: dist_loss(s, t),
    "pld": lambda s, t, y: pld_loss(s, t, y),
}


@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_gradcheck_float64(name):
    s, t, y = _rand(4, 5, seed=7)
    s.requires_grad_(True)
    t.requires_grad_(True)
    fn = LOSS_CALLS[name]
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, y), (s, t), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_finite_values_and_gradients_at_large_magnitude(name):
    g = torch.Generator().manual_seed(8)
    s = (torch.randn(8, 10, generator=g) * 1e4).requires_grad_(True)
    t = (torch.randn(8, 10, generator=g) * 1e4).requires_grad_(True)
    y = torch.randint(0, 10, (8,), generator=g)
    out = LOSS_CALLS[name](s, t, y)
    out.backward()
    assert torch.isfinite(out)
    assert torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()


# fp16 rounds the logits to ~3 significant digits (relative step 2^-11 ≈ 4.9e-4); bf16 to ~2
# (2^-8 ≈ 3.9e-3). The losses run in fp32 on the rounded logits, so the only error left is that
# rounding of the inputs: comparing with the fp32 loss *on the rounded inputs* must be tight, and with
# the unrounded inputs within a tolerance proportional to the input rounding.
@pytest.mark.parametrize("dtype,rel", [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)])
@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_half_precision_inputs_match_fp32(name, dtype, rel):
    s, t, y = _rand(16, 10, seed=9, dtype=torch.float32)
    fn = LOSS_CALLS[name]
    low = fn(s.to(dtype), t.to(dtype), y)
    assert low.dtype == torch.float32
    same_inputs = fn(s.to(dtype).float(), t.to(dtype).float(), y)
    assert low.item() == pytest.approx(same_inputs.item(), rel=1e-6, abs=1e-7)
    assert low.item() == pytest.approx(fn(s, t, y).item(), rel=rel, abs=rel * 1e-2)


# --------------------------------------------------------------------------------------------------
# input validation


def _ok():
    return torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 4])


@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_bad_inputs_raise_value_error(name):
    fn = LOSS_CALLS[name]
    s, t, y = _ok()
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        fn(s, torch.randn(4, 6), y)
    with pytest.raises(ValueError, match=r"2 dims.*\(4, 5, 1\)"):
        fn(s[..., None], t[..., None], y)
    with pytest.raises(ValueError, match="non-finite"):
        fn(s.masked_fill(torch.eye(4, 5).bool(), float("nan")), t, y)
    with pytest.raises(ValueError, match="non-finite"):
        fn(s, t.masked_fill(torch.eye(4, 5).bool(), float("inf")), y)
    with pytest.raises(ValueError, match="floating"):
        fn(s.long(), t.long(), y)


@pytest.mark.parametrize("name", ["dkd", "pld"])
def test_bad_targets_raise_value_error(name):
    fn = LOSS_CALLS[name]
    s, t, _ = _ok()
    with pytest.raises(ValueError, match=r"\[0, 5\).*max 5"):
        fn(s, t, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="min -1"):
        fn(s, t, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match=r"shape \[N\] = \[4\].*\(3,\)"):
        fn(s, t, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        fn(s, t, torch.tensor([0.0, 1.0, 2.0, 3.0]))


def test_other_bad_arguments():
    s, t, y = _ok()
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, t, temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        pld_loss(s, t, y, reduction="avg")
    with pytest.raises(ValueError, match="at least 2 samples"):
        dist_loss(s[:1], t[:1])
    assert torch.isfinite(dist_loss(s[:1], t[:1], gamma=0.0))
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(s[:, :1], t[:, :1], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty batch"):
        kd_loss(s[:0], t[:0])


# --------------------------------------------------------------------------------------------------
# registry and modules


def test_registry_names_and_modules_match_functions():
    assert {"kd", "dkd", "dist", "pld"} <= set(available_losses())
    s, t, y = _rand(5, 4, seed=10)
    assert torch.equal(get_loss("kd", temperature=2.0)(s, t), kd_loss(s, t, temperature=2.0))
    assert torch.equal(get_loss("dkd", beta=2.0)(s, t, y), dkd_loss(s, t, y, beta=2.0))
    assert torch.equal(get_loss("dist", temperature=4.0)(s, t), dist_loss(s, t, temperature=4.0))
    assert torch.equal(get_loss("PLD")(s, t, y), pld_loss(s, t, y))
    assert isinstance(get_loss("kd"), torch.nn.Module)
    assert "temperature=4.0" in repr(get_loss("kd"))


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown loss 'nope'.*dkd"):
        get_loss("nope")
    with pytest.raises(TypeError):
        get_loss("kd", tau=3)
    with pytest.raises(ValueError, match="needs the ground-truth target"):
        get_loss("dkd")(torch.randn(2, 3), torch.randn(2, 3))


def test_reductions():
    s, t, y = _rand(5, 4, seed=11)
    per = pld_loss(s, t, y, reduction="none")
    assert per.shape == (5,)
    assert torch.allclose(per.mean(), pld_loss(s, t, y))
    assert torch.allclose(per.sum(), pld_loss(s, t, y, reduction="sum"))


def test_pld_order_with_many_ties_matches_stable_reference():
    # Integer-valued teacher logits make ties the rule; the numpy CPU path must give the documented order.
    g = torch.Generator().manual_seed(12)
    t = torch.randint(-3, 4, (64, 50), generator=g).float()
    y = torch.randint(0, 50, (64,), generator=g)
    key = t.scatter(1, y[:, None], float("inf"))
    reference = torch.argsort(key, dim=1, descending=True, stable=True)
    assert torch.equal(teacher_optimal_permutation(t, y), reference)
    assert torch.equal(teacher_optimal_permutation(t.half(), y), reference)


# scale 5-10: rows span tens of units, where prefix sums and weight/prefix ratios cover many orders of
# magnitude (a cancellation-prone suffix sum once broke fp32 gradients here); 1e3: the exact fallback.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1.0, 5.0, 10.0, 1e3])
def test_pld_fast_and_exact_paths_agree(scale, dtype):
    from graphspike_kd.common.losses.pld import _per_sample_pld

    g = torch.Generator().manual_seed(13)
    s64 = torch.randn(16, 300, generator=g, dtype=torch.float64) * scale
    w64 = torch.softmax(torch.randn(16, 300, generator=g, dtype=torch.float64) * 3, 1)
    s, w = s64.to(dtype).requires_grad_(True), w64.to(dtype).requires_grad_(True)
    fast = _per_sample_pld(s, w)
    # reference, in float64 on the same (rounded) inputs: the values by torch.logcumsumexp, the student
    # gradient by its definition sum_k w_k (softmax of s over positions <= k, minus e_k), one softmax each.
    s_ref, w_ref = s.detach().double(), w.detach().double()
    choice = torch.logcumsumexp(s_ref, dim=1) - s_ref
    exact = (w_ref * choice).sum(dim=1)
    grad_ref = -w_ref.clone()
    for k in range(s_ref.shape[1]):
        grad_ref[:, : k + 1] += w_ref[:, k : k + 1] * torch.softmax(s_ref[:, : k + 1], dim=1)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert torch.allclose(fast.double(), exact, rtol=tol, atol=tol * scale)
    gs_fast, gw_fast = torch.autograd.grad(fast.sum(), (s, w))
    # The gradient evaluates exp(s_j - L_i); in fp32, s_j - L_i carries an absolute rounding error of
    # about eps * |s|, which exp turns into a relative error of the same size.
    grad_tol = tol if dtype == torch.float64 else tol + 2 * torch.finfo(dtype).eps * float(s_ref.abs().max())
    assert torch.allclose(gs_fast.double(), grad_ref, atol=grad_tol)
    assert torch.allclose(gw_fast.double(), choice, rtol=tol, atol=tol * scale)


def test_huge_finite_logits_whose_sum_overflows_are_accepted():
    # The fast finiteness check sums the logits; an overflowing sum of finite values must not be rejected.
    s = torch.full((4, 5), 3e38)
    t = torch.full((4, 5), -3e38)
    assert torch.isfinite(kd_loss(s, t))
