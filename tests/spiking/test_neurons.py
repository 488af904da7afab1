import logging

import pytest
import torch
from torch import nn

from graphspike_kd.spiking import functional, native
from graphspike_kd.spiking.functional import neuron_multistep_torch
from graphspike_kd.spiking.neurons import IF, LIF, PLIF, reset_net
from graphspike_kd.spiking.surrogate import ATan, Erf


def _x(T=8, shape=(3, 5), seed=0):
    return torch.rand((T, *shape), generator=torch.Generator().manual_seed(seed)) * 1.5


def test_lif_defaults_match_contract():
    lif = LIF()
    assert (lif.tau, lif.v_threshold, lif.v_reset) == (2.0, 1.0, None)
    assert (lif.decay_input, lif.detach_reset) == (True, False)
    assert (lif.step_mode, lif.backend, lif.keep_state) == ("m", "torch", False)
    assert lif.surrogate.name == "sigmoid" and lif.surrogate.alpha == 4.0
    assert "\n" not in repr(lif) and repr(lif).startswith("LIF(tau=2.0, ")
    assert "\n" not in repr(PLIF()) and "\n" not in repr(IF())


@pytest.mark.parametrize("make,decay", [
    (lambda: LIF(tau=3.0, v_reset=-0.5, decay_input=False), lambda m: torch.tensor(1 / 3.0)),
    (lambda: IF(v_reset=None), lambda m: torch.tensor(0.0)),
    (lambda: PLIF(init_tau=4.0, surrogate=ATan()), lambda m: torch.sigmoid(m.w)),
])
def test_multistep_equals_functional(make, decay):
    neuron = make()
    x = _x()
    spikes = neuron(x)
    ref, v_last = neuron_multistep_torch(
        x, torch.full(x.shape[1:], neuron.v_rest), decay(neuron).detach(), v_threshold=neuron.v_threshold,
        v_reset=neuron.v_reset, decay_input=neuron.decay_input, detach_reset=neuron.detach_reset,
        surrogate_name=neuron.surrogate.name, alpha=neuron.surrogate.alpha)
    assert torch.equal(spikes, ref) and torch.equal(neuron.v, v_last)
    assert 0 < spikes.mean() < 1


def test_multistep_starts_fresh_unless_keep_state():
    x = _x(T=10)
    lif = LIF()
    assert torch.equal(lif(x), lif(x))  # no state carried by default
    kept = LIF(keep_state=True)
    first, second = kept(x[:4]), kept(x[4:])
    assert torch.equal(torch.cat([first, second]), LIF()(x))
    kept.reset()
    assert kept.v is None
    assert torch.equal(kept(x[:4]), first)


def test_single_step_equals_multistep_and_backprops():
    x = _x(T=6).requires_grad_()
    multi = PLIF(v_reset=0.0)
    single = PLIF(v_reset=0.0, step_mode="s")
    s_m = multi(x)
    s_s = torch.stack([single(xt) for xt in x])
    assert torch.equal(s_m, s_s)
    (g_m_x, g_m_w) = torch.autograd.grad((s_m * torch.arange(6.0).view(6, 1, 1)).sum(), (x, multi.w))
    (g_s_x, g_s_w) = torch.autograd.grad((s_s * torch.arange(6.0).view(6, 1, 1)).sum(), (x, single.w))
    torch.testing.assert_close(g_m_x, g_s_x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_m_w, g_s_w, rtol=1e-5, atol=1e-6)


def test_state_shape_mismatch_names_shapes():
    lif = LIF(step_mode="s")
    lif(torch.rand(3, 5))
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(4, 5\).*reset\(\)"):
        lif(torch.rand(4, 5))


def test_detach_state_cuts_history():
    lif = LIF(step_mode="s")
    x = torch.rand(2, 3, requires_grad=True)
    lif(x)
    assert lif.v.requires_grad
    lif.detach_state()
    assert not lif.v.requires_grad
    lif(torch.rand(2, 3)).sum()


def test_reset_net_touches_only_the_given_model():
    net_a = nn.Sequential(nn.Linear(4, 4), LIF(step_mode="s"), nn.Sequential(IF(step_mode="s")))
    net_b = nn.Sequential(LIF(step_mode="s"))
    x = torch.rand(2, 4)
    net_a(x)
    net_b(x)
    assert reset_net(net_a) is net_a
    assert net_a[1].v is None and net_a[2][0].v is None
    assert net_b[0].v is not None
    with pytest.raises(TypeError):
        reset_net("not a module")


def test_plif_parameter_and_tau():
    plif = PLIF(init_tau=3.0)
    assert abs(plif.tau - 3.0) < 1e-6
    assert [n for n, _ in plif.named_parameters()] == ["w"]
    plif(_x()).sum().backward()
    assert plif.w.grad is not None and plif.w.grad.abs() > 0
    with torch.no_grad():
        plif.w.add_(1.0)
    plif.reset_parameters()
    assert abs(plif.tau - 3.0) < 1e-6


def test_float64_input_runs_in_float64():
    x = _x().double().requires_grad_()
    s = PLIF()(x)
    assert s.dtype == torch.float64
    s.sum().backward()
    assert x.grad.dtype == torch.float64


@pytest.mark.parametrize("kwargs,match", [
    (dict(tau=0.5), "tau must be"),
    (dict(v_reset=1.5), "v_reset must be"),
    (dict(step_mode="x"), "step_mode"),
    (dict(backend="triton"), "backend must be one of"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIF(**kwargs)
    with pytest.raises(ValueError, match="init_tau"):
        PLIF(init_tau=1.0)
    with pytest.raises(TypeError, match="SurrogateFunction"):
        LIF(surrogate=torch.sigmoid)


def test_cupy_backend_on_cpu_raises_with_reason():
    with pytest.raises(RuntimeError, match=r"cannot run: .*CUDA tensors, got a tensor on cpu"):
        LIF(backend="cupy")(_x())


def test_auto_backend_on_cpu_picks_cpp_and_says_so_once(caplog):
    functional._already_said.clear()
    ok, why = native.cpp_status()
    if not ok and "needs a C++ compiler" in why:
        pytest.skip(why)
    assert ok, why
    with caplog.at_level(logging.INFO, logger="graphspike_kd.spiking.functional"):
        a = LIF(backend="auto")(_x())
        LIF(backend="auto")(_x())
    messages = [r.getMessage() for r in caplog.records if "backend='auto'" in r.getMessage()]
    assert len(messages) == 1 and "chose 'cpp'" in messages[0]
    assert LIF(backend="auto").resolve_backend(_x()) == "cpp"
    assert LIF(backend="auto").resolve_backend(_x().half()) == "torch"  # no native float16 kernel
    assert torch.equal(a, LIF()(_x()))


def test_auto_backend_falls_back_to_torch_with_the_reason(monkeypatch, caplog):
    functional._already_said.clear()
    monkeypatch.setattr(functional, "_cpp_build_reason", lambda: "no compiler here")
    with caplog.at_level(logging.INFO, logger="graphspike_kd.spiking.functional"):
        assert LIF(backend="auto").resolve_backend(_x()) == "torch"
        a = LIF(backend="auto")(_x())
    assert any("chose 'torch'" in r.getMessage() and "no compiler here" in r.getMessage()
               for r in caplog.records)
    assert torch.equal(a, LIF()(_x()))
    with pytest.raises(RuntimeError, match="backend='cpp'\\) cannot run: no compiler here"):
        LIF(backend="cpp")(_x())


def test_kernels_status_reason_is_passed_through(monkeypatch):
    monkeypatch.setattr(functional, "cupy_status", lambda: (False, "NVRTC: cannot open libnvrtc.so.12"))
    assert functional._cupy_reason() == "CuPy kernels cannot run: NVRTC: cannot open libnvrtc.so.12"
    monkeypatch.setattr(functional, "cupy_status", lambda: (True, "cupy 13"))
    assert functional._cupy_reason() == ""


@pytest.mark.gpu
def test_cuda_surrogate_without_kernel_raises_for_cupy():
    x = _x().cuda()
    with pytest.raises(RuntimeError, match="has no CUDA kernel"):
        LIF(backend="cupy", surrogate=Erf())(x)
    with pytest.raises(RuntimeError, match="float32 and float16"):
        LIF(backend="cupy")(x.double())


@pytest.mark.gpu
@pytest.mark.parametrize("make", [lambda b: LIF(backend=b, v_reset=0.0), lambda b: PLIF(backend=b),
                                  lambda b: IF(backend=b, detach_reset=True)])
def test_cupy_neuron_equals_torch_neuron_on_cuda(make):
    from graphspike_kd.spiking.kernels import cupy_status

    ok, why = cupy_status()
    if not ok:
        pytest.fail(f"CUDA is present but the CuPy kernels cannot run: {why}")
    x = _x(T=16, shape=(33, 65)).cuda()
    results = []
    for backend in ("torch", "cupy"):
        neuron = make(backend).cuda()
        xr = x.clone().requires_grad_()
        s = neuron(xr)
        (s * torch.linspace(-1, 1, 16, device="cuda").view(16, 1, 1)).sum().backward()
        grads = [xr.grad] + [p.grad for p in neuron.parameters()]
        results.append((s, neuron.v, grads))
    (s1, v1, g1), (s2, v2, g2) = results
    assert torch.equal(s1, s2)
    torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
