"""Neuron-level input checks: empty time axis, no neurons, NaN/inf inputs and a NaN PLIF weight."""

from __future__ import annotations

import pytest
import torch

from graphspike_kd.spiking import native
from graphspike_kd.spiking.neurons import IF, LIF, PLIF
from graphspike_kd.spiking.ratebp import RateBPNeuron

BACKENDS = ["torch"] + (["cpp"] if native.cpp_status()[0] else [])
NEURONS = {"IF": IF, "LIF": LIF, "PLIF": PLIF}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(NEURONS))
def test_empty_time_axis_is_a_value_error(name, backend):
    with pytest.raises(ValueError, match="T = 0"):
        NEURONS[name](backend=backend)(torch.zeros(0, 5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(NEURONS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [0, 2])
def test_non_finite_input_raises(name, backend, bad, where):
    x = torch.rand(3, 4, 5)
    x[where, 1, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        NEURONS[name](backend=backend)(x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_carried_membrane_raises(backend):
    lif = LIF(backend=backend, keep_state=True)
    lif(torch.rand(2, 3))
    lif.v = lif.v.clone()
    lif.v[1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        lif(torch.rand(2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_plif_weight_raises_naming_the_decay(backend):
    plif = PLIF(backend=backend)
    with torch.no_grad():
        plif.w.fill_(float("nan"))
    with pytest.raises(ValueError, match="decay factor"):
        plif(torch.rand(3, 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_finite_input_still_runs_and_backpropagates(backend):
    x = (torch.randn(4, 6) * 2).requires_grad_()
    plif = PLIF(backend=backend)
    plif(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(plif.w.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_neuron_raises_on_nan(backend):
    lif = torch.compile(LIF(backend=backend), fullgraph=True)
    lif(torch.rand(3, 4))
    x = torch.rand(3, 4)
    x[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        lif(x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0,)])
def test_ratebp_spike_pass_rejects_empty_input(backend, shape):
    neuron = RateBPNeuron(LIF(backend=backend))
    neuron.ratebp_mode = "spike"
    neuron.begin_spike_pass()
    with pytest.raises(ValueError, match="RateBPNeuron"):
        neuron(torch.zeros(*shape))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("plain", [True, False])
def test_ratebp_neuron_rejects_nan(backend, plain):
    neuron = RateBPNeuron(PLIF(backend=backend))
    x = torch.rand(3, 4)
    x[2, 0] = float("nan")
    if not plain:
        neuron.ratebp_mode = "spike"
        neuron.begin_spike_pass()
    with pytest.raises(ValueError, match="NaN or inf"):
        neuron(x)
