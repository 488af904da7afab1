"""Loss registry: build any distillation loss by name.

>>> from graphspike_kd.common import get_loss, available_losses
>>> "dkd" in available_losses()
True
>>> criterion = get_loss("dkd", beta=2.0)  # an nn.Module: criterion(student_logits, teacher_logits, target)

Each registered class is an ``nn.Module`` whose ``forward(student_logits, teacher_logits, target=None)``
calls the pure function of the same method; constructor keyword arguments are that function's
keyword-only hyper-parameters.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}

ModuleT = TypeVar("ModuleT", bound=type[nn.Module])


def register_loss(name: str) -> Callable[[ModuleT], ModuleT]:
    """Class decorator registering an ``nn.Module`` loss under ``name`` (lower case, unique)."""
    key = name.lower()

    def decorator(cls: ModuleT) -> ModuleT:
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"a loss named {key!r} is already registered ({_REGISTRY[key].__qualname__})")
        _REGISTRY[key] = cls
        return cls

    return decorator


def _load_builtin_losses() -> None:
    # Importing the package registers every built-in loss through the decorator above.
    importlib.import_module("graphspike_kd.common.losses")


def available_losses() -> list[str]:
    """Sorted names accepted by :func:`get_loss`."""
    _load_builtin_losses()
    return sorted(_REGISTRY)


def get_loss(name: str, **kwargs) -> nn.Module:
    """Instantiate the loss module registered under ``name`` with hyper-parameters ``kwargs``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
        TypeError: a keyword argument the loss does not take.
    """
    _load_builtin_losses()
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key](**kwargs)
