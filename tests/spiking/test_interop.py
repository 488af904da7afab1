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


# ----------------------------------------------------------------------------------- drop-in surrogates
def test_neurons_accept_spikingjelly_and_snntorch_surrogates_and_the_alias():
    lif = LIF(surrogate_function=sj_surrogate.ATan(alpha=3.0))
    assert type(lif.surrogate) is ATan and lif.surrogate.alpha == 3.0
    plif = PLIF(surrogate=sj_surrogate.Sigmoid(alpha=5.0))
    assert type(plif.surrogate) is Sigmoid and plif.surrogate.alpha == 5.0
    assert type(IF(surrogate_function=sj_surrogate.Erf(alpha=1.5)).surrogate) is Erf
    assert LIF(surrogate_function=sj_surrogate.Rect(alpha=0.5)).surrogate.name == "rectangle"
    fast = LIF(surrogate=snn_surrogate.fast_sigmoid(slope=10))
    assert type(fast.surrogate) is FastSigmoid and fast.surrogate.alpha == 10.0
    assert LIF(surrogate_function=snn_surrogate.atan(alpha=2.5)).surrogate.alpha == 2.5
    assert type(LIF(surrogate=snn_surrogate.sigmoid(slope=7)).surrogate) is Sigmoid
    ours = ATan(alpha=1.5)
    assert LIF(surrogate_function=ours).surrogate is ours
    # same spikes and gradients as the neuron built with our surrogate
    x = _x()
    s1, g1 = _spikes_and_grad(LIF(surrogate_function=sj_surrogate.ATan(alpha=3.0)), x)
    s2, g2 = _spikes_and_grad(LIF(surrogate=ATan(alpha=3.0)), x)
    assert torch.equal(s1, s2) and torch.equal(g1, g2)


def test_unknown_surrogates_are_refused_by_name():
    with pytest.raises(ValueError, match="spikingjelly surrogate PiecewiseQuadratic has no graphspike_kd"):
        LIF(surrogate_function=sj_surrogate.PiecewiseQuadratic())
    with pytest.raises(ValueError, match="non-spiking mode"):
        LIF(surrogate=sj_surrogate.Sigmoid(spiking=False))
    with pytest.raises(ValueError, match=r"snntorch surrogate triangular.* has no graphspike_kd equivalent"):
        PLIF(surrogate=snn_surrogate.triangular())
    with pytest.raises(TypeError, match="got builtin_function_or_method"):
        IF(surrogate_function=torch.sigmoid)
    with pytest.raises(TypeError, match="not both"):
        LIF(surrogate=ATan(), surrogate_function=ATan())


# ------------------------------------------------------------------------------ whole-network conversion
def _sj_net(step_mode):
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import layer

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        layer.Linear(17, 24),
        sj_neuron.LIFNode(tau=2.0, surrogate_function=sj_surrogate.ATan()),
        torch.nn.Sequential(layer.Linear(24, 24), sj_neuron.ParametricLIFNode(init_tau=3.0, v_reset=None)),
        layer.Linear(24, 10),
        sj_neuron.IFNode(v_reset=-0.1, detach_reset=True, surrogate_function=sj_surrogate.Sigmoid(alpha=3.0)),
    )
    sj_functional.set_step_mode(net, step_mode)
    return net


def _calls(net, xs, step_mode, resets):
    """Outputs of successive calls (state carried), reset_net where ``resets`` says; then one backward."""
    from graphspike_kd.spiking.neurons import reset_net

    outs = []
    for x, reset in zip(xs, resets, strict=True):
        if reset:
            reset_net(net)
        outs.append(net(x) if step_mode == "m" else torch.stack([net(xt) for xt in x]))
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("resets", [(False, False, False), (False, True, False)])
def test_spikingjelly_network_converted_same_over_successive_calls(step_mode, resets):
    import copy

    from graphspike_kd.spiking.interop import from_spikingjelly

    sj_net = _sj_net(step_mode)
    ours = from_spikingjelly(copy.deepcopy(sj_net))  # one call, the whole network
    kinds = [type(m).__name__ for m in ours.modules()]
    assert {"LIF", "PLIF", "IF"} <= set(kinds) and not any(k.endswith("Node") for k in kinds)
    gen = torch.Generator().manual_seed(4)
    xs = [torch.rand(6, 5, 17, generator=gen) * 2.0 for _ in range(3)]
    sj_out, sj_grads = _calls(sj_net, xs, step_mode, resets)
    our_out, our_grads = _calls(ours, xs, step_mode, resets)
    for a, b in zip(our_out, sj_out, strict=True):
        assert torch.equal(a, b)
    assert all(0 < o.mean() < 1 for o in our_out)
    # the state is carried: without a reset, the second call differs from a fresh network on the same input
    fresh_out, _ = _calls(from_spikingjelly(copy.deepcopy(_sj_net(step_mode))), xs[1:2], step_mode, (False,))
    assert torch.equal(fresh_out[0], our_out[1]) == resets[1]
    assert sj_grads.keys() == our_grads.keys()
    for name in sj_grads:
        torch.testing.assert_close(our_grads[name], sj_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_reset_net_resets_spikingjelly_and_snntorch_neurons():
    from graphspike_kd.spiking.neurons import reset_net

    sj_net = _sj_net("m")
    leaky = snntorch.Leaky(beta=0.5, init_hidden=True, reset_mechanism="zero")
    net = torch.nn.ModuleDict({"sj": sj_net, "leaky": leaky, "ours": LIF(keep_state=True)})
    sj_net(torch.rand(4, 2, 17) * 3)
    leaky(torch.rand(2, 10) * 0.5)
    net["ours"](torch.rand(4, 2, 10))
    assert isinstance(sj_net[1].v, torch.Tensor) and isinstance(sj_net[4].v, torch.Tensor)
    assert leaky.mem.abs().sum() > 0 and net["ours"].v is not None
    reset_net(net)
    assert sj_net[1].v == 0.0 and sj_net[2][1].v == 0.0 and sj_net[4].v == -0.1  # spikingjelly's reset values
    assert leaky.mem.abs().sum() == 0 and net["ours"].v is None


def test_snntorch_leaky_in_a_network_converted_where_exact():
    import copy

    from graphspike_kd.spiking.interop import convert_neurons

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(17, 20),
        snntorch.Leaky(beta=0.75, init_hidden=True, reset_mechanism="zero",
                       spike_grad=snn_surrogate.fast_sigmoid(slope=10)),
        torch.nn.Linear(20, 8),
        snntorch.Leaky(beta=0.8, init_hidden=True),  # subtract with a leak: no exact mapping, stays
        torch.nn.Linear(8, 8),
        snntorch.Leaky(beta=1.0, init_hidden=True, reset_mechanism="subtract"),
    )
    ours = copy.deepcopy(net)
    with pytest.warns(RuntimeWarning, match=r"left these neurons unconverted: 3 .*subtracts the threshold"):
        convert_neurons(ours)
    assert isinstance(ours[1], LIF) and isinstance(ours[5], IF) and isinstance(ours[3], snntorch.Leaky)
    assert ours[1].step_mode == "s"
    x = torch.rand(12, 5, 17, generator=torch.Generator().manual_seed(2)) * 2

    def run(model):
        from graphspike_kd.spiking.neurons import reset_net

        reset_net(model)
        out = torch.stack([model(xt) for xt in x])
        out2 = torch.stack([model(xt) for xt in x])  # state carried into a second pass, as in snntorch
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().add(out2.sum()).backward()
        return out, out2, [p.grad.clone() for p in model.parameters()]

    ref, theirs = run(net), run(ours)
    assert torch.equal(ref[0], theirs[0]) and torch.equal(ref[1], theirs[1]) and 0 < ref[0].mean() < 1
    for a, b in zip(theirs[2], ref[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_converting_a_running_spikingjelly_neuron_carries_its_membrane():
    node = sj_neuron.LIFNode(tau=2.0, step_mode="m")
    x = _x()
    node(x[:10])  # the node now holds a membrane
    ours = from_spikingjelly(node)
    assert ours.keep_state and torch.equal(ours.v, node.v)
    assert torch.equal(ours(x[10:]), node(x[10:]))
    fresh = from_spikingjelly(sj_neuron.LIFNode(tau=2.0, step_mode="m"), keep_state=False)
    assert not fresh.keep_state and torch.equal(fresh(x[:5]), fresh(x[:5]))
