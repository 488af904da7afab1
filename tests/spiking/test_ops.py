"""The torch.library custom ops (graphspike_kd::neuron_forward/backward) that torch.compile sees in place of
the neuron's autograd Function."""

import pytest
import torch

from graphspike_kd.spiking import functional as ops
from graphspike_kd.spiking.neurons import LIF, PLIF
from graphspike_kd.spiking.torch_loop import make_config


@pytest.mark.parametrize("v_reset,want_k", [(None, False), (0.0, True)])
def test_opcheck_forward_op(v_reset, want_k):
    x = torch.rand(5, 3, 7) * 1.5
    v0 = torch.zeros(3, 7)
    decay = torch.tensor(0.5, requires_grad=want_k)
    torch.library.opcheck(ops.neuron_forward,
                          (x.requires_grad_(), v0, decay, 1.0, v_reset, True, False, "sigmoid", 4.0, "torch",
                           True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_op_gradients_equal_autograd_function():
    x = (torch.rand(6, 4, 9, generator=torch.Generator().manual_seed(0)) * 1.5).requires_grad_()
    plif = PLIF(v_reset=0.0)
    s_ref = plif(x)
    g_ref = torch.autograd.grad((s_ref * x.detach()).sum(), (x, plif.w))
    s, _ = ops.neuron_multistep_op(x, torch.zeros(4, 9), torch.sigmoid(plif.w),
                                   make_config(1.0, 0.0, True, False, "sigmoid", 4.0), "torch")
    g = torch.autograd.grad((s * x.detach()).sum(), (x, plif.w))
    assert torch.equal(s, s_ref)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow  # compiling takes ~10 s of CPU
def test_torch_compile_fullgraph_keeps_the_neuron_whole():
    torch._dynamo.reset()
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), LIF(v_reset=0.0))
    x = torch.rand(6, 3, 5, generator=torch.Generator().manual_seed(1))
    ref = net(x)
    ref.sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    out = torch.compile(net, fullgraph=True)(x)  # fullgraph: a graph break would raise
    out.sum().backward()
    assert torch.equal(out, ref)
    for p, g in zip(net.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g)
