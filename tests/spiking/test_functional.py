import itertools
import zlib

import pytest
import torch

from graphspike_kd.spiking.functional import neuron_multistep_torch
from graphspike_kd.spiking.surrogate import available_surrogates
from tests.spiking._reference import reference_multistep

SHAPE = (3, 5, 7)  # odd sizes, N = 105


def _inputs(T, gen, dtype=torch.float32):
    x = (torch.rand((T, *SHAPE), generator=gen, dtype=dtype) * 2.4 - 0.2).requires_grad_()
    v0 = (torch.rand(SHAPE, generator=gen, dtype=dtype) - 0.1).requires_grad_()
    return x, v0


def _run_both(x, v0, make_decay, grads_of, **kw):
    """Spikes and gradients (w.r.t. ``grads_of(x, v0)``) of the torch path and the reference loop."""
    out = []
    gen = torch.Generator().manual_seed(7)
    gs = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    gv = torch.randn(v0.shape, generator=gen, dtype=x.dtype)
    for fn in (neuron_multistep_torch, reference_multistep):
        s, v = fn(x, v0, make_decay(), **kw)
        grads = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), grads_of)
        out.append((s.detach(), v.detach(), grads))
    return out


@pytest.mark.parametrize(
    "v_reset,detach_reset,decay_input,surrogate",
    list(itertools.product([None, -0.1], [False, True], [True, False], available_surrogates())),
)
def test_lif_equals_stepwise_autograd(v_reset, detach_reset, decay_input, surrogate):
    seed = zlib.crc32(repr((v_reset, detach_reset, decay_input, surrogate)).encode())
    gen = torch.Generator().manual_seed(seed)
    for T in (1, 3, 16):
        x, v0 = _inputs(T, gen)
        (s1, v1, g1), (s2, v2, g2) = _run_both(
            x, v0, lambda: torch.tensor(1 / 1.7), (x, v0), v_threshold=1.0, v_reset=v_reset,
            decay_input=decay_input, detach_reset=detach_reset, surrogate_name=surrogate)
        assert torch.equal(s1, s2), f"spikes differ at T={T}"
        assert 0 < s1.mean() < 1
        torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-5)
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("v_reset,detach_reset", list(itertools.product([None, 0.0], [False, True])))
@pytest.mark.parametrize("decay_input", [True, False])
def test_plif_decay_gradient_equals_stepwise_autograd(v_reset, detach_reset, decay_input):
    gen = torch.Generator().manual_seed(3)
    w = torch.tensor(0.4, requires_grad=True)
    for T in (1, 3, 16):
        x, v0 = _inputs(T, gen)
        (s1, _, g1), (s2, _, g2) = _run_both(
            x, v0, lambda: torch.sigmoid(w), (x, v0, w), v_threshold=1.0, v_reset=v_reset,
            decay_input=decay_input, detach_reset=detach_reset, surrogate_name="atan")
        assert torch.equal(s1, s2)
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert g1[2].abs() > 0


@pytest.mark.parametrize("v_reset", [None, 0.0])
def test_if_equals_stepwise_autograd(v_reset):
    gen = torch.Generator().manual_seed(5)
    for T in (1, 3, 16):
        x, v0 = _inputs(T, gen)
        (s1, v1, g1), (s2, v2, g2) = _run_both(
            x, v0, lambda: torch.tensor(0.0), (x, v0), v_threshold=1.0, v_reset=v_reset,
            decay_input=False, detach_reset=False, surrogate_name="sigmoid")
        assert torch.equal(s1, s2)
        torch.testing.assert_close(v1, v2)
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _neurons_away_from_threshold(x, v0, decay, margin, **kw):
    """Indices of neurons whose pre-fire membrane stays ``margin`` away from the threshold at every step."""
    with torch.no_grad():
        v_r = 0.0 if kw["v_reset"] is None else kw["v_reset"]
        v, hs = v0.clone(), []
        for xt in x:
            h = v + decay * (xt - (v - v_r)) if kw["decay_input"] else v - decay * (v - v_r) + xt
            s = (h >= kw["v_threshold"]).to(h.dtype)
            v = h - kw["v_threshold"] * s if kw["v_reset"] is None else h * (1 - s) + v_r * s
            hs.append(h)
        dist = (torch.stack(hs) - kw["v_threshold"]).abs().amin(0)
    return (dist > margin).nonzero().squeeze(1)


@pytest.mark.parametrize("v_reset,decay_input,surrogate", [
    (None, True, "rectangle"), (-0.3, True, "triangle"), (None, False, "triangle"), (0.2, False, "rectangle"),
])
def test_gradcheck_float64(v_reset, decay_input, surrogate):
    """Exact float64 gradients where the spikes are locally constant: with a compact-support surrogate and
    every membrane at least 1/alpha from the threshold, the surrogate terms vanish and the analytic
    gradient of the membrane recursion (including dL/dk) must equal finite differences."""
    gen = torch.Generator().manual_seed(11)
    T, N = 6, 400
    kw = dict(v_threshold=1.0, v_reset=v_reset, decay_input=decay_input, detach_reset=False,
              surrogate_name=surrogate, alpha=8.0)
    x = torch.rand(T, N, generator=gen, dtype=torch.float64) * 2.4 - 0.4
    v0 = torch.rand(N, generator=gen, dtype=torch.float64) * 0.5
    w = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    keep = _neurons_away_from_threshold(x, v0, torch.sigmoid(w).item(), 0.15, **kw)
    assert keep.numel() >= 10
    x = x[:, keep[:12]].clone().requires_grad_()
    v0 = v0[keep[:12]].clone().requires_grad_()

    def f(x, v0, w):
        s, v = neuron_multistep_torch(x, v0, torch.sigmoid(w), **kw)
        return s, v

    assert torch.autograd.gradcheck(f, (x, v0, w), eps=1e-6, atol=1e-8, rtol=1e-6)
    s, _ = f(x, v0, w)
    assert 0 < s.mean() < 1  # the check covered neurons that fire and reset


def test_float64_matches_reference_tightly():
    gen = torch.Generator().manual_seed(2)
    x, v0 = _inputs(9, gen, dtype=torch.float64)
    w = torch.tensor(-0.2, dtype=torch.float64, requires_grad=True)
    (s1, v1, g1), (s2, v2, g2) = _run_both(
        x, v0, lambda: torch.sigmoid(w), (x, v0, w), v_threshold=0.8, v_reset=None, decay_input=True,
        detach_reset=False, surrogate_name="sigmoid")
    assert torch.equal(s1, s2)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_one_graph_node_and_bounded_saved_memory():
    """No T-deep graph: one backward node; what it saves is at most two [T, N] tensors (h and, for a hard
    reset, the spikes it returned), so forward + backward hold h, spikes, grad_spikes and grad_x."""
    T, N = 16, 1000
    x = torch.rand(T, N, requires_grad=True)
    packed = []

    def pack(t):
        packed.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        s, v = neuron_multistep_torch(x, torch.zeros(N), torch.tensor(0.5), v_reset=0.0)
    assert type(s.grad_fn).__name__ == "TorchNeuronFunctionBackward"
    assert s.grad_fn.next_functions[0][0].__class__.__name__ == "AccumulateGrad"
    big = [t for t in packed if t is not None and t.numel() >= T * N]
    assert len(big) <= 2
    assert not any(t.data_ptr() == x.data_ptr() for t in big)  # x is not kept alive for LIF


def test_non_contiguous_input_and_shapes():
    gen = torch.Generator().manual_seed(4)
    base = torch.rand(7, 9, 4, generator=gen) * 1.5
    x = base.permute(0, 2, 1)  # [T, 4, 9], non-contiguous
    v0 = torch.zeros(4, 9)
    s1, v1 = neuron_multistep_torch(x, v0, torch.tensor(0.5))
    s2, v2 = reference_multistep(x.contiguous(), v0, torch.tensor(0.5), v_threshold=1.0, v_reset=None,
                                 decay_input=True, detach_reset=False, surrogate_name="sigmoid")
    assert s1.shape == (7, 4, 9) and v1.shape == (4, 9)
    assert torch.equal(s1, s2) and torch.allclose(v1, v2)


@pytest.mark.parametrize("bad,match", [
    (dict(v_init=torch.zeros(4)), "v_init has shape"),
    (dict(decay=torch.tensor([0.5])), "0-dim"),
    (dict(x_seq=torch.zeros(0, 3)), "T = 0"),
    (dict(x_seq=torch.zeros(2, 3, dtype=torch.long)), "floating point"),
    (dict(v_reset=2.0), "v_reset"),
])
def test_argument_errors(bad, match):
    args = dict(x_seq=torch.zeros(2, 3), v_init=torch.zeros(3), decay=torch.tensor(0.5))
    kw = dict(v_threshold=1.0, v_reset=None)
    for key in list(bad):
        (args if key in args else kw)[key] = bad[key]
    with pytest.raises(ValueError, match=match):
        neuron_multistep_torch(args["x_seq"], args["v_init"], args["decay"], **kw)
