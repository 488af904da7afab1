"""Spiking neural networks and their distillation.

IF / LIF / PLIF neurons (torch path everywhere, a native C++ kernel on CPUs, CuPy CUDA kernels on GPUs;
drop-in conversion of spikingjelly and snntorch neurons), surrogate gradients,
rate-based backpropagation, enhanced self-distillation, Strong2Weak / Weak2Strong timestep KD,
event-camera data and the SNN trainer. Depends on :mod:`graphspike_kd.common`; never on
:mod:`graphspike_kd.graph`.
"""
