import math

import pytest
import torch

from graphspike_kd.spiking.surrogate import (
    CUDA_SURROGATES,
    ATan,
    Erf,
    FastSigmoid,
    Rectangle,
    Sigmoid,
    SpikeFunction,
    SurrogateFunction,
    Triangle,
    available_surrogates,
    get_surrogate,
)

# the primitive g whose derivative each surrogate uses (for autograd cross-checks of the smooth ones)
PRIMITIVES = {
    "sigmoid": lambda x, a: torch.sigmoid(a * x),
    "atan": lambda x, a: torch.atan(math.pi / 2 * a * x) / math.pi + 0.5,
    "fast_sigmoid": lambda x, a: x / (1 + a * x.abs()),
    "erf": lambda x, a: 0.5 * (1 + torch.erf(a * x)),
}


def test_registry_names_defaults_and_cuda_set():
    defaults = {"sigmoid": 4.0, "atan": 2.0, "rectangle": 1.0, "triangle": 1.0, "fast_sigmoid": 25.0,
                "erf": 2.0}
    assert available_surrogates() == sorted(defaults)
    for name, alpha in defaults.items():
        sg = get_surrogate(name)
        assert sg.name == name and sg.alpha == alpha
        assert sg.has_cuda_kernel == (name in CUDA_SURROGATES)
    assert not Erf().has_cuda_kernel and "erf" not in CUDA_SURROGATES
    with pytest.raises(ValueError, match="unknown surrogate 'nope'"):
        get_surrogate("nope")
    with pytest.raises(ValueError, match="alpha must be a positive"):
        Sigmoid(alpha=0.0)
    assert repr(ATan(alpha=3.0)) == "ATan(alpha=3.0)"


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_derivative_matches_autograd_of_primitive(name):
    x = torch.linspace(-2, 2, 101, dtype=torch.float64, requires_grad=True)
    alpha = 1.7
    (grad,) = torch.autograd.grad(PRIMITIVES[name](x, alpha).sum(), x)
    derivative = get_surrogate(name, alpha).derivative(x.detach())
    torch.testing.assert_close(derivative, grad, rtol=1e-10, atol=1e-12)


def test_piecewise_derivatives_closed_form():
    x = torch.tensor([-1.5, -0.26, -0.24, 0.0, 0.1, 0.24, 0.26, 0.49, 0.51], dtype=torch.float64)
    torch.testing.assert_close(Rectangle(alpha=2.0).derivative(x),
                               torch.tensor([0, 0, 2, 2, 2, 2, 0, 0, 0], dtype=torch.float64))
    expected = (4.0 * (0.5 - x.abs())).clamp(min=0)  # alpha^2 * max(0, 1/alpha - |x|), alpha = 2
    torch.testing.assert_close(Triangle(alpha=2.0).derivative(x), expected)


@pytest.mark.parametrize("name", available_surrogates())
def test_derivative_at_equals_shifted_derivative(name):
    sg = get_surrogate(name)
    h = torch.randn(257, generator=torch.Generator().manual_seed(1))
    out = torch.empty_like(h)
    res = sg.derivative_at(h, 0.3, out=out)
    assert res.data_ptr() == out.data_ptr()
    torch.testing.assert_close(res, sg.derivative(h - 0.3), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [Sigmoid, ATan, Rectangle, Triangle, FastSigmoid, Erf])
def test_spike_forward_is_heaviside_backward_is_derivative(cls):
    sg = cls()
    x = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0], requires_grad=True)
    s = sg(x)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]  # fires at x >= 0
    w = torch.arange(1.0, 6.0)
    (s * w).sum().backward()
    torch.testing.assert_close(x.grad, w * sg.derivative(x.detach()))
    assert isinstance(sg, SurrogateFunction)
    assert SpikeFunction.apply(x.detach(), sg).dtype == x.dtype
