"""Strong2Weak / Weak2Strong and variants: hand-built logits, hand-computed values, gradient routing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from graphspike_kd.spiking.timestep_kd import (
    METHODS,
    TimestepKDLoss,
    strong2weak_loss,
    strong_weak_steps,
    timestep_confidence,
    timestep_kd_loss,
    weak2strong_loss,
)


def _kl_by_hand(teacher, student, alpha=2.0):
    """sum_c p_t (log p_t - log p_s), batch mean, on softmax(./alpha), with plain Python math."""
    total = 0.0
    for t_row, s_row in zip(teacher.tolist(), student.tolist(), strict=True):
        zt = [math.exp(v / alpha) for v in t_row]
        zs = [math.exp(v / alpha) for v in s_row]
        pt = [v / sum(zt) for v in zt]
        ps = [v / sum(zs) for v in zs]
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps, strict=True))
    return total / len(teacher)


@pytest.fixture
def outputs():
    # T = 3, N = 2, C = 3: step 1 confident, step 0 flat (weakest), step 2 in between
    return torch.tensor(
        [
            [[0.1, 0.0, -0.1], [0.0, 0.2, 0.1]],
            [[4.0, 0.0, -1.0], [0.0, 5.0, 0.5]],
            [[1.0, 0.0, 0.0], [0.0, 1.5, 0.0]],
        ],
        dtype=torch.float64,
    )


def test_confidence_and_strong_weak_choice(outputs):
    con = timestep_confidence(outputs)
    by_hand = outputs.softmax(-1).amax(-1).mean(1)
    torch.testing.assert_close(con, by_hand)
    assert strong_weak_steps(outputs) == (1, 0)
    # batch-level, not per-sample: sample 0 alone would call step 0 strong; the batch mean picks step 1
    mixed = torch.tensor([[[9.0, 0, 0], [0, 0, 0.1]], [[3.0, 0, 0], [0, 6.0, 0]], [[0.0, 0, 0], [0, 0.2, 0]]])
    assert strong_weak_steps(mixed) == (1, 2)
    assert strong_weak_steps(outputs, metric="entropy") == (1, 0)
    assert strong_weak_steps(outputs, metric="margin") == (1, 0)
    assert strong_weak_steps(outputs[:1]) == (0, 0)


def test_s2w_w2s_values_by_hand(outputs):
    target = torch.tensor([0, 1])
    ce = F.cross_entropy(outputs.mean(0), target).item()
    s2w = strong2weak_loss(outputs, target)
    assert s2w["t_strong"].item() == 1 and s2w["t_weak"].item() == 0
    assert s2w["ce"].item() == pytest.approx(ce, rel=1e-12)
    assert s2w["kd"].item() == pytest.approx(_kl_by_hand(outputs[1], outputs[0]), rel=1e-10)
    assert s2w["loss"].item() == pytest.approx(ce + s2w["kd"].item(), rel=1e-12)
    w2s = weak2strong_loss(outputs, target, weight=0.5)
    assert w2s["kd"].item() == pytest.approx(0.5 * _kl_by_hand(outputs[0], outputs[1]), rel=1e-10)
    t2 = strong2weak_loss(outputs, target, temperature_squared=True)
    assert t2["kd"].item() == pytest.approx(4 * s2w["kd"].item(), rel=1e-12)
    sim = timestep_kd_loss(outputs, target, "simultaneous", weight=1.0, weight_w2s=2.0)
    assert sim["kd"].item() == pytest.approx(s2w["kd"].item() + 2 * 2 * w2s["kd"].item(), rel=1e-10)


def test_variants_values_by_hand(outputs):
    target = torch.tensor([0, 1])
    o0, o1, o2 = outputs  # confidence order: 1 > 2 > 0
    cases = {
        "s2w_cascade": (_kl_by_hand(o1, o2) + _kl_by_hand(o2, o0)) / 2,
        "w2s_cascade": (_kl_by_hand(o2, o1) + _kl_by_hand(o0, o2)) / 2,
        "s2w_ensemble_teacher": _kl_by_hand((o1 + o2) / 2, o0),
        "w2s_ensemble_teacher": _kl_by_hand((o0 + o2) / 2, o1),
        "s2w_ensemble_student": (_kl_by_hand(o1, o0) + _kl_by_hand(o1, o2)) / 2,
        "w2s_ensemble_student": (_kl_by_hand(o0, o1) + _kl_by_hand(o0, o2)) / 2,
    }
    for method, expected in cases.items():
        got = timestep_kd_loss(outputs, target, method)["kd"].item()
        assert got == pytest.approx(expected, rel=1e-10), method


@pytest.mark.parametrize("method", METHODS)
def test_identical_steps_and_single_step_give_zero_kd(method):
    o = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 3])
    assert timestep_kd_loss(o.expand(3, 4, 5), target, method)["kd"].item() == pytest.approx(0.0, abs=1e-7)
    single = timestep_kd_loss(o, target, method)
    assert single["kd"].item() == 0.0 and single["loss"].item() == pytest.approx(single["ce"].item())


def _kd_grad(outputs, method, detach):
    x = outputs.clone().requires_grad_(True)
    timestep_kd_loss(x, torch.tensor([0, 1]), method, detach_teacher=detach)["kd"].backward()
    return x.grad.abs().sum(dim=(1, 2))


def test_gradients_flow_only_where_they_should(outputs):
    g = _kd_grad(outputs, "s2w", True)
    assert g[0] > 0 and g[1] == 0 and g[2] == 0  # only the weak student
    g = _kd_grad(outputs, "s2w", False)
    assert g[0] > 0 and g[1] > 0 and g[2] == 0  # teacher too when not detached
    g = _kd_grad(outputs, "w2s", True)
    assert g[1] > 0 and g[0] == 0 and g[2] == 0
    g = _kd_grad(outputs, "s2w_ensemble_teacher", True)
    assert g[0] > 0 and g[1] == 0 and g[2] == 0
    g = _kd_grad(outputs, "s2w_ensemble_teacher", False)
    assert (g > 0).all()
    g = _kd_grad(outputs, "s2w_ensemble_student", True)
    assert g[1] == 0 and g[0] > 0 and g[2] > 0
    g = _kd_grad(outputs, "s2w_cascade", True)  # students: 2 (from 1) and 0 (from 2)
    assert g[1] == 0 and g[0] > 0 and g[2] > 0
    x = outputs.clone().requires_grad_(True)
    strong2weak_loss(x, torch.tensor([0, 1]))["ce"].backward()  # CE reaches every step equally
    torch.testing.assert_close(x.grad[0], x.grad[1])


def test_module_half_precision_and_errors(outputs):
    loss = TimestepKDLoss("w2s_cascade")
    out = loss(outputs.to(torch.bfloat16), torch.tensor([0, 1]))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert "w2s_cascade" in repr(loss)
    with pytest.raises(ValueError, match=r"\[T, N, C\]"):
        timestep_kd_loss(outputs[0], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="method must be one of"):
        timestep_kd_loss(outputs, torch.tensor([0, 1]), "s2s")
    with pytest.raises(ValueError, match=r"target must have shape \[N\] = \[2\]"):
        timestep_kd_loss(outputs, torch.tensor([0, 1, 2]))
