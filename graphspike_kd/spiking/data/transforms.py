"""Frame augmentations used by the CIFAR10-DVS papers (TET / rate-BP / Synergy): flip, roll, resize.

All act on one sample of frames, a tensor ``[T, 2, H, W]`` (or any ``[..., H, W]``), and draw their
randomness from a ``torch.Generator`` passed in, so a seeded pipeline is reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(frames: Tensor, who: str) -> None:
    if not isinstance(frames, Tensor) or frames.ndim < 2:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"{who}: expected a tensor [..., H, W], got {shape}")


class Resize:
    """Resize frames to ``size x size`` (48 in TET / rate-BP / ESD / Synergy, 64 in some works).

    Bilinear, ``align_corners=False``, no antialiasing: what ``torchvision.transforms.Resize`` did on tensors
    when those papers were written (``antialias=None`` meant off for tensors).

    Args:
        size (int): output height and width.
        antialias (bool, optional): use antialiasing when downsampling. (default: ``False``)
    """

    def __init__(self, size: int, antialias: bool = False) -> None:
        if size < 1:
            raise ValueError(f"Resize: size must be >= 1, got {size}")
        self.size = int(size)
        self.antialias = antialias

    def __call__(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check(frames, "Resize")
        if frames.shape[-2:] == (self.size, self.size):
            return frames
        lead = frames.shape[:-2]
        flat = frames.reshape(-1, 1, *frames.shape[-2:]).float()
        out = F.interpolate(flat, size=(self.size, self.size), mode="bilinear", align_corners=False,
                            antialias=self.antialias)
        return out.reshape(*lead, self.size, self.size).to(frames.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, antialias={self.antialias})"


class RandomHorizontalFlip:
    """Flip the width axis with probability ``p`` (the same flip for all timesteps).

    Args:
        p (float, optional): flip probability. (default: ``0.5``)
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must lie in [0, 1], got {p}")
        self.p = p

    def __call__(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check(frames, "RandomHorizontalFlip")
        if float(torch.rand((), generator=generator)) < self.p:
            return frames.flip(-1)
        return frames

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomRoll:
    """Cyclically shift H and W by independent integer offsets drawn uniformly from
    ``[-max_shift, max_shift]``.

    TET's ``torch.roll(data, shifts=(off1, off2), dims=(2, 3))`` with ``off1, off2 ~ U{-5..5}``.

    Args:
        max_shift (int, optional): largest shift in pixels. (default: ``5``)
    """

    def __init__(self, max_shift: int = 5) -> None:
        if max_shift < 0:
            raise ValueError(f"RandomRoll: max_shift must be >= 0, got {max_shift}")
        self.max_shift = int(max_shift)

    def __call__(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check(frames, "RandomRoll")
        dy, dx = torch.randint(-self.max_shift, self.max_shift + 1, (2,), generator=generator).tolist()
        return torch.roll(frames, shifts=(dy, dx), dims=(-2, -1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_shift={self.max_shift})"


class Compose:
    """Apply transforms in order, passing the same generator to each."""

    def __init__(self, transforms: list) -> None:
        self.transforms = list(transforms)

    def __call__(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for transform in self.transforms:
            frames = transform(frames, generator)
        return frames

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


def dvs_train_transform(size: int = 48, *, flip: bool = True, max_roll: int = 5) -> Compose:
    """The TET / rate-BP training pipeline: resize to ``size``, random horizontal flip, random roll."""
    steps: list = [Resize(size)]
    if flip:
        steps.append(RandomHorizontalFlip(0.5))
    if max_roll > 0:
        steps.append(RandomRoll(max_roll))
    return Compose(steps)


def dvs_test_transform(size: int = 48) -> Compose:
    """Evaluation pipeline: resize only."""
    return Compose([Resize(size)])
