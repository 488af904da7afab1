r"""scikit-learn's digits as a spiking-network dataset, and the small spiking VGGs trained on it.

The digits (1,797 grey images of 8x8 pixels, 10 classes) ship inside scikit-learn, so nothing is
downloaded. Pixel values :math:`0..16` are scaled to :math:`[0, 1]`; a sample is a static image
``[1, 8, 8]`` that the models direct-encode (the same image is the input current at every one of the ``T``
steps).

Example::

    from graphspike_kd.spiking.data.digits import digits_model, load_digits_split
    from graphspike_kd.spiking.train import TrainConfig, Trainer

    train, test = load_digits_split()
    model = digits_model("small", T=4)
    out = Trainer(model, TrainConfig(method="vanilla", T=4, epochs=20)).fit(train, test)
    print(out["final_test_acc"])  # percent
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

__all__ = ["DIGITS_CFG", "DIGITS_CFG3", "DIGITS_MODELS", "digits_model", "load_digits_split",
           "load_digits_tensors"]

#: The small spiking VGG (``"small"``): conv 16 (stem), conv 32, pool, conv 64, pool -> 2x2 on 8x8 digits.
#: Two stages, so ESD gets a single branch on it.
DIGITS_CFG: list[int | str] = [16, 32, "A", 64, "A"]

#: A three-stage variant (``"small3"``: 8x8 -> 4x4 -> 2x2 -> 1x1), for the rate-BP / ESD comparison: ESD
#: taps its first two stages, as the ESD paper taps the stages of ResNet-18 before the last.
DIGITS_CFG3: list[int | str] = [16, 16, "A", 32, "A", 64, "A"]

#: Names of the digits VGGs above.
DIGITS_MODELS: dict[str, list[int | str]] = {"small": DIGITS_CFG, "small3": DIGITS_CFG3}


def load_digits_tensors() -> tuple[Tensor, Tensor]:
    """All 1,797 digits as ``X [1797, 64]`` float32 in ``[0, 1]`` and ``y [1797]`` int64 (flat images)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data / 16.0, dtype=torch.float32), torch.tensor(data.target, dtype=torch.long)


def load_digits_split(split_seed: int = 0, test_size: float = 0.2) -> tuple[TensorDataset, TensorDataset]:
    """Train and test sets of images ``[1, 8, 8]`` in ``[0, 1]`` with int64 labels: a stratified split
    (scikit-learn ``train_test_split``) fixed by ``split_seed``.

    Args:
        split_seed (int): ``random_state`` of the split. (default: ``0``)
        test_size (float): fraction of the test set, in ``(0, 1)``. (default: ``0.2``: 1,437 / 360)

    Shapes:
        - **samples:** ``(x [1, 8, 8] float32, y int64)``; a DataLoader batch is ``[N, 1, 8, 8]``
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"load_digits_split: test_size must lie in (0, 1), got {test_size!r}")
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=split_seed)
    return (TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
            TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)))


def digits_model(name: str = "small", *, T: int = 4, neuron: dict[str, Any] | None = None,
                 esd: bool = False) -> nn.Module:
    """A spiking VGG of :data:`DIGITS_MODELS` for ``[N, 1, 8, 8]`` digits and 10 classes.

    Args:
        name (str): ``"small"`` or ``"small3"``. (default: ``"small"``)
        T (int): default time steps. (default: ``4``)
        neuron (dict or None): neuron config (see :func:`graphspike_kd.spiking.models.layers.make_neuron`;
            e.g. ``{"kind": "lif", "tau": 2.0, "backend": "cpp"}``); ``None`` = the rate-BP LIF.
            (default: ``None``)
        esd (bool): wrap in an :class:`~graphspike_kd.spiking.esd.ESDNet` (for ``method="esd"``).
            (default: ``False``)
    """
    from graphspike_kd.spiking.esd import ESDNet
    from graphspike_kd.spiking.models import SpikingVGG

    if name not in DIGITS_MODELS:
        raise ValueError(f"digits_model: name must be one of {sorted(DIGITS_MODELS)}, got {name!r}")
    model: nn.Module = SpikingVGG(DIGITS_MODELS[name], in_channels=1, num_classes=10, T=T, neuron=neuron)
    return ESDNet(model, 10, (1, 8, 8)) if esd else model
