"""Spiking VGG / ResNet families on graphspike_kd's neurons, trainable by BPTT and by rate-BP.

``get_model("vggsnn" | "vgg9" | "vgg11" | "resnet18" | "resnet19", **kwargs)`` or the classes directly.
"""

from __future__ import annotations

from typing import Any

from graphspike_kd.spiking.models.base import SpikingNet
from graphspike_kd.spiking.models.layers import (
    RATEBP_NEURON,
    ClassifierHead,
    ConvBNNeuron,
    SeqAvgPool,
    SeqToANN,
    make_neuron,
)
from graphspike_kd.spiking.models.resnet import SpikingBasicBlock, SpikingResNet, resnet18, resnet19
from graphspike_kd.spiking.models.vgg import VGG_CONFIGS, SpikingVGG, vgg9, vgg11, vggsnn

__all__ = ["SpikingNet", "SpikingVGG", "SpikingResNet", "SpikingBasicBlock", "ConvBNNeuron", "SeqToANN",
           "SeqAvgPool", "ClassifierHead", "RATEBP_NEURON", "make_neuron", "VGG_CONFIGS", "vggsnn", "vgg9",
           "vgg11", "resnet18", "resnet19", "get_model", "available_models"]

_MODELS = {"vggsnn": vggsnn, "vgg9": vgg9, "vgg11": vgg11, "resnet18": resnet18, "resnet19": resnet19}


def available_models() -> list[str]:
    """Names accepted by :func:`get_model`."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs: Any) -> SpikingNet:
    """Build a spiking model by name (``in_channels``, ``num_classes``, ``T``, ``neuron`` as kwargs)."""
    if name not in _MODELS:
        raise ValueError(f"unknown spiking model {name!r}; available: {available_models()}")
    return _MODELS[name](**kwargs)
