import pytest
import torch

from graphspike_kd.spiking.interop import from_snntorch, from_spikingjelly, to_snntorch, to_spikingjelly
from graphspike_kd.spiking.neurons import IF, LIF, PLIF
from graphspike_kd.spiking.surrogate import ATan, Erf, FastSigmoid, Sigmoid, Triangle

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")  # CI installs it (--no-deps)
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
snntorch = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_surrogate  # noqa: E402

T, SHAPE = 24, (3, 17)


def _x(seed=0):
    return torch.rand((T, *SHAPE), generator=torch.Generator().manual_seed(seed)) * 1.3


def _weights(seed=1):
    return torch.randn((T, *SHAPE), generator=torch.Generator().manual_seed(seed))


def _spikes_and_grad(run, x):
    x = x.clone().requires_grad_()
    s = run(x)
    (s * _weights()).sum().backward()
    return s.detach(), x.grad


@pytest.mark.parametrize("make", [
    lambda: sj_neuron.LIFNode(tau=2.0, step_mode="m"),
    lambda: sj_neuron.LIFNode(tau=3.5, decay_input=False, v_reset=None, step_mode="m",
                              surrogate_function=sj_surrogate.ATan(alpha=3.0)),
    lambda: sj_neuron.LIFNode(tau=1.5, v_reset=-0.2, detach_reset=True, step_mode="m",
                              surrogate_function=sj_surrogate.Erf()),
    lambda: sj_neuron.ParametricLIFNode(init_tau=3.0, v_reset=None, step_mode="m",
                                        surrogate_function=sj_surrogate.Rect(alpha=0.5)),
    lambda: sj_neuron.IFNode(step_mode="m"),
])
def test_spikingjelly_round_trip_same_spikes_and_gradients(make):
    node = make()
    ours = from_spikingjelly(node)
    s_sj, g_sj = _spikes_and_grad(node, _x())
    s_us, g_us = _spikes_and_grad(ours, _x())
    assert torch.equal(s_sj, s_us) and 0 < s_us.mean() < 1
    torch.testing.assert_close(g_us, g_sj, rtol=1e-4, atol=1e-5)
    if isinstance(ours, PLIF):
        torch.testing.assert_close(ours.w.grad, node.w.grad, rtol=1e-4, atol=1e-5)
    back = to_spikingjelly(ours)
    assert type(back) is type(node)
    assert (back.v_threshold, back.v_reset, back.detach_reset) == (node.v_threshold, node.v_reset,
                                                                   node.detach_reset)
    assert type(back.surrogate_function) is type(node.surrogate_function)
    assert back.surrogate_function.alpha == node.surrogate_function.alpha
    if isinstance(ours, LIF):
        assert (back.tau, back.decay_input) == (node.tau, node.decay_input)


def test_spikingjelly_unsupported_surrogate_and_neuron():
    with pytest.raises(ValueError, match="PiecewiseQuadratic has no graphspike_kd equivalent"):
        from_spikingjelly(sj_neuron.LIFNode(surrogate_function=sj_surrogate.PiecewiseQuadratic()))
    with pytest.raises(ValueError, match="no spikingjelly equivalent"):
        to_spikingjelly(LIF(surrogate=Triangle()))
    with pytest.raises(ValueError, match="tau > 1"):
        to_spikingjelly(LIF(tau=1.0))


def _run_snntorch(leaky):
    def run(x):
        mem = torch.zeros(SHAPE)
        spikes = []
        for xt in x:
            s, mem = leaky(xt, mem)
            spikes.append(s)
        return torch.stack(spikes)

    return run


@pytest.mark.parametrize("make", [
    lambda: snntorch.Leaky(beta=0.75, reset_mechanism="zero"),
    lambda: snntorch.Leaky(beta=0.5, threshold=0.8, reset_mechanism="zero",
                           spike_grad=snn_surrogate.fast_sigmoid(slope=10)),
    lambda: snntorch.Leaky(beta=0.9, reset_mechanism="zero", spike_grad=snn_surrogate.sigmoid(slope=5),
                           learn_beta=True),
    lambda: snntorch.Leaky(beta=1.0, reset_mechanism="subtract"),
])
def test_snntorch_same_spikes_and_gradients(make):
    leaky = make()
    ours = from_snntorch(leaky, step_mode="m")
    s_sn, g_sn = _spikes_and_grad(_run_snntorch(leaky), _x())
    s_us, g_us = _spikes_and_grad(ours, _x())
    assert torch.equal(s_sn, s_us) and 0 < s_us.mean() < 1
    torch.testing.assert_close(g_us, g_sn, rtol=1e-4, atol=1e-5)
    back = to_snntorch(ours)
    assert back.reset_mechanism == leaky.reset_mechanism
    torch.testing.assert_close(back.beta.detach().float(), leaky.beta.detach().float())
    s_back, _ = _spikes_and_grad(_run_snntorch(back), _x())
    assert torch.equal(s_back, s_sn)


def test_snntorch_subtract_with_leak_is_refused_unless_not_strict():
    leaky = snntorch.Leaky(beta=0.8)
    with pytest.raises(ValueError, match="subtracts the threshold after the decay"):
        from_snntorch(leaky)
    nearest = from_snntorch(leaky, strict=False, step_mode="m")
    assert isinstance(nearest, LIF) and nearest.v_reset is None and not nearest.decay_input
    s_sn, _ = _spikes_and_grad(_run_snntorch(leaky), _x())
    s_us, _ = _spikes_and_grad(nearest, _x())
    assert not torch.equal(s_sn, s_us)  # documented: the nearest neuron is not the same neuron


def test_from_snntorch_maps_types_and_default_surrogate():
    assert isinstance(from_snntorch(snntorch.Leaky(beta=1.0, reset_mechanism="zero")), IF)
    ours = from_snntorch(snntorch.Leaky(beta=0.5, reset_mechanism="zero"))
    assert isinstance(ours, LIF) and ours.tau == 2.0 and ours.detach_reset and ours.v_reset == 0.0
    assert isinstance(ours.surrogate, ATan) and ours.surrogate.alpha == 2.0


@pytest.mark.parametrize("neuron,match", [
    (LIF(decay_input=True, v_reset=0.0, detach_reset=True), "decay_input=False"),
    (LIF(decay_input=False, v_reset=None, detach_reset=True), "hard reset to 0"),
    (LIF(decay_input=False, v_reset=0.0, detach_reset=False), "detach_reset=True"),
    (LIF(decay_input=False, v_reset=0.0, detach_reset=True, surrogate=Erf()), "no snntorch equivalent"),
    (IF(v_reset=0.5, detach_reset=True, surrogate=FastSigmoid()), "resets to 0 only"),
])
def test_to_snntorch_refuses_inexact_mappings(neuron, match):
    with pytest.raises(ValueError, match=match):
        to_snntorch(neuron)


def test_to_snntorch_plif_is_learnable_beta():
    leaky = to_snntorch(PLIF(init_tau=4.0, decay_input=False, v_reset=0.0, detach_reset=True,
                             surrogate=Sigmoid(alpha=5.0)))
    assert isinstance(leaky.beta, torch.nn.Parameter)
    assert abs(float(leaky.beta.detach()) - 0.75) < 1e-6
