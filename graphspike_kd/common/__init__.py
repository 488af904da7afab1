"""Knowledge-distillation methods shared by the graph and spiking domains.

- :mod:`graphspike_kd.common.losses`: pure loss functions and thin ``nn.Module`` wrappers
  (KD, DKD, DIST, PLD, ...). All math runs in fp32 (or fp64 for fp64 inputs).
- :func:`get_loss` / :func:`available_losses`: the registry of loss modules by name.

This package imports neither :mod:`graphspike_kd.graph` nor :mod:`graphspike_kd.spiking`.
"""

from graphspike_kd.common.registry import available_losses, get_loss, register_loss

__all__ = ["available_losses", "get_loss", "register_loss"]
