"""Fused multi-step neuron kernels (CUDA sources + CuPy launch + ``torch.library`` registration).

- :func:`cupy_status` says whether the kernels can run here, and the real reason if not.
- :func:`neuron_multistep_cupy` runs IF / LIF / PLIF over ``[T, ...]`` on the GPU, differentiable
  w.r.t. the input, the initial membrane and the decay factor.

The CUDA sources (``neuron_math.cuh``, ``neuron_multistep.cu``) are package data; the per-neuron
arithmetic is ``__host__ __device__`` so ``host_harness.cpp`` compiles it for the CPU in the tests.
CuPy is imported only when a kernel is compiled or launched.
"""

from graphspike_kd.spiking.kernels.cupy_backend import cupy_status
from graphspike_kd.spiking.kernels.ops import neuron_multistep_cupy
from graphspike_kd.spiking.kernels.sources import SURROGATES

__all__ = ["SURROGATES", "cupy_status", "neuron_multistep_cupy"]
