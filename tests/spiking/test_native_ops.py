"""The native neuron as C++ operators (``graphspike_kd::neuron_forward.cpu`` / ``neuron_backward.cpu``, the
"cpu" overloads of the op family): bit-identical to the ctypes path, opcheck-clean, compiled as one node."""

from __future__ import annotations

import itertools

import pytest
import torch

from graphspike_kd.spiking import native
from graphspike_kd.spiking.neurons import LIF, PLIF
from graphspike_kd.spiking.surrogate import available_surrogates
from graphspike_kd.spiking.torch_loop import make_config


@pytest.fixture(scope="module")
def built():
    ok, why = native.cpp_status()
    if not ok and ("needs a C++ compiler" in why or "ninja" in why):
        pytest.skip(why)
    assert ok, why


def _run(fn, x, v0, decay, gs, gv):
    s, v = fn(x, v0, decay)
    grads = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), (x, v0, decay))
    return (s.detach(), v.detach(), *grads)


CONFIGS = list(itertools.product([None, -0.2], [False, True], [True, False], available_surrogates(),
                                 [torch.float32, torch.float64]))


@pytest.mark.parametrize("v_reset,detach_reset,decay_input,surrogate,dtype", CONFIGS)
def test_operator_is_bit_identical_to_the_ctypes_path(built, v_reset, detach_reset, decay_input, surrogate,
                                                      dtype):
    gen = torch.Generator().manual_seed(3)
    cfg = make_config(1.0, v_reset, decay_input, detach_reset, surrogate, None)
    shape = (5, 3, 700)  # more than one neuron block
    x = (torch.rand(shape, generator=gen, dtype=dtype) * 2.4 - 0.2).requires_grad_()
    v0 = (torch.rand(shape[1:], generator=gen, dtype=dtype) - 0.1).requires_grad_()
    decay = torch.tensor(0.37, dtype=torch.float32, requires_grad=True)  # PLIF's decay is float32
    gs = torch.randn(shape, generator=gen, dtype=dtype)
    gv = torch.randn(shape[1:], generator=gen, dtype=dtype)
    ours = _run(lambda a, b, c: native.cpp_neuron(a, b, c, cfg), x, v0, decay, gs, gv)
    ref = _run(lambda a, b, c: native.CppNeuronFunction.apply(a, b, c, cfg), x, v0, decay, gs, gv)
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_opcheck(built):
    cfg = (1.0, 0.0, True, False, 0, 4.0)
    x = (torch.rand(4, 2, 33) * 2).requires_grad_()
    v0 = torch.zeros(2, 33, requires_grad=True)
    decay = torch.tensor(0.5, requires_grad=True)
    torch.library.opcheck(torch.ops.graphspike_kd.neuron_forward.cpu, (x, v0, decay, *cfg))
    gs, gv = torch.randn(4, 2, 33), torch.randn(2, 33)
    torch.library.opcheck(torch.ops.graphspike_kd.neuron_backward.cpu,
                          (gs, gv, x.detach(), v0.detach(), decay.detach(), *cfg, True))


def test_one_op_family_with_a_cpu_overload(built):
    for name in ("neuron_forward", "neuron_backward"):
        packet = getattr(torch.ops.graphspike_kd, name)
        assert packet.default.name() == f"graphspike_kd::{name}"
        assert packet.cpu.name() == f"graphspike_kd::{name}.cpu"
    for gone in ("cpu_neuron_forward", "neuron_forward_cpu", "neuron_multistep_forward"):
        assert not hasattr(torch.ops.graphspike_kd, gone)


@pytest.mark.parametrize("make", [lambda: LIF(v_reset=0.0, backend="cpp"), lambda: PLIF(backend="cpp")])
def test_compiled_is_bit_identical_to_eager_and_one_node(built, make):
    from torch._dynamo.testing import CompileCounterWithBackend

    gen = torch.Generator().manual_seed(5)
    x = torch.rand(6, 4, 300, generator=gen) * 1.5
    w = torch.randn(6, 4, 300, generator=gen)
    eager, counter = make(), CompileCounterWithBackend("inductor")
    compiled = torch.compile(make(), backend=counter, fullgraph=True)
    outs = []
    for model in (eager, compiled):
        xi = x.clone().requires_grad_()
        s = model(xi)
        (s * w).sum().backward()
        outs.append((s.detach(), xi.grad, [p.grad for p in model.parameters()]))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    for a, b in zip(outs[0][2], outs[1][2], strict=True):
        assert torch.equal(a, b)
    assert counter.frame_count == 1
    graph = counter.graphs[0]
    targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert torch.ops.graphspike_kd.neuron_forward.cpu in targets


def test_compiled_with_dynamic_shapes(built):
    eager = PLIF(backend="cpp")
    compiled = torch.compile(PLIF(backend="cpp"), fullgraph=True, dynamic=True)
    gen = torch.Generator().manual_seed(6)
    for shape in ((4, 3, 50), (6, 5, 70), (3, 2, 11)):
        x = (torch.rand(shape, generator=gen) * 1.5).requires_grad_()
        xc = x.detach().clone().requires_grad_()
        s, sc = eager(x), compiled(xc)
        s.sum().backward()
        sc.sum().backward()
        assert torch.equal(s, sc) and torch.equal(x.grad, xc.grad)
        assert torch.equal(eager.w.grad, compiled.w.grad)
        eager.w.grad = compiled.w.grad = None


def test_second_derivative_raises(built):
    x = (torch.rand(3, 5, generator=torch.Generator().manual_seed(7)) * 2).requires_grad_()
    s = LIF(backend="cpp")(x)
    (g,) = torch.autograd.grad((s * torch.linspace(-1, 1, 5)).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        g.sum().backward()


def test_backward_with_absent_output_gradients(built):
    """An unused output's gradient is None (not materialised): same gradients as with explicit zeros."""
    gen = torch.Generator().manual_seed(8)
    cfg = make_config(1.0, 0.0, True, False, "sigmoid", None)
    x = (torch.rand(5, 1100, generator=gen) * 2).requires_grad_()
    v0 = (torch.rand(1100, generator=gen) - 0.1).requires_grad_()
    decay = torch.tensor(0.4, requires_grad=True)
    gs, gv = torch.randn(5, 1100, generator=gen), torch.randn(1100, generator=gen)
    for use_s, use_v in ((True, False), (False, True)):
        s, v = native.cpp_neuron(x, v0, decay, cfg)
        loss = (s * gs).sum() if use_s else (v * gv).sum()
        ours = torch.autograd.grad(loss, (x, v0, decay))
        s, v = native.cpp_neuron(x, v0, decay, cfg)
        ref = torch.autograd.grad((s * gs * use_s).sum() + (v * gv * use_v).sum(), (x, v0, decay))
        for a, b in zip(ours, ref, strict=True):
            assert torch.equal(a, b)


def test_backward_operator_without_v_gradient(built):
    cfg = (1.0, 0.0, True, False, 0, 4.0)
    gen = torch.Generator().manual_seed(9)
    x, v0, decay = torch.rand(4, 70, generator=gen) * 2, torch.zeros(70), torch.tensor(0.5)
    gs = torch.randn(4, 70, generator=gen)
    op = torch.ops.graphspike_kd.neuron_backward.cpu
    gx, gv, gk = op(gs, None, x, v0, decay, *cfg, True, False)
    gx_ref, _, gk_ref = op(gs, torch.zeros(70), x, v0, decay, *cfg, True, True)
    assert gv.shape == (0,) and torch.equal(gx, gx_ref) and torch.equal(gk, gk_ref)
    torch.library.opcheck(op, (gs, None, x, v0, decay, *cfg, False, False))
