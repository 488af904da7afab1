"""soft_target_loss: the formulas it replaced in graph/pkd.py, spiking/esd.py and spiking/timestep_kd.py
give bit-identical values and gradients (frozen copies below), and it stays finite at huge logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from graphspike_kd.common.losses import kd_loss, soft_target_loss
from graphspike_kd.graph.pkd import distillation_loss, ngs_rewards
from graphspike_kd.spiking.esd import esd_loss, reliable_teacher
from graphspike_kd.spiking.timestep_kd import _kl, timestep_kd_loss

F32_MAX = float(torch.finfo(torch.float32).max)


# ------------------------------------------------------------------------------------------------------
# frozen copies of the formulas soft_target_loss replaced (kept verbatim as the reference)


def old_pkd_distillation_loss(student_logits, teacher_probs, mask):
    logp = F.log_softmax(student_logits.float(), dim=1)
    return -(teacher_probs[mask].float() * logp[mask]).sum(1).mean()


def old_ngs_dl(student_logits, teacher_probs):
    logp = F.log_softmax(student_logits.float(), dim=1)
    return -(teacher_probs.float() * logp).sum(1)


def old_kd_loss(s, t, temperature=4.0):
    log_p_s = F.log_softmax(s / temperature, dim=1)
    log_p_t = F.log_softmax(t / temperature, dim=1)
    per_sample = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)
    return (per_sample * temperature**2).mean()


def old_timestep_kl(student, teacher, temperature, detach_teacher, t2):
    if detach_teacher:
        teacher = teacher.detach()
    value = old_kd_loss(student, teacher, temperature=temperature)
    return value if t2 else value / temperature**2


def old_esd_loss(z, target, *, T, alpha=1.0, beta=0.3, temperature=3.0):
    teacher, valid = reliable_teacher(z, target)
    zf = z.float()
    ce = sum(F.cross_entropy(zi, target) for zi in zf)
    if bool(valid.any()):
        log_p_t = F.log_softmax(teacher[valid].float() / temperature, -1)
        p_t = log_p_t.exp()
        sd = sum((p_t * (log_p_t - F.log_softmax(zi[valid] / temperature, -1))).sum(-1).mean()
                 for zi in zf) * temperature**2
    else:
        sd = zf.sum() * 0.0
    return (alpha * ce + beta * sd) / T, sd


def _grads(fn, *inputs):
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out.sum(), [x for x in leaves], allow_unused=True)
    return out.detach(), grads


def _same(a, b):
    assert a[0].dtype == b[0].dtype and torch.equal(a[0], b[0])
    for ga, gb in zip(a[1], b[1], strict=True):
        assert (ga is None and gb is None) or torch.equal(ga, gb)


# ------------------------------------------------------------------------------------------------------
# bit-identity with the replaced code


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(7, 3), (64, 10), (300, 40)])
def test_pkd_terms_bit_identical(seed, shape):
    g = torch.Generator().manual_seed(seed)
    n, c = shape
    s = torch.randn(n, c, generator=g) * 3
    p = torch.softmax(torch.randn(n, c, generator=g) * 2, 1)
    mask = torch.rand(n, generator=g) < 0.4
    mask[0] = True
    _same(_grads(lambda a: distillation_loss(a, p, mask), s),
          _grads(lambda a: old_pkd_distillation_loss(a, p, mask), s))
    _same(_grads(lambda a: ngs_rewards(a, p, torch.full((n,), -1), eta=1.0) * -1.0, s),
          _grads(lambda a: old_ngs_dl(a, p), s))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 3.0, 0.7])
def test_kd_loss_bit_identical(seed, temperature):
    g = torch.Generator().manual_seed(seed)
    for dtype in (torch.float32, torch.float64):
        s = torch.randn(33, 17, generator=g, dtype=dtype) * 4
        t = torch.randn(33, 17, generator=g, dtype=dtype) * 4
        _same(_grads(lambda a, b: kd_loss(a, b, temperature=temperature), s, t),
              _grads(lambda a, b: old_kd_loss(a, b, temperature=temperature), s, t))


# The old code divided the T^2 back out of kd_loss; that is exact when T^2 is a power of two (the default
# T = 2 and T = 1), and otherwise within a rounding of it.
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 0.5])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("t2", [True, False])
def test_timestep_kl_bit_identical(seed, temperature, detach, t2):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(16, 10, generator=g) * 3
    t = torch.randn(16, 10, generator=g) * 3
    _same(_grads(lambda a, b: _kl(a, b, temperature, detach, t2), s, t),
          _grads(lambda a, b: old_timestep_kl(a, b, temperature, detach, t2), s, t))


def test_timestep_kl_other_temperatures_within_rounding():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3
    new, old = _kl(s, t, 3.0, True, False), old_timestep_kl(s, t, 3.0, True, False)
    assert torch.allclose(new, old, rtol=4 * torch.finfo(torch.float32).eps, atol=0)


def test_timestep_kd_loss_bit_identical_every_method():
    from graphspike_kd.spiking import timestep_kd as module

    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 12, 6, generator=g) * 2
    y = torch.randint(0, 6, (12,), generator=g)
    for method in module.METHODS:
        new = _grads(lambda a, m=method: timestep_kd_loss(a, y, m)["loss"], x)
        original = module._kl
        module._kl = old_timestep_kl
        try:
            old = _grads(lambda a, m=method: timestep_kd_loss(a, y, m)["loss"], x)
        finally:
            module._kl = original
        _same(new, old)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_esd_loss_bit_identical(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(4, 64, 10, generator=g, dtype=dtype) * 2
    y = torch.randint(0, 10, (64,), generator=g)
    new = _grads(lambda a: esd_loss(a, y, T=4, beta=0.3, temperature=3.0)["loss"], z)
    old = _grads(lambda a: old_esd_loss(a, y, T=4, beta=0.3, temperature=3.0)[0], z)
    _same(new, old)
    assert torch.equal(esd_loss(z, y, T=4)["sd"], old_esd_loss(z, y, T=4)[1])


# ------------------------------------------------------------------------------------------------------
# the equations, against an independent float64 reference


def _reference(s, t, target_type, temperature, t2_scale, form, mask, weight, reduction, class_weight=None):
    s, t = s.double().numpy(), t.double().numpy()
    z = s / temperature
    log_p = z - z.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    if target_type == "logits":
        zt = t / temperature
        log_q = zt - zt.max(1, keepdims=True)
        log_q = log_q - np.log(np.exp(log_q).sum(1, keepdims=True))
        q = np.exp(log_q)
    elif target_type == "log_probs":
        log_q, q = t, np.exp(t)
    else:
        q = t
        with np.errstate(divide="ignore"):
            log_q = np.log(q)
    v = np.ones_like(q) if class_weight is None else class_weight.double().numpy()
    ent = (v * np.where(q > 0, q * np.where(q > 0, log_q, 0), 0)).sum(1)
    per = -(v * q * log_p).sum(1) + (ent if form == "kl" else 0.0)
    per = per * (temperature**2 if t2_scale else 1.0)
    if weight is not None:
        per = per * weight.double().numpy()
    if mask is not None:
        per = per[mask.numpy()]
    return {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 6),
    c=st.integers(1, 7),
    target_type=st.sampled_from(["logits", "probs", "log_probs"]),
    temperature=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    t2_scale=st.booleans(),
    form=st.sampled_from(["kl", "ce"]),
    masked=st.booleans(),
    weighted=st.booleans(),
    class_weighted=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_matches_float64_reference(seed, n, c, target_type, temperature, t2_scale, form, masked, weighted,
                                   class_weighted, reduction):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    if target_type == "probs":
        t = torch.softmax(t, 1)
    elif target_type == "log_probs":
        t = torch.log_softmax(t, 1)
    mask = None
    if masked:
        mask = torch.rand(n, generator=g) < 0.5
        mask[0] = True
    weight = torch.rand(n, generator=g, dtype=torch.float64) if weighted else None
    class_weight = torch.rand(n, c, generator=g, dtype=torch.float64) * 2 if class_weighted else None
    out = soft_target_loss(s, t, target_type=target_type, temperature=temperature, t2_scale=t2_scale,
                           form=form, mask=mask, weight=weight, class_weight=class_weight,
                           reduction=reduction)
    ref = _reference(s, t, target_type, temperature, t2_scale, form, mask, weight, reduction, class_weight)
    assert np.allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target_type", ["logits", "probs", "log_probs"])
@pytest.mark.parametrize("form", ["kl", "ce"])
def test_class_weight_at_huge_logits_matches_float64_reference(target_type, form):
    # float32 logits up to the float32 maximum, rows led by a far-ahead class the teacher also favours
    # (the exact loss is representable); the direct path overflows, the careful one must agree with the
    # float64 reference computed on the same values.
    g = torch.Generator().manual_seed(11)
    top = torch.randint(0, 5, (6, 1), generator=g)
    s = (torch.randn(6, 5, generator=g) * 1e37).scatter(1, top, F32_MAX)
    if target_type == "logits":
        t = (torch.randn(6, 5, generator=g) * 1e37).scatter(1, top, F32_MAX)
    else:
        t = torch.randn(6, 5, generator=g).scatter(1, top, 30.0)
        t = torch.softmax(t, 1) if target_type == "probs" else torch.log_softmax(t, 1)
    v = torch.rand(6, 5, generator=g) * 2
    s.requires_grad_(True)
    out = soft_target_loss(s, t, target_type=target_type, temperature=0.5, form=form, class_weight=v,
                           reduction="none")
    ref = _reference(s.detach(), t, target_type, 0.5, False, form, None, None, "none", v)
    assert bool(torch.isfinite(out).all())
    assert np.allclose(out.detach().double().numpy(), ref, rtol=1e-5, atol=0)
    out.sum().backward()
    assert bool(torch.isfinite(s.grad).all())


def test_class_weight_ones_and_mask_selection():
    g = torch.Generator().manual_seed(12)
    s = torch.randn(5, 4, generator=g, dtype=torch.float64)
    t = torch.randn(5, 4, generator=g, dtype=torch.float64)
    plain = soft_target_loss(s, t, temperature=2.0, reduction="none")
    ones = soft_target_loss(s, t, temperature=2.0, class_weight=torch.ones(5, 4, dtype=torch.float64),
                            reduction="none")
    assert torch.allclose(plain, ones, rtol=1e-13, atol=1e-15)
    v = torch.rand(5, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([True, False, True, False, True])
    masked = soft_target_loss(s, t, class_weight=v, mask=mask, reduction="none")
    assert torch.equal(masked, soft_target_loss(s[mask], t[mask], class_weight=v[mask], reduction="none"))
    with pytest.raises(ValueError, match=r"class_weight must be a tensor of shape \(5, 4\), got \(5,\)"):
        soft_target_loss(s, t, class_weight=torch.ones(5))


def test_kl_and_ce_differ_by_teacher_entropy_and_share_the_gradient():
    g = torch.Generator().manual_seed(1)
    s = (torch.randn(8, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    q = torch.softmax(torch.randn(8, 5, generator=g, dtype=torch.float64), 1)
    kl = soft_target_loss(s, q, target_type="probs", reduction="none")
    ce = soft_target_loss(s, q, target_type="probs", form="ce", reduction="none")
    assert torch.allclose(ce - kl, -(q * q.log()).sum(1))
    g_kl, = torch.autograd.grad(kl.sum(), s)
    g_ce, = torch.autograd.grad(ce.sum(), s)
    assert torch.allclose(g_kl, g_ce)
    assert torch.allclose(g_kl, torch.softmax(s, 1) - q)


def test_gradcheck_teacher_logits_and_probs():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(4, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    t = torch.randn(4, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.rand(4, generator=g, dtype=torch.float64)
    mask = torch.tensor([True, False, True, True])
    assert torch.autograd.gradcheck(
        lambda a, b: soft_target_loss(a, b, temperature=2.0, t2_scale=True, mask=mask, weight=w), (s, t)
    )


def test_bad_arguments_raise():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    for temperature in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=f"temperature must be finite and > 0, got {temperature}"):
            soft_target_loss(s, t, temperature=temperature)
    with pytest.raises(ValueError, match="target_type"):
        soft_target_loss(s, t, target_type="prob")
    with pytest.raises(ValueError, match="form"):
        soft_target_loss(s, t, form="js")
    with pytest.raises(ValueError, match="reduction"):
        soft_target_loss(s, t, reduction="avg")
    with pytest.raises(ValueError, match="mask selects no row"):
        soft_target_loss(s, t, mask=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(3,\)"):
        soft_target_loss(s, t, mask=torch.ones(3))
    with pytest.raises(ValueError, match=r"weight must be a tensor of shape \(3,\)"):
        soft_target_loss(s, t, weight=torch.ones(4))
    with pytest.raises(ValueError, match="non-finite"):
        soft_target_loss(s, t.masked_fill(torch.eye(3, 4).bool(), math.nan))


# ------------------------------------------------------------------------------------------------------
# huge finite logits


def _wide_reference_rows(s, t, temperature, t2_scale):
    """Per-row T^2-scaled KL in float64 from max-shifted logits (no overflow for fp32 inputs)."""
    s, t = s.double().numpy(), t.double().numpy()

    def log_softmax(x):
        z = (x - x.max(1, keepdims=True)) / temperature
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    lp, lq = log_softmax(s), log_softmax(t)
    q = np.exp(lq)
    scale = temperature**2 if t2_scale else 1.0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(q > 0, lq - lp, 0.0)
        per = (q * diff).sum(1)
        # d per_i / d t_ic = scale / T * q_ic (log q_ic - log p_ic - KL_i)
        grad_t = scale / temperature * q * (diff - per[:, None])
    return per * scale, grad_t


huge = st.floats(-F32_MAX, F32_MAX, width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(1, 4).flatmap(
        lambda n: st.integers(1, 5).flatmap(
            lambda c: st.tuples(
                st.lists(st.lists(huge, min_size=c, max_size=c), min_size=n, max_size=n),
                st.lists(st.lists(huge, min_size=c, max_size=c), min_size=n, max_size=n),
            )
        )
    ),
    temperature=st.sampled_from([1e-3, 0.5, 1.0, 4.0, 1e3]),
    t2_scale=st.booleans(),
)
def test_huge_logits_finite_gradients_and_exact_values(rows, temperature, t2_scale):
    s = torch.tensor(rows[0], dtype=torch.float32).requires_grad_(True)
    t = torch.tensor(rows[1], dtype=torch.float32).requires_grad_(True)
    per = soft_target_loss(s, t, temperature=temperature, t2_scale=t2_scale, reduction="none")
    gs, gt = torch.autograd.grad(per.sum(), (s, t))
    assert torch.isfinite(gs).all()  # the student gradient is (T or 1/T) (p - q): always finite
    ref, ref_grad_t = _wide_reference_rows(s.detach(), t.detach(), temperature, t2_scale)
    assert not torch.isnan(per).any()
    representable = ref <= F32_MAX
    # The fp32 rows are finite exactly where the exact value is representable, and agree with it.
    assert np.array_equal(torch.isfinite(per).numpy(), representable)
    # fp32 carries each softened logit to a relative eps, so a KL of near-equal rows (a difference of
    # log-probabilities) is known to about eps * (1 + max |z|) per class
    max_z = (float(s.detach().abs().max()) + float(t.detach().abs().max())) / temperature
    scale = temperature**2 if t2_scale else 1.0
    atol = 8 * torch.finfo(torch.float32).eps * (1 + max_z) * s.shape[1] * scale
    assert np.allclose(per.detach().double().numpy()[representable], ref[representable], rtol=1e-5, atol=atol)
    # The teacher gradient, q (log q - log p - KL) scale / T, is finite wherever the exact one is
    # representable (and its row's loss too).
    ok = np.isfinite(ref_grad_t) & (np.abs(ref_grad_t) <= F32_MAX / 2) & representable[:, None]
    assert torch.isfinite(gt).numpy()[ok].all()


def test_kd_at_the_float32_extremes():
    s = torch.tensor([[F32_MAX, -F32_MAX, 0.0], [F32_MAX, F32_MAX, -F32_MAX]], requires_grad=True)
    t = torch.tensor([[F32_MAX, -F32_MAX, 1.0], [F32_MAX, F32_MAX / 2, -F32_MAX]], requires_grad=True)
    for temperature in (0.25, 1.0, 4.0):
        loss = kd_loss(s, t, temperature=temperature, reduction="none")
        gs, gt = torch.autograd.grad(loss.sum(), (s, t))
        # row 0: both put all mass on class 0; row 1: q = (1, 0, 0), p = (1/2, 1/2, 0)
        expected = torch.tensor([0.0, math.log(2.0) * temperature**2])
        assert torch.allclose(loss.detach(), expected, rtol=1e-6, atol=0)
        assert torch.isfinite(gs).all() and torch.isfinite(gt).all()
        assert torch.allclose(gs, temperature * torch.tensor([[0.0, 0, 0], [-0.5, 0.5, 0]]), atol=1e-6)
    # same argmax, same shape: the exact KL is 0
    assert kd_loss(s, s.detach() * 1.0, temperature=0.5).item() == 0.0


def test_extreme_temperatures_give_finite_values():
    s, t = torch.randn(4, 6), torch.randn(4, 6)
    for temperature in (1e-30, 1e30):
        assert torch.isfinite(kd_loss(s, t, temperature=temperature))
