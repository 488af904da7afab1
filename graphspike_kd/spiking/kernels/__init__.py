"""The CUDA implementation of the multi-step neuron (``backend="cupy"``): sources, CuPy launch, probe.

- :func:`cupy_status` says whether the kernels can run here, and the real reason if not.
- :func:`cupy_forward` / :func:`cupy_backward` launch the fused forward and backward kernels; the
  custom ops of :mod:`graphspike_kd.spiking.functional` call them, and
  :func:`graphspike_kd.spiking.functional.neuron_multistep_cupy` is the differentiable entry point.

The CUDA sources (``neuron_math.cuh``, ``neuron_multistep.cu``) are package data; the per-neuron
arithmetic is ``__host__ __device__`` so ``host_harness.cpp`` compiles it for the CPU in the tests.
CuPy is imported only when a kernel is compiled or launched.
"""

from graphspike_kd.spiking.kernels.cupy_backend import cupy_status, require_cupy
from graphspike_kd.spiking.kernels.ops import cupy_backward, cupy_forward
from graphspike_kd.spiking.kernels.sources import SURROGATES

__all__ = ["SURROGATES", "cupy_status", "require_cupy", "cupy_forward", "cupy_backward"]
