"""graphspike_kd: knowledge distillation for graph neural networks and spiking neural networks.

Subpackages (imported on demand, so ``import graphspike_kd`` stays fast and pulls in neither
torch-geometric nor transformers):

- :mod:`graphspike_kd.common`: the KD method zoo shared by both domains (KD, DKD, DIST, PLD, ...),
  with a loss registry (:func:`graphspike_kd.common.get_loss`).
- :mod:`graphspike_kd.graph`: PKD, preference-driven KD on text-attributed graphs with LLM annotators.
- :mod:`graphspike_kd.spiking`: spiking neurons, kernels, rate-based backpropagation and
  self-distillation for SNNs.
- :mod:`graphspike_kd.benchmarks`: runnable experiments, ``python -m graphspike_kd.benchmarks.<name>``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
