"""The logit losses refuse hyper-parameters they cannot compute with, reject a bad ``reduction`` when the
module is built, and stay finite (values and gradients) for finite logits up to the float32 maximum."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graphspike_kd.common import available_losses, get_loss
from graphspike_kd.common.losses import (
    angular_ensemble_target,
    dist_loss,
    dkd_loss,
    kd_loss,
    pld_loss,
    proximal_gradient_weights,
    sdpgo_loss,
    soft_target_loss,
    token_kd_loss,
)
from graphspike_kd.common.registry import _REGISTRY

F32_MAX = float(torch.finfo(torch.float32).max)
BAD_TEMPERATURES = [0.0, -1.0, math.inf, -math.inf, math.nan]
BAD_WEIGHTS = [math.nan, math.inf, -math.inf]

# extra constructor arguments a registered loss needs to be built at all
BUILD_ARGS = {"angular": {"in_features": 4, "num_classes": 3}, "sdpgo": {"experimental": True}}


def _s_t_y(n=4, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)
    return s, t, torch.randint(0, c, (n,), generator=g)


# ------------------------------------------------------------------------------------------------------
# hyper-parameters


def test_every_registered_module_with_a_reduction_rejects_a_bad_one_at_build_time():
    available_losses()
    with_reduction = [n for n, cls in _REGISTRY.items() if "reduction" in inspect.signature(cls).parameters]
    assert {"kd", "dkd", "pld", "sdpgo", "token_kd", "adaspec"} <= set(with_reduction)
    for name in with_reduction:
        with pytest.raises(ValueError, match=r"reduction must be one of .*'bogus'"):
            get_loss(name, reduction="bogus", **BUILD_ARGS.get(name, {}))
        get_loss(name, reduction="sum", **BUILD_ARGS.get(name, {}))  # a good one still builds


def test_every_registered_module_with_a_temperature_rejects_a_bad_one_at_build_time():
    available_losses()
    for name, cls in _REGISTRY.items():
        temps = [p for p in inspect.signature(cls).parameters if p.endswith("temperature")]
        for param in temps:
            for bad in BAD_TEMPERATURES:
                with pytest.raises(ValueError, match=f"{param} must be finite and > 0, got {bad}"):
                    get_loss(name, **{param: bad}, **BUILD_ARGS.get(name, {}))


WEIGHTS = {
    "dkd": ["alpha", "beta"],
    "dist": ["beta", "gamma"],
    "sdpgo": ["lam", "beta"],
    "angular": ["feat_inter_weight", "feat_intra_weight", "logit_inter_weight", "logit_intra_weight",
                "view_ce_weight", "kd_weight", "view_weight", "teacher_weight"],
}


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_modules_reject_non_finite_weights(name):
    for param in WEIGHTS[name]:
        for bad in BAD_WEIGHTS:
            with pytest.raises(ValueError, match=f"{param} must be"):
                get_loss(name, **{param: bad}, **BUILD_ARGS.get(name, {}))


def test_functions_reject_bad_temperatures_and_weights():
    s, t, y = _s_t_y()
    tok_s, tok_t = s[None], t[None]
    calls = {
        "kd_loss": lambda **kw: kd_loss(s, t, **kw),
        "dkd_loss": lambda **kw: dkd_loss(s, t, y, **kw),
        "dist_loss": lambda **kw: dist_loss(s, t, **kw),
        "pld_loss": lambda **kw: pld_loss(s, t, y, **kw),
        "sdpgo_loss": lambda **kw: sdpgo_loss(s, t, y, experimental=True, **kw),
        "token_kd_loss": lambda **kw: token_kd_loss(tok_s, tok_t, **kw),
        "soft_target_loss": lambda **kw: soft_target_loss(s, t, **kw),
    }
    for fn in calls.values():
        for bad in BAD_TEMPERATURES:
            with pytest.raises(ValueError, match=f"temperature must be finite and > 0, got {bad}"):
                fn(temperature=bad)
    for bad in BAD_WEIGHTS:
        for param in ("alpha", "beta"):
            with pytest.raises(ValueError, match=f"dkd_loss: {param} must be finite, got {bad}"):
                dkd_loss(s, t, y, **{param: bad})
        for param in ("beta", "gamma"):
            with pytest.raises(ValueError, match=f"dist_loss: {param} must be finite, got {bad}"):
                dist_loss(s, t, **{param: bad})
        for param in ("lam", "beta"):
            with pytest.raises(ValueError, match=f"{param} must be finite, got {bad}"):
                sdpgo_loss(s, t, y, experimental=True, **{param: bad})
        with pytest.raises(ValueError, match=f"lam must be finite, got {bad}"):
            proximal_gradient_weights(s, y, lam=bad)
        with pytest.raises(ValueError, match=f"view_weight must be finite, got {bad}"):
            angular_ensemble_target(t, torch.randn(4, 3, 5), view_weight=bad)
    with pytest.raises(ValueError, match="temperature must be a real number"):
        kd_loss(s, t, temperature="4")
    for fn in (lambda: kd_loss(s, t, reduction="avg"), lambda: dkd_loss(s, t, y, reduction="avg"),
               lambda: token_kd_loss(tok_s, tok_t, reduction="avg")):
        with pytest.raises(ValueError, match="reduction must be one of"):
            fn()


def test_sdpgo_nan_lam_no_longer_drops_the_kd_term():
    s, t, y = _s_t_y()
    with pytest.raises(ValueError, match="lam must be finite, got nan"):
        get_loss("sdpgo", experimental=True, lam=math.nan)


# ------------------------------------------------------------------------------------------------------
# huge finite logits


CALLS = {
    "kd": lambda s, t, y, temp: kd_loss(s, t, temperature=temp, reduction="none"),
    "dkd": lambda s, t, y, temp: dkd_loss(s, t, y, temperature=temp, reduction="none"),
    "pld": lambda s, t, y, temp: pld_loss(s, t, y, temperature=temp, reduction="none"),
    "token_kd": lambda s, t, y, temp: token_kd_loss(s[None], t[None], temperature=temp, reduction="none")[0],
    "dist": lambda s, t, y, temp: dist_loss(s, t, temperature=temp, gamma=1.0 if s.shape[0] > 1 else 0.0),
}

huge = st.floats(-F32_MAX, F32_MAX, width=32, allow_nan=False, allow_infinity=False)
moderate = st.floats(-10.0, 10.0, width=32)


@st.composite
def huge_batches(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    element = draw(st.sampled_from([huge, st.one_of(huge, moderate)]))
    s = draw(st.lists(st.lists(element, min_size=c, max_size=c), min_size=n, max_size=n))
    t = draw(st.lists(st.lists(element, min_size=c, max_size=c), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n))
    return torch.tensor(s), torch.tensor(t), torch.tensor(y)


@pytest.mark.parametrize("name", sorted(CALLS))
@settings(max_examples=80, deadline=None)
@given(batch=huge_batches(), temperature=st.sampled_from([0.5, 1.0, 4.0]))
# a value just above the float32 maximum (by less than half an ulp) that rounds to it
@example(batch=(torch.tensor([[0.0, 0.0, 2.8476e29, -F32_MAX]]), torch.tensor([[0.0, 0.0, 0.0, 11.0]]),
                torch.tensor([0])), temperature=0.5)
def test_huge_logits_give_finite_gradients_and_the_float64_value(name, batch, temperature):
    s, t, y = batch
    s = s.requires_grad_(True)
    per = CALLS[name](s, t, y, temperature)
    (grad,) = torch.autograd.grad(per.sum(), s)
    assert torch.isfinite(grad).all()
    assert not torch.isnan(per).any()
    # Reference: the same loss on the same values in float64, where nothing overflows for these inputs.
    ref = CALLS[name](s.detach().double(), t.double(), y, temperature).numpy()
    # representable: rounds to a finite float32 (up to half an ulp above the float32 maximum rounds down)
    with np.errstate(over="ignore"):
        representable = np.isfinite(ref.astype(np.float32))
    assert np.array_equal(torch.isfinite(per).numpy(), representable)
    scale = (float(s.detach().abs().max()) + float(t.abs().max())) / temperature * max(1.0, temperature**2)
    got = per.detach().double().numpy()[representable]
    assert np.allclose(got, ref[representable], rtol=1e-5, atol=1e-5 * scale * s.shape[1])


def test_the_reported_overflow_cases():
    big = torch.tensor([[3.0e38, -3.0e38, 1.0e38], [3.4e38, 3.4e38, -3.4e38]])
    y = torch.tensor([0, 2])
    for name, fn in CALLS.items():
        for temperature in (0.5, 1.0, 4.0):
            s = big.clone().requires_grad_(True)
            out = fn(s, big, y, temperature)  # student == teacher: every loss but PLD is exactly 0
            (grad,) = torch.autograd.grad(out.sum(), s)
            assert torch.isfinite(out).all() and torch.isfinite(grad).all(), (name, temperature)
            if name not in ("pld", "dist"):
                assert torch.equal(out, torch.zeros_like(out)), (name, out)
    for temperature in (1e30, 1e-30):
        s, t, y = _s_t_y()
        assert torch.isfinite(kd_loss(s, t, temperature=temperature))
        assert torch.isfinite(dkd_loss(s, t, y, temperature=temperature))
