"""CuPy kernels on a CUDA device against the step-by-step torch autograd reference (gpu-marked).

Tolerances and why:

- fp32: spikes and v_last are compared for exact equality. The kernels are compiled with ``--fmad=false``
  and no fast math and perform the reference's operations in the reference's order, so every h is
  bit-identical to the torch loop's. Input gradients: rtol 1e-5, atol 1e-6 (the surrogate's exp/sigmoid
  and the product order differ from torch by a few ulp per step).
- fp16: the kernels load fp16, compute in fp32 registers and round once when storing, so the reference is
  the fp32 loop on the upcast inputs. Spikes are exact and v_last equals the reference's v_last rounded to
  fp16 (round-to-nearest-even both ways); gradients are within one fp16 rounding of the fp32 reference:
  relative 2^-11 = 4.9e-4 plus the fp32 tolerance, hence rtol 6e-4 (atol 1e-6 covers fp16 subnormals).
- dL/dk is a sum of T * N terms accumulated in a different order (per thread over T, then a block tree,
  then torch's sum of the block partials): atol 4e-6 * sum(|terms|) (about 26 fp32 roundings deep),
  with the terms computed from the reference's own dL/dh.
"""

from __future__ import annotations

import pytest
import torch

from graphspike_kd.spiking import functional
from graphspike_kd.spiking.functional import neuron_multistep_cupy
from graphspike_kd.spiking.kernels import cupy_status
from tests.spiking.test_kernels_host import SURROGATE_NAMES, _opts, make_case, reference_multistep

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
FP32_GRAD = dict(rtol=1e-5, atol=1e-6)
FP16_GRAD = dict(rtol=6e-4, atol=1e-6)


@pytest.fixture(scope="module", autouse=True)
def _cupy_can_run():
    ok, reason = cupy_status()
    if not ok:
        pytest.skip(f"a CUDA device exists but the CuPy kernels cannot run: {reason}")


def reference_with_terms(x, v0, k, grad_s, grad_v, **opts):
    """Reference outputs and gradients, plus S = sum_t sum_i |dL/dh_t * dh_t/dk| in float64.

    S is the scale of dL/dk's rounding error. dL/dh_t is recovered from the reference's own input gradient
    (dL/dx_t = dL/dh_t * dh/dx with dh/dx = k or 1), dh_t/dk from the membrane before each step.
    """
    x = x.detach().clone().requires_grad_(True)
    v0 = v0.detach().clone().requires_grad_(True)
    k = k.detach().clone().requires_grad_(True)
    v_r = 0.0 if opts["v_reset"] is None else opts["v_reset"]
    spikes, dh_dk = [], []
    v = v0
    for x_t in x.unbind(0):  # the reference loop one step at a time, recording v[t-1]
        dh_dk.append((x_t - (v - v_r)) if opts["decay_input"] else -(v - v_r))
        step, v = reference_multistep(x_t.unsqueeze(0), v, k, **opts)
        spikes.append(step[0])
    spikes = torch.stack(spikes)
    ((spikes * grad_s).sum() + (v * grad_v).sum()).backward()
    if opts["decay_input"]:
        k_value = float(k.detach())
        assert k_value != 0.0, "decay_input with k = 0: dL/dh cannot be recovered from dL/dx"
        grad_h = x.grad.double() / k_value
    else:
        grad_h = x.grad.double()
    terms = float((grad_h * torch.stack(dh_dk).detach().double()).abs().sum())
    return spikes.detach(), v.detach(), x.grad, v0.grad, k.grad, terms


def run_cupy(x, v0, k, grad_s, grad_v, **opts):
    x = x.detach().clone().requires_grad_(True)
    v0 = v0.detach().clone().requires_grad_(True)
    k = k.detach().clone().requires_grad_(True)
    spikes, v_last = neuron_multistep_cupy(x, v0, k, **opts)
    ((spikes * grad_s).sum() + (v_last * grad_v).sum()).backward()
    return spikes.detach(), v_last.detach(), x.grad, v0.grad, k.grad


def assert_decay_grad(got, ref, terms):
    assert got is not None and got.dtype == ref.dtype
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=4e-6 * terms + 1e-7)


def test_cupy_status_true_on_gpu():
    ok, reason = cupy_status()
    assert ok, reason
    assert "NVRTC" in reason


@pytest.mark.parametrize("T", [1, 3, 16])
@pytest.mark.parametrize("surrogate", SURROGATE_NAMES)
@pytest.mark.parametrize("decay_input", [True, False], ids=["decay_input", "no_decay_input"])
@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detach_reset"])
@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_fp32_matches_reference(reset, detach, decay_input, surrogate, T):
    opts = _opts(reset, detach, decay_input, surrogate)
    # N = 1043: five blocks of 256, the last one partial
    x, v0, grad_s, grad_v = make_case(T, (7, 149), torch.float32, seed=T + 10, device=DEVICE)
    k = torch.tensor(0.37, device=DEVICE)
    ref = reference_with_terms(x, v0, k, grad_s, grad_v, **opts)
    got = run_cupy(x, v0, k, grad_s, grad_v, **opts)
    assert got[0].dtype == torch.float32 and got[0].shape == x.shape and got[1].shape == v0.shape
    assert torch.equal(got[0], ref[0]), f"{int((got[0] != ref[0]).sum())} spikes differ"
    assert torch.equal(got[1], ref[1])
    torch.testing.assert_close(got[2], ref[2], **FP32_GRAD)
    torch.testing.assert_close(got[3], ref[3], **FP32_GRAD)
    assert_decay_grad(got[4], ref[4], ref[5])


@pytest.mark.parametrize("T", [1, 16])
@pytest.mark.parametrize("surrogate", SURROGATE_NAMES)
@pytest.mark.parametrize("decay_input", [True, False], ids=["decay_input", "no_decay_input"])
@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detach_reset"])
@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_fp16_matches_fp32_reference_on_upcast_inputs(reset, detach, decay_input, surrogate, T):
    opts = _opts(reset, detach, decay_input, surrogate)
    x, v0, grad_s, grad_v = make_case(T, (5, 211), torch.float16, seed=T + 20, device=DEVICE)  # N odd
    k = torch.tensor(0.37, device=DEVICE)
    ref = reference_with_terms(x.float(), v0.float(), k, grad_s.float(), grad_v.float(), **opts)
    got = run_cupy(x, v0, k, grad_s, grad_v, **opts)
    assert got[0].dtype == torch.float16 and got[1].dtype == torch.float16
    assert got[2].dtype == torch.float16 and got[3].dtype == torch.float16
    assert torch.equal(got[0].float(), ref[0]), f"{int((got[0].float() != ref[0]).sum())} spikes differ"
    assert torch.equal(got[1], ref[1].half())
    torch.testing.assert_close(got[2].float(), ref[2], **FP16_GRAD)
    torch.testing.assert_close(got[3].float(), ref[3], **FP16_GRAD)
    assert_decay_grad(got[4], ref[4], ref[5])  # accumulated in fp32 whatever the storage dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_plif_gradient_reaches_w(dtype):
    """PLIF: k = sigmoid(w), with w an fp32 parameter (also under fp16 storage, as with AMP)."""
    opts = _opts("soft", True, False, "sigmoid")
    x, v0, grad_s, grad_v = make_case(8, (33, 17), dtype, seed=3, device=DEVICE)
    w = torch.tensor(-0.4, device=DEVICE, requires_grad=True)
    k = torch.sigmoid(w)
    ref = reference_with_terms(x.float(), v0.float(), k.detach(), grad_s.float(), grad_v.float(), **opts)
    spikes, v_last = neuron_multistep_cupy(x, v0, k, **opts)
    ((spikes * grad_s).sum() + (v_last * grad_v).sum()).float().backward()
    assert torch.equal(spikes.float(), ref[0])
    assert w.grad is not None and w.grad.dtype == torch.float32
    dk_dw = float(k * (1 - k))
    torch.testing.assert_close(w.grad, ref[4] * dk_dw, rtol=1e-5, atol=4e-6 * ref[5] * dk_dw + 1e-7)


def test_decay_on_cpu_and_as_float():
    """A CPU decay tensor is moved to the device (gradient flows back to it); a float works too."""
    opts = _opts("hard", False, True, "atan")
    x, v0, grad_s, grad_v = make_case(4, (129,), torch.float32, seed=4, device=DEVICE)
    k_cpu = torch.tensor(0.5, requires_grad=True)
    spikes, v_last = neuron_multistep_cupy(x, v0, k_cpu, **opts)
    ((spikes * grad_s).sum() + (v_last * grad_v).sum()).backward()
    ref = reference_with_terms(x, v0, torch.tensor(0.5, device=DEVICE), grad_s, grad_v, **opts)
    assert torch.equal(spikes, ref[0]) and k_cpu.grad.device.type == "cpu"
    assert_decay_grad(k_cpu.grad, ref[4].cpu(), ref[5])
    spikes_f, _ = neuron_multistep_cupy(x, v0, 0.5, **opts)
    assert torch.equal(spikes_f, ref[0])


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_integrate_and_fire(reset):
    opts = _opts(reset, False, False, "rectangle")
    x, v0, grad_s, grad_v = make_case(16, (3, 101), torch.float32, seed=5, device=DEVICE)
    k = torch.tensor(0.0, device=DEVICE)
    ref = reference_with_terms(x, v0, k, grad_s, grad_v, **opts)
    got = run_cupy(x, v0, k, grad_s, grad_v, **opts)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    torch.testing.assert_close(got[2], ref[2], **FP32_GRAD)
    torch.testing.assert_close(got[3], ref[3], **FP32_GRAD)
    assert_decay_grad(got[4], ref[4], ref[5])


@pytest.mark.parametrize("n", [1, 255, 257, (1 << 20) + 3])
def test_odd_and_large_sizes(n):
    opts = _opts("soft", False, True, "sigmoid")
    x, v0, grad_s, grad_v = make_case(3, (n,), torch.float32, seed=6, device=DEVICE)
    k = torch.tensor(0.5, device=DEVICE)
    ref = reference_with_terms(x, v0, k, grad_s, grad_v, **opts)
    got = run_cupy(x, v0, k, grad_s, grad_v, **opts)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    torch.testing.assert_close(got[2], ref[2], **FP32_GRAD)
    assert_decay_grad(got[4], ref[4], ref[5])


def test_non_contiguous_inputs():
    opts = _opts("hard", True, True, "triangle")
    base, v_base, grad_s, grad_v = make_case(6, (13, 11), torch.float32, seed=8, device=DEVICE)
    x = base.transpose(1, 2)  # [6, 11, 13] view
    v0 = v_base.t()
    assert not x.is_contiguous() and not v0.is_contiguous()
    gs, gv = grad_s.transpose(1, 2), grad_v.t()
    k = torch.tensor(0.6, device=DEVICE)
    ref = reference_with_terms(x.contiguous(), v0.contiguous(), k, gs.contiguous(), gv.contiguous(), **opts)
    got = run_cupy(x, v0, k, gs, gv, **opts)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    torch.testing.assert_close(got[2], ref[2], **FP32_GRAD)
    torch.testing.assert_close(got[3], ref[3], **FP32_GRAD)


def test_only_one_output_used():
    """Gradients of unused outputs arrive as None (no zero-filled [T, N] tensor); both cases are right."""
    opts = _opts("soft", False, False, "fast_sigmoid")
    x, v0, grad_s, grad_v = make_case(5, (301,), torch.float32, seed=9, device=DEVICE)
    k = torch.tensor(0.25, device=DEVICE)
    xr = x.clone().requires_grad_(True)
    _, v_last = neuron_multistep_cupy(xr, v0, k, **opts)
    (v_last * grad_v).sum().backward()
    ref = reference_with_terms(x, v0, k, torch.zeros_like(grad_s), grad_v, **opts)
    torch.testing.assert_close(xr.grad, ref[2], **FP32_GRAD)
    xr.grad = None
    spikes, _ = neuron_multistep_cupy(xr, v0, k, **opts)
    (spikes * grad_s).sum().backward()
    ref = reference_with_terms(x, v0, k, grad_s, torch.zeros_like(grad_v), **opts)
    torch.testing.assert_close(xr.grad, ref[2], **FP32_GRAD)


def test_no_grad_forward():
    opts = _opts("hard", False, True, "sigmoid")
    x, v0, *_ = make_case(7, (77,), torch.float32, seed=10, device=DEVICE)
    with torch.no_grad():
        spikes, v_last = neuron_multistep_cupy(x.requires_grad_(True), v0, 0.5, **opts)
    ref_s, ref_v = reference_multistep(x.detach(), v0, torch.tensor(0.5, device=DEVICE), **opts)
    assert torch.equal(spikes, ref_s) and torch.equal(v_last, ref_v) and not spikes.requires_grad


def test_runs_on_the_current_torch_stream():
    """Work queued on a side stream must be seen by the kernel launched on that stream (no sync here)."""
    opts = _opts("soft", False, True, "atan")
    x, v0, *_ = make_case(16, (1 << 18,), torch.float32, seed=11, device=DEVICE)
    ref_s, _ = reference_multistep(x * 1.5, v0, torch.tensor(0.5, device=DEVICE), **opts)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(20):  # keep the side stream busy so a launch on another stream would race
            torch.cuda._sleep(1_000_000)
        x_scaled = x * 1.5
        spikes, _ = neuron_multistep_cupy(x_scaled, v0, 0.5, **opts)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(spikes, ref_s)


def test_torch_compile_fullgraph():
    opts = _opts("soft", True, False, "sigmoid")
    x, v0, grad_s, _ = make_case(6, (4, 257), torch.float32, seed=12, device=DEVICE)

    def model(x, v0, w):
        spikes, v_last = neuron_multistep_cupy(2.0 * x, v0, torch.sigmoid(w), **opts)
        return spikes, (spikes * grad_s).sum() + v_last.square().sum()

    compiled = torch.compile(model, fullgraph=True)
    results = []
    for fn in (model, compiled):
        xr = x.clone().requires_grad_(True)
        w = torch.tensor(0.1, device=DEVICE, requires_grad=True)
        spikes, loss = fn(xr, v0, w)
        loss.backward()
        results.append((spikes.detach(), loss.detach(), xr.grad, w.grad))
    assert torch.equal(results[1][0], results[0][0])
    # the compiled graph may reduce the loss in another order
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[1][2], results[0][2], **FP32_GRAD)
    torch.testing.assert_close(results[1][3], results[0][3], rtol=1e-5, atol=1e-5)


def test_opcheck_cuda():
    x, v0, *_ = make_case(3, (65,), torch.float32, seed=13, device=DEVICE)
    k = torch.tensor(0.4, device=DEVICE, requires_grad=True)
    args = (x.requires_grad_(True), v0.requires_grad_(True), k, 1.0, -0.1, False, False, "sigmoid", 4.0,
            "cupy", True)
    torch.library.opcheck(functional.neuron_forward, args)


def test_rejects_bfloat16_on_gpu():
    x, v0, *_ = make_case(2, (5,), torch.float32, seed=14, device=DEVICE)
    with pytest.raises(TypeError, match="bfloat16"):
        neuron_multistep_cupy(x.bfloat16(), v0.bfloat16(), 0.5, **_opts("soft", False, True, "atan"))
