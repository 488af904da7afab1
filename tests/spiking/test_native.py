"""The native CPU backend (``backend="cpp"``) against the torch path; builds the library once (seconds)."""

import itertools

import pytest
import torch

from graphspike_kd.spiking import native
from graphspike_kd.spiking.functional import neuron_multistep_cpp, neuron_multistep_torch
from graphspike_kd.spiking.neurons import LIF, PLIF
from graphspike_kd.spiking.surrogate import KERNEL_IDS, available_surrogates, get_surrogate


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
        shape = (T, 2, 1031)  # odd N, more than one neuron block
        x = (torch.rand(shape, generator=gen, dtype=dtype) * 2.4 - 0.2).requires_grad_()
        v0 = (torch.rand(shape[1:], generator=gen, dtype=dtype) - 0.1).requires_grad_()
        w = torch.tensor(0.3, dtype=dtype, requires_grad=True)
        gs = torch.randn(shape, generator=gen, dtype=dtype)
        gv = torch.randn(shape[1:], generator=gen, dtype=dtype)
        kw = dict(v_threshold=1.0, v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset,
                  surrogate_name=surrogate)
        ours = _grads(neuron_multistep_cpp, x, v0, w, gs, gv, **kw)
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


def _record(backend, kind, x, chunks, **kw):
    from graphspike_kd.spiking.neurons import IF
    from graphspike_kd.spiking.ratebp import RateBPNeuron

    cls = {"if": IF, "lif": LIF, "plif": PLIF}[kind]
    kw["surrogate"] = get_surrogate(kw["surrogate"])
    if kind == "if":
        kw.pop("decay_input")
    neuron = RateBPNeuron(cls(step_mode="m", backend=backend, **kw).to(x.dtype))
    neuron.ratebp_mode = "spike"
    neuron.begin_spike_pass()
    spikes, t0 = [], 0
    for c in chunks:  # several calls: the state (membrane, kappa carry, dU/dk) crosses them
        spikes.append(neuron(x[t0 : t0 + c]))
        t0 += c
    neuron.end_spike_pass()
    return torch.cat(spikes), neuron.rate, neuron.eligibility, neuron.decay_eligibility


@pytest.mark.parametrize("kind", ["lif", "plif", "if"])
@pytest.mark.parametrize("v_reset,detach_reset,decay_input", CONFIGS)
@pytest.mark.parametrize("surrogate", available_surrogates())
def test_cpp_ratebp_recording_equals_torch_path(built, kind, v_reset, detach_reset, decay_input, surrogate):
    if surrogate not in KERNEL_IDS:
        pytest.skip(f"no native kernel for {surrogate}")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, 701, generator=gen) * 1.5 + 0.5  # 2103 neurons: three blocks, the last partial
    kw = dict(v_reset=v_reset, detach_reset=detach_reset, decay_input=decay_input, surrogate=surrogate)
    for chunks in ([7], [3, 1, 3]):
        ref = _record("torch", kind, x, chunks, **kw)
        ours = _record("cpp", kind, x, chunks, **kw)
        assert torch.equal(ours[0], ref[0])  # spikes, bit for bit
        assert torch.equal(ours[1], ref[1])  # firing rates
        assert ref[0].sum() > 0 and ref[2].abs().sum() > 0  # the case is not vacuous
        torch.testing.assert_close(ours[2], ref[2], rtol=1e-5, atol=1e-6)  # eligibility: float rounding
        if kind == "plif":
            torch.testing.assert_close(ours[3], ref[3], rtol=1e-5, atol=1e-5)
        else:
            assert ours[3] is None and ref[3] is None


def test_cpp_ratebp_recording_float64_and_threads(built):
    x = torch.randn(5, 4000, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) + 0.6
    kw = dict(v_reset=None, detach_reset=True, decay_input=False, surrogate="sigmoid")
    ref = _record("torch", "plif", x, [5], **kw)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ours = _record("cpp", "plif", x, [2, 3], **kw)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(ours[0], ref[0])
    torch.testing.assert_close(ours[2], ref[2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[3], ref[3], rtol=1e-12, atol=1e-12)


def test_cpp_backend_ratebp_step_matches_torch_backend(built):
    from graphspike_kd.spiking import ratebp as rb
    from graphspike_kd.spiking.models import RATEBP_NEURON, vggsnn

    x = torch.rand(4, 2, 16, 16, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3])
    grads = {}
    for backend in ("torch", "cpp"):
        torch.manual_seed(0)
        model = vggsnn(in_channels=2, num_classes=4, T=3, neuron=dict(RATEBP_NEURON, backend=backend))
        for m in model.modules():  # the neuron kernel alone (fused BN: tests/spiking/test_ratebp_fused.py)
            if isinstance(m, rb.RateBPNeuron):
                m.fuse_bn = False
        out = rb.ratebp_loss(model, x, y, 3)
        out["loss"].backward()
        grads[backend] = (out["spike_logits"], [p.grad.clone() for p in model.parameters()])
    assert torch.equal(grads["cpp"][0], grads["torch"][0])  # same spikes all the way to the logits
    for a, b in zip(grads["cpp"][1], grads["torch"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("want_decay_grad", [False, True])
@pytest.mark.parametrize("v_reset", [None, 0.0])
def test_cpp_backward_recomputes_membranes_for_long_sequences(built, want_decay_grad, v_reset):
    # T = 300: the recomputing backward's block shrinks below the 256-neuron block of the forward (its
    # [T, block] buffer stays in cache); N = 2600 leaves a partial last block
    gen = torch.Generator().manual_seed(7)
    x = (torch.rand(300, 2600, generator=gen) * 1.2).requires_grad_()
    v0 = torch.rand(2600, generator=gen).requires_grad_()
    w = torch.tensor(0.4, requires_grad=want_decay_grad)
    gs, gv = torch.randn(300, 2600, generator=gen), torch.randn(2600, generator=gen)
    kw = dict(v_threshold=1.0, v_reset=v_reset, decay_input=True, detach_reset=False,
              surrogate_name="sigmoid")
    inputs = (x, v0, w) if want_decay_grad else (x, v0)
    results = []
    for fn in (neuron_multistep_cpp, neuron_multistep_torch):
        s, v = fn(x, v0, torch.sigmoid(w), **kw)
        results.append((s, *torch.autograd.grad((s * gs).sum() + (v * gv).sum(), inputs)))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1:], results[1][1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_cpp_saves_the_input_not_a_new_membrane_tensor(built):
    x = torch.rand(6, 3000).requires_grad_()
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        neuron_multistep_cpp(x, torch.zeros(3000), torch.tensor(0.5))
    big = [t for t in saved if t.numel() == x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr()  # x itself: no [T, N] tensor allocated to save


def test_cpp_ratebp_recording_reads_a_time_repeated_input_without_copying(built, monkeypatch):
    """A static input expanded over time (stride 0 in T, the direct-encoded stem) gives the same record as
    its materialised copy, and the kernel is handed the [N] row itself (no T-fold copy)."""
    from graphspike_kd.spiking.ratebp import RateBPNeuron

    c = torch.randn(2, 3, 331, generator=torch.Generator().manual_seed(7)) + 0.7
    strides = []
    record = native.ratebp_record_cpp

    def spy(x, *args, **kwargs):
        strides.append(x.stride(0))
        return record(x, *args, **kwargs)

    monkeypatch.setattr(native, "ratebp_record_cpp", spy)
    results = []
    for x in (c.unsqueeze(0).expand(5, *c.shape), c.unsqueeze(0).repeat(5, 1, 1, 1)):
        neuron = RateBPNeuron(PLIF(step_mode="m", backend="cpp"))
        neuron.ratebp_mode = "spike"
        neuron.begin_spike_pass()
        spikes = torch.cat([neuron(x[:2]), neuron(x[2:])])
        neuron.end_spike_pass()
        results.append((spikes, neuron.rate, neuron.eligibility, neuron.decay_eligibility))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    assert 0 < results[0][1].mean() < 1  # some neurons fire, not all at every step
    assert strides == [0, 0, c.numel(), c.numel()]  # the expanded input reached the kernel as it was
    monkeypatch.undo()

    st = {"u": torch.zeros(4), "spikes": torch.zeros(4), "elig": torch.zeros(4), "d": torch.zeros(4)}
    kw = dict(kappa_seq=None, k=0.5, lam=0.5, k_in=0.5, threshold=1.0, surrogate=get_surrogate("sigmoid"),
              hard=False, detach_reset=False, decay_input=True)
    with pytest.raises(RuntimeError, match="contiguous rows and row stride N or 0"):
        native.ratebp_record_cpp(torch.rand(4, 3).t(), st, **kw)
    with pytest.raises(RuntimeError, match="must be \\[T, N\\]"):
        native.ratebp_record_cpp(torch.rand(3, 4, 1), st, **kw)
