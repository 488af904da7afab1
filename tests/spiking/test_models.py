import pytest
import torch
from torch import nn

from graphspike_kd.spiking import ratebp as rb
from graphspike_kd.spiking.models import (
    RATEBP_NEURON,
    SpikingVGG,
    available_models,
    get_model,
    make_neuron,
    resnet18,
    resnet19,
    vgg11,
    vggsnn,
)
from graphspike_kd.spiking.neurons import LIF, PLIF


@pytest.mark.parametrize("build,n_stages,c_last", [(vggsnn, 4, 512), (vgg11, 5, 512), (resnet18, 4, 512),
                                                   (resnet19, 3, 512)])
def test_model_families_shapes_and_stages(build, n_stages, c_last):
    torch.manual_seed(0)
    model = build(in_channels=2, num_classes=7, T=2)
    x = torch.rand(2, 2, 16, 16)
    logits, stages = model(x, return_stages=True)
    assert logits.shape == (2, 7)
    assert len(stages) == n_stages and stages[0].shape[:2] == (2, 2)
    assert model.stage_channels()[-1] == c_last
    # spikes (VGG stages end with an avg-pool: pooled spikes, multiples of 1/4)
    assert set((stages[0] * 4).unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert "\n" not in repr(model)
    rb.check_rate_compatible(model)  # only linear ops between neurons


def test_vggsnn_layout_matches_reference():
    model = vggsnn()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 4


def test_default_neuron_is_the_official_ratebp_lif():
    neuron = vggsnn().stem_neuron.neuron
    assert isinstance(neuron, LIF)
    assert neuron.tau == 1.25 and neuron.decay_input is False and neuron.v_reset is None
    assert neuron.detach_reset and neuron.surrogate.alpha == 4.0 and neuron.surrogate.name == "sigmoid"
    assert RATEBP_NEURON["kind"] == "lif"
    assert isinstance(make_neuron("plif", tau=3.0).neuron, PLIF)
    with pytest.raises(ValueError, match="unknown neuron kind"):
        make_neuron("izhikevich")


def test_static_input_equals_repeated_frames():
    torch.manual_seed(1)
    model = SpikingVGG([6, 8, "A", 8], in_channels=3, num_classes=4, T=3).eval()
    x = torch.randn(5, 3, 8, 8)
    frames = x.unsqueeze(0).expand(3, *x.shape).contiguous()
    assert torch.allclose(model(x), model(frames), atol=1e-6)
    model.train()  # BN over the time-flattened batch: identical copies give identical statistics
    assert torch.allclose(model(x), model(frames), atol=1e-5)


def test_batchnorm_is_over_time_flattened_batch():
    model = SpikingVGG([4, 6], in_channels=1, num_classes=2, T=3)
    bn = model.stages[0][0].bn
    seen = []
    bn.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    model(torch.randn(3, 4, 1, 6, 6))
    assert seen == [torch.Size([12, 6, 6, 6])]


def test_bad_inputs_raise():
    model = SpikingVGG([4, 6], in_channels=1, num_classes=2)
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(2, 3, 6, 6))
    with pytest.raises(ValueError, match="static"):
        model(torch.randn(2, 6, 6))
    with pytest.raises(ValueError, match="steps"):
        model(torch.randn(3, 2, 1, 6, 6), T=4)
    with pytest.raises(ValueError, match="cfg"):
        SpikingVGG(["A", 4])
    with pytest.raises(ValueError, match="unknown spiking model"):
        get_model("alexnet")
    assert available_models() == ["resnet18", "resnet19", "vgg11", "vgg9", "vggsnn"]


def test_bptt_training_step_reduces_loss():
    torch.manual_seed(0)
    model = SpikingVGG([8, 8, "A"], in_channels=1, num_classes=2, T=4)
    x = torch.randn(16, 1, 6, 6)
    y = (x.mean((1, 2, 3)) > 0).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        out = rb.bptt_loss(model, x, y, 4)
        out["loss"].backward()
        opt.step()
        losses.append(out["ce"].item())
    assert losses[-1] < 0.7 * losses[0]


def test_seq_avg_pool_matches_avg_pool2d():
    from graphspike_kd.spiking.models import SeqAvgPool

    x = torch.rand(3, 2, 4, 6, 8, requires_grad=True)
    ref = torch.nn.functional.avg_pool2d(x.flatten(0, 1), 2).view(3, 2, 4, 3, 4)
    out = SeqAvgPool(2)(x)
    assert torch.allclose(out, ref, atol=1e-7)
    g = torch.randn(out.shape)
    (grad,) = torch.autograd.grad((out * g).sum(), x)  # the in-place scaling leaves the backward intact
    (grad_ref,) = torch.autograd.grad((ref * g).sum(), x)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-7)
    odd = torch.rand(2, 2, 3, 5, 5)
    assert SeqAvgPool(2)(odd).shape == (2, 2, 3, 2, 2)
