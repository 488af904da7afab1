"""The rate-BP spike pass with BatchNorm fused into the native recording kernel (``fused_bn_neuron``)
against the separate BatchNorm -> neuron path."""

from __future__ import annotations

import pytest
import torch

from graphspike_kd.spiking import native
from graphspike_kd.spiking import ratebp as rb
from graphspike_kd.spiking.models import RATEBP_NEURON, SpikingVGG, resnet18
from graphspike_kd.spiking.neurons import LIF, PLIF
from graphspike_kd.spiking.surrogate import get_surrogate


@pytest.fixture(scope="module")
def built():
    ok, why = native.cpp_status()
    if not ok and "needs a C++ compiler" in why:
        pytest.skip(why)
    assert ok, why
    return why


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hw", [(1, 1), (1, 3), (2, 2), (4, 4), (5, 7), (32, 32)])
def test_channel_moments_match_float64_reference(built, dtype, hw):
    gen = torch.Generator().manual_seed(hw[0] * 100 + hw[1])
    x = torch.randn(6, 5, *hw, generator=gen, dtype=dtype) * 0.3
    x += torch.tensor([0.0, 1e3, -50.0, 1.0, 2e4], dtype=dtype).view(1, 5, 1, 1)  # |mean| >> std
    mean, m2 = native.channel_moments_cpp(x)
    xd = x.double()
    ref_mean = xd.mean((0, 2, 3))
    ref_m2 = ((xd - ref_mean.view(1, -1, 1, 1)) ** 2).sum((0, 2, 3))
    assert mean.dtype == m2.dtype == torch.float64
    torch.testing.assert_close(mean, ref_mean, rtol=1e-13, atol=0)
    torch.testing.assert_close(m2, ref_m2, rtol=1e-9, atol=1e-12)


def test_channel_moments_errors(built):
    with pytest.raises(RuntimeError, match="contiguous float32/float64 CPU tensor"):
        native.channel_moments_cpp(torch.rand(3, 4, 5).transpose(1, 2))
    with pytest.raises(RuntimeError, match="contiguous float32/float64 CPU tensor"):
        native.channel_moments_cpp(torch.rand(3, 4).half())
    with pytest.raises(RuntimeError, match="empty input"):
        native.channel_moments_cpp(torch.rand(0, 4, 2))


def _record(x, affine, decay_input, v_reset):
    st = {key: torch.zeros(x.shape[1]) for key in ("u", "spikes", "elig", "d", "dk", "elig_k")}
    kw = dict(k=0.4, lam=0.6, k_in=0.4 if decay_input else 1.0, threshold=1.0,
              surrogate=get_surrogate("atan"), hard=v_reset is not None, detach_reset=False,
              decay_input=decay_input)
    spikes = native.ratebp_record_cpp(x, st, None, channel_affine=affine, **kw)
    return spikes, st


@pytest.mark.parametrize("decay_input,v_reset", [(True, None), (False, 0.0)])
@pytest.mark.parametrize("batch,channels,hw", [(2, 3, 343), (2, 2, 1500), (3, 700, 1)])
def test_record_with_channel_affine_equals_record_of_the_affine_input(built, decay_input, v_reset, batch,
                                                                       channels, hw):
    # x: [T=3, B, C, HW] flattened; the 1024-neuron blocks of the kernel straddle channels (hw = 343),
    # hold part of one channel (hw = 1500) or hundreds of channels (hw = 1)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, batch, channels, hw, generator=gen)
    scale = torch.rand(channels, generator=gen) * 3 - 1.5
    shift = torch.rand(channels, generator=gen) * 1.5
    affine_x = x * scale.view(1, 1, -1, 1) + shift.view(1, 1, -1, 1)  # mul then add, as the kernel
    ours = _record(x.reshape(3, -1), (scale, shift, hw), decay_input, v_reset)
    ref = _record(affine_x.reshape(3, -1), None, decay_input, v_reset)
    assert torch.equal(ours[0], ref[0]) and ref[0].sum() > 0
    for key in ref[1]:  # membranes, D, dU/dk and the running sums (x enters the decay eligibility)
        assert torch.equal(ours[1][key], ref[1][key]), key
    with pytest.raises(RuntimeError, match="not a multiple of C \\* hw"):
        _record(x.reshape(3, -1), (scale, shift, hw + 1), decay_input, v_reset)


def _model(arch, backend, fuse):
    torch.manual_seed(0)
    neuron = dict(RATEBP_NEURON, backend=backend)
    if arch == "vgg":
        model = SpikingVGG([16, 32, "A", 32, "A", 64], in_channels=3, num_classes=5, T=4, neuron=neuron)
    else:
        model = resnet18(in_channels=3, num_classes=5, T=4, neuron=neuron)
    for m in model.modules():
        if isinstance(m, rb.RateBPNeuron):
            m.fuse_bn = fuse
    return model


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
@pytest.mark.parametrize("frames", [False, True])
def test_fused_spike_pass_agrees_with_separate_batchnorm(built, arch, frames, monkeypatch):
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, 6, 3, 8, 8, generator=gen) if frames else torch.rand(6, 3, 8, 8, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    runs = {}
    for fuse in (False, True):
        model = _model(arch, "cpp", fuse)
        separate_bn = []
        spike_forward = rb._RateBPBatchNorm._spike_forward

        def counting(self, t, f=spike_forward, calls=separate_bn):
            calls.append(self)
            return f(self, t)

        monkeypatch.setattr(rb._RateBPBatchNorm, "_spike_forward", counting)
        out = rb.ratebp_loss(model, x, y, 4, steps_per_call=2)  # two calls: pooled statistics
        out["loss"].backward()
        monkeypatch.undo()
        bns = [m for m in model.modules() if isinstance(m, rb._RateBPBatchNorm)]
        neurons = [m for m in model.modules() if isinstance(m, rb.RateBPNeuron)]
        runs[fuse] = dict(logits=out["spike_logits"], loss=out["ce"], separate=len(separate_bn),
                          n_bn=len(bns), rates=[n.rate for n in neurons],
                          stats=[(b.running_mean.clone(), b.running_var.clone(), *b._spike_stats)
                                 for b in bns],
                          grads=[p.grad.clone() for p in model.parameters()])
    fused, ref = runs[True], runs[False]
    assert ref["separate"] == 2 * ref["n_bn"]  # every BN in each of the two calls
    # fused: only the BNs not followed by a neuron run separately (ResNet's bn2 and shortcut BNs)
    assert fused["separate"] < ref["separate"]
    if arch == "vgg":
        assert fused["separate"] == 0
    for a, b in zip(fused["stats"], ref["stats"], strict=True):
        for u, v in zip(a, b, strict=True):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
    # the normalised currents differ in the last bits only: a spike may flip where a membrane lands within
    # rounding of the threshold, nowhere else
    # rounding of the threshold, nowhere else. On these inputs none does (measured: 0 of 23,040 / 208,896
    # rates differ), so logits and gradients then agree to float rounding (measured <= 1.4e-6 relative).
    flipped = sum(int((a != b).sum()) for a, b in zip(fused["rates"], ref["rates"], strict=True))
    assert flipped == 0
    torch.testing.assert_close(fused["logits"], ref["logits"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(fused["grads"], ref["grads"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fusion_applies_only_where_it_should(built):
    c = torch.randn(8, 4, 3, 3)
    bn = rb.RateBPBatchNorm2d(4)
    cpp = rb.RateBPNeuron(LIF(step_mode="m", backend="cpp"))
    torch_neuron = rb.RateBPNeuron(PLIF(step_mode="m"))
    assert rb.fused_bn_neuron(bn, cpp, c, 2) is None  # plain mode
    for m in (bn, cpp, torch_neuron):
        m.ratebp_mode = "spike"
        m.begin_spike_pass()
    assert rb.fused_bn_neuron(bn, torch_neuron, c, 2) is None  # torch backend
    assert rb.fused_bn_neuron(bn, cpp, c.transpose(2, 3), 2) is None  # not contiguous
    cpp.fuse_bn = False
    assert rb.fused_bn_neuron(bn, cpp, c, 2) is None
    cpp.fuse_bn = True
    bn.eval()
    assert rb.fused_bn_neuron(bn, cpp, c, 2) is None  # eval: BN uses running statistics
    bn.train()
    spikes = rb.fused_bn_neuron(bn, cpp, c, 2)
    assert spikes.shape == (2, 4, 4, 3, 3)
    cpp.begin_spike_pass()
    repeated = rb.fused_bn_neuron(bn, cpp, c, 3, repeat=True)  # c: one step's current, used at every step
    assert repeated.shape == (3, 8, 4, 3, 3)
    with pytest.raises(RuntimeError, match="needs backend='cpp'"):
        torch_neuron._spike_forward(c.view(2, 4, 4, 3, 3), channel_affine=(torch.ones(4), torch.zeros(4), 9))
