"""A literal step-by-step autograd implementation of the neuron contract, for tests only."""

from __future__ import annotations

import torch
from torch import Tensor

from graphspike_kd.spiking.surrogate import SpikeFunction, get_surrogate


def reference_multistep(x_seq: Tensor, v_init: Tensor, decay: Tensor, *, v_threshold: float,
                        v_reset: float | None, decay_input: bool, detach_reset: bool,
                        surrogate_name: str, alpha: float | None = None) -> tuple[Tensor, Tensor]:
    """Spikes ``[T, ...]`` and last membrane, built as a plain T-deep autograd graph."""
    surrogate = get_surrogate(surrogate_name, alpha)
    v_r = 0.0 if v_reset is None else v_reset
    v = v_init
    spikes = []
    for x in x_seq.unbind(0):
        if decay_input:
            h = v + decay * (x - (v - v_r))
        else:
            h = v - decay * (v - v_r) + x
        s = SpikeFunction.apply(h - v_threshold, surrogate)
        s_r = s.detach() if detach_reset else s
        if v_reset is None:
            v = h - v_threshold * s_r
        else:
            v = h * (1 - s_r) + v_reset * s_r
        spikes.append(s)
    return torch.stack(spikes), v
