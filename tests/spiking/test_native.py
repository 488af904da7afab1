"""The native CPU backend (``backend="cpp"``) against the torch path; builds the library once (seconds)."""

import itertools

import pytest
import torch

from graphspike_kd.spiking import native
from graphspike_kd.spiking.functional import neuron_multistep_torch
from graphspike_kd.spiking.neurons import LIF, PLIF
from graphspike_kd.spiking.surrogate import available_surrogates


@pytest.fixture(scope="module")
def built():
    ok, why = native.cpp_status()
    if not ok and "needs a C++ compiler" in why:
        pytest.skip(why)  # only a machine without any C++ compiler skips; a failing build fails
    assert ok, why
    return why


def _grads(fn, x, v0, w, gs, gv, **kw):
    s, v = fn(x, v0, torch.sigmoid(w), **kw)
    return (s.detach(), v.detach(), *torch.autograd.grad((s * gs).sum() + (v * gv).sum(), (x, v0, w)))


CONFIGS = list(itertools.product([None, -0.2], [False, True], [True, False]))


@pytest.mark.parametrize("v_reset,detach_reset,decay_input", CONFIGS)
def test_cpp_equals_torch_path(built, v_reset, detach_reset, decay_input):
    gen = torch.Generator().manual_seed(0)
    cases = [(sg, T, torch.float32) for sg in available_surrogates() for T in (1, 7)]
    cases.append(("atan", 16, torch.float64))
    for surrogate, T, dtype in cases:
        shape = (T, 2, 1031)  # odd N, more than one 1024-neuron block
        x = (torch.rand(shape, generator=gen, dtype=dtype) * 2.4 - 0.2).requires_grad_()
        v0 = (torch.rand(shape[1:], generator=gen, dtype=dtype) - 0.1).requires_grad_()
        w = torch.tensor(0.3, dtype=dtype, requires_grad=True)
        gs = torch.randn(shape, generator=gen, dtype=dtype)
        gv = torch.randn(shape[1:], generator=gen, dtype=dtype)
        kw = dict(v_threshold=1.0, v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset,
                  surrogate_name=surrogate)
        ours = _grads(native.neuron_multistep_cpp, x, v0, w, gs, gv, **kw)
        ref = _grads(neuron_multistep_torch, x, v0, w, gs, gv, **kw)
        assert torch.equal(ours[0], ref[0]), (surrogate, T, dtype)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        for a, b in zip(ours[1:], ref[1:], strict=True):
            torch.testing.assert_close(a, b, **tol)


def test_cpp_neuron_backend_and_multithreading(built):
    x = torch.rand(8, 4, 3000, generator=torch.Generator().manual_seed(1)) * 1.5
    ref = PLIF(v_reset=0.0)(x)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(PLIF(v_reset=0.0, backend="cpp")(x), ref)
    finally:
        torch.set_num_threads(old)
    single = LIF(backend="cpp", step_mode="s")
    assert torch.equal(torch.stack([single(xt) for xt in x]), LIF()(x))


def test_cpp_errors(built, monkeypatch):
    with pytest.raises(RuntimeError, match="float32/float64 CPU tensors, got torch.float16"):
        LIF(backend="cpp")(torch.rand(3, 4).half())
    monkeypatch.setenv("CXX", "no-such-compiler-gsk")
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler: 'no-such-compiler-gsk' was not found"):
        native.build_native_library()
