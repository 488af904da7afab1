r"""Surrogate spike functions: Heaviside forward, a smooth derivative backward.

A spiking neuron fires :math:`s = \Theta(x) = \mathbb{1}[x \ge 0]` with :math:`x = h - \vartheta`. The
Heaviside step has zero gradient almost everywhere, so training replaces :math:`\Theta'(x)` in the
backward pass by the derivative :math:`g'(x)` of a smooth surrogate :math:`g` with sharpness
:math:`\alpha`. Each class below is an :class:`torch.nn.Module` that applies one
:class:`torch.autograd.Function` (:class:`SpikeFunction`: exact Heaviside forward, ``g'`` backward), and
exposes:

- ``name`` and ``alpha``;
- ``kernel_id``: the surrogate's number in the native CPU and CUDA kernels (the ``Surrogate`` enum of
  ``csrc/neuron_cpu.cpp`` and ``SurrogateKind`` of ``kernels/neuron_math.cuh``; a test parses both and
  compares them with these classes), and ``cuda_kernel``: whether the CUDA kernels inline it;
- :meth:`SurrogateFunction.derivative` / :meth:`SurrogateFunction.derivative_at`: :math:`g'` as plain
  tensor math, the latter written into a reused buffer by the multi-step torch path
  (:mod:`graphspike_kd.spiking.torch_loop`).

==================  =====  ==========================================================  ==  ===========
name                α      :math:`g'(x)`                                               id  CuPy kernel
==================  =====  ==========================================================  ==  ===========
``"sigmoid"``       4      :math:`\alpha\,\sigma(\alpha x)(1-\sigma(\alpha x))`        0   yes
``"atan"``          2      :math:`\frac{\alpha/2}{1 + (\frac{\pi}{2}\alpha x)^2}`      1   yes
``"rectangle"``     1      :math:`\alpha\,\mathbb{1}[|x| < \frac{1}{2\alpha}]`         2   yes
``"triangle"``      1      :math:`\alpha^2 \max(0, \frac{1}{\alpha} - |x|)`            3   yes
``"fast_sigmoid"``  25     :math:`\frac{1}{(1 + \alpha|x|)^2}` (SuperSpike, snntorch)  4   yes
``"erf"``           2      :math:`\frac{\alpha}{\sqrt{\pi}} e^{-\alpha^2 x^2}`         5   no
==================  =====  ==========================================================  ==  ===========

Every surrogate has a native CPU kernel (``backend="cpp"``).

Sigmoid / ATan / Erf / Rectangle follow spikingjelly's ``Sigmoid`` / ``ATan`` / ``Erf`` / ``Rect`` (same
α), Sigmoid / FastSigmoid / ATan agree with snntorch's ``sigmoid(slope)`` / ``fast_sigmoid(slope)`` /
``atan(alpha)``; :func:`as_surrogate` maps those objects to ours (neurons accept them directly).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "SpikeFunction",
    "SurrogateFunction",
    "Sigmoid",
    "ATan",
    "Rectangle",
    "Triangle",
    "FastSigmoid",
    "Erf",
    "get_surrogate",
    "available_surrogates",
    "CUDA_SURROGATES",
    "KERNEL_IDS",
    "SPIKINGJELLY_SURROGATES",
    "SNNTORCH_SURROGATES",
    "as_surrogate",
]


class SpikeFunction(torch.autograd.Function):
    r"""Heaviside forward :math:`s = \mathbb{1}[x \ge 0]`, surrogate derivative backward
    :math:`\partial L/\partial x = \partial L/\partial s \cdot g'(x)`.

    ``SpikeFunction.apply(x, surrogate)`` where ``surrogate`` is a :class:`SurrogateFunction`.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, surrogate: SurrogateFunction) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_spike: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad_spike * ctx.surrogate.derivative(x), None


class SurrogateFunction(nn.Module):
    """Base class: ``forward(x)`` spikes with a surrogate gradient; subclasses define ``derivative``.

    Args:
        alpha (float): sharpness :math:`\\alpha` of the surrogate (must be positive).
    """

    name: str = ""
    default_alpha: float = 1.0
    #: number of this surrogate in the native CPU and CUDA kernels (``None``: torch path only)
    kernel_id: int | None = None
    #: whether the fused CUDA kernels inline this surrogate
    cuda_kernel: bool = False

    def __init__(self, alpha: float | None = None) -> None:
        super().__init__()
        alpha = self.default_alpha if alpha is None else float(alpha)
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"{type(self).__name__}: alpha must be a positive finite number, got {alpha!r}")
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return SpikeFunction.apply(x, self)

    def derivative(self, x: Tensor) -> Tensor:
        """The surrogate derivative :math:`g'(x)` as a new tensor (same shape and dtype as ``x``)."""
        return self.derivative_at(x, 0.0, out=torch.empty_like(x))

    def derivative_at(self, h: Tensor, threshold: float, out: Tensor) -> Tensor:
        """Write :math:`g'(h - \\vartheta)` into ``out`` (same shape as ``h``; may not alias it) and return
        it. Used by the multi-step backward, which reuses one buffer per step: a few in-place passes
        over cache-resident data instead of fresh allocations."""
        raise NotImplementedError

    @property
    def has_cuda_kernel(self) -> bool:
        """Whether the fused CuPy kernels inline this surrogate."""
        return self.cuda_kernel

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha})"


class Sigmoid(SurrogateFunction):
    r"""Sigmoid surrogate (spikingjelly's default).

    .. math::
        g(x) = \sigma(\alpha x), \qquad g'(x) = \alpha\, \sigma(\alpha x)\,(1 - \sigma(\alpha x))

    Args:
        alpha (float, optional): sharpness. (default: ``4.0``)
    """

    name = "sigmoid"
    kernel_id = 0
    cuda_kernel = True
    default_alpha = 4.0

    def __init__(self, alpha: float = 4.0) -> None:
        super().__init__(alpha)

    def derivative_at(self, h: Tensor, threshold: float, out: Tensor) -> Tensor:
        # alpha * (h - threshold) in one pass, sigma in place, then alpha * g * (1 - g) in one pass
        shift = torch.full((), -self.alpha * threshold, dtype=h.dtype, device=h.device)
        torch.add(shift, h, alpha=self.alpha, out=out).sigmoid_()
        alpha = torch.full((), self.alpha, dtype=h.dtype, device=h.device)
        return torch.ops.aten.sigmoid_backward.grad_input(alpha, out, grad_input=out)


class ATan(SurrogateFunction):
    r"""Arc-tangent surrogate (snntorch's default, spikingjelly's ``ATan``).

    .. math::
        g(x) = \frac{1}{\pi}\arctan\!\left(\frac{\pi}{2}\alpha x\right) + \frac{1}{2}, \qquad
        g'(x) = \frac{\alpha / 2}{1 + \left(\frac{\pi}{2}\alpha x\right)^2}

    Args:
        alpha (float, optional): sharpness. (default: ``2.0``)
    """

    name = "atan"
    kernel_id = 1
    cuda_kernel = True
    default_alpha = 2.0

    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__(alpha)

    def derivative_at(self, h: Tensor, threshold: float, out: Tensor) -> Tensor:
        z = torch.sub(h, threshold, out=out).mul_(math.pi / 2 * self.alpha)
        return z.square_().add_(1.0).reciprocal_().mul_(self.alpha / 2)


class Rectangle(SurrogateFunction):
    r"""Rectangular (boxcar) surrogate, area 1.

    .. math::
        g'(x) = \alpha\, \mathbb{1}\!\left[|x| < \frac{1}{2\alpha}\right]

    Args:
        alpha (float, optional): height; the window is :math:`1/\alpha` wide. (default: ``1.0``)
    """

    name = "rectangle"
    kernel_id = 2
    cuda_kernel = True
    default_alpha = 1.0

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha)

    def derivative_at(self, h: Tensor, threshold: float, out: Tensor) -> Tensor:
        return torch.sub(h, threshold, out=out).abs_().lt_(0.5 / self.alpha).mul_(self.alpha)


class Triangle(SurrogateFunction):
    r"""Triangular surrogate, area 1.

    .. math::
        g'(x) = \alpha^2 \max\!\left(0, \frac{1}{\alpha} - |x|\right)

    Args:
        alpha (float, optional): peak height; the support is :math:`|x| < 1/\alpha`. (default: ``1.0``)
    """

    name = "triangle"
    kernel_id = 3
    cuda_kernel = True
    default_alpha = 1.0

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha)

    def derivative_at(self, h: Tensor, threshold: float, out: Tensor) -> Tensor:
        z = torch.sub(h, threshold, out=out).abs_().sub_(1.0 / self.alpha).clamp_(max=0.0)
        return z.mul_(-self.alpha * self.alpha)


class FastSigmoid(SurrogateFunction):
    r"""Fast-sigmoid (SuperSpike) surrogate; ``alpha`` is snntorch's ``slope``.

    .. math::
        g(x) = \frac{x}{1 + \alpha|x|}, \qquad g'(x) = \frac{1}{(1 + \alpha|x|)^2}

    Reference: F. Zenke, S. Ganguli, "SuperSpike: Supervised Learning in Multilayer Spiking Neural
    Networks", Neural Computation 30(6), 2018.

    Args:
        alpha (float, optional): slope. (default: ``25.0``, snntorch's default)
    """

    name = "fast_sigmoid"
    kernel_id = 4
    cuda_kernel = True
    default_alpha = 25.0

    def __init__(self, alpha: float = 25.0) -> None:
        super().__init__(alpha)

    def derivative_at(self, h: Tensor, threshold: float, out: Tensor) -> Tensor:
        z = torch.sub(h, threshold, out=out).abs_().mul_(self.alpha).add_(1.0)
        return z.square_().reciprocal_()


class Erf(SurrogateFunction):
    r"""Gaussian-error-function surrogate (spikingjelly's ``Erf``); torch path only, no CuPy kernel.

    .. math::
        g(x) = \frac{1}{2}\left(1 + \mathrm{erf}(\alpha x)\right), \qquad
        g'(x) = \frac{\alpha}{\sqrt{\pi}} e^{-\alpha^2 x^2}

    Args:
        alpha (float, optional): sharpness. (default: ``2.0``)
    """

    name = "erf"
    kernel_id = 5
    default_alpha = 2.0

    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__(alpha)

    def derivative_at(self, h: Tensor, threshold: float, out: Tensor) -> Tensor:
        z = torch.sub(h, threshold, out=out).mul_(self.alpha)
        return z.square_().neg_().exp_().mul_(self.alpha / math.sqrt(math.pi))


_SURROGATES: dict[str, type[SurrogateFunction]] = {
    cls.name: cls for cls in (Sigmoid, ATan, Rectangle, Triangle, FastSigmoid, Erf)
}


#: Surrogate name -> its number in the native CPU and CUDA kernels (from the classes' ``kernel_id``).
KERNEL_IDS: dict[str, int] = {
    name: cls.kernel_id for name, cls in _SURROGATES.items() if cls.kernel_id is not None
}

#: Surrogates that the fused CUDA kernels inline (from the classes' ``cuda_kernel``).
CUDA_SURROGATES: frozenset[str] = frozenset(name for name, cls in _SURROGATES.items() if cls.cuda_kernel)


def available_surrogates() -> list[str]:
    """Names accepted by :func:`get_surrogate` (and by ``surrogate_name`` in the functional API)."""
    return sorted(_SURROGATES)


def get_surrogate(name: str, alpha: float | None = None) -> SurrogateFunction:
    """Build a surrogate by name, e.g. ``get_surrogate("atan", alpha=2.0)``; ``alpha=None`` uses the
    class default."""
    try:
        cls = _SURROGATES[name]
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}; available: {available_surrogates()}") from None
    return cls() if alpha is None else cls(alpha)


#: spikingjelly 2.0 surrogate class (``spikingjelly.activation_based.surrogate``) -> our name, same alpha.
SPIKINGJELLY_SURROGATES: dict[str, str] = {"Sigmoid": "sigmoid", "ATan": "atan", "Erf": "erf",
                                           "Rect": "rectangle"}
#: snntorch surrogate factory (``snntorch.surrogate``) -> (our name, the factory argument that is alpha).
SNNTORCH_SURROGATES: dict[str, tuple[str, str]] = {"atan": ("atan", "alpha"),
                                                   "fast_sigmoid": ("fast_sigmoid", "slope"),
                                                   "sigmoid": ("sigmoid", "slope")}


def _from_spikingjelly(obj: Any, where: str) -> SurrogateFunction:
    name = type(obj).__name__
    if name not in SPIKINGJELLY_SURROGATES:
        raise ValueError(f"{where}: spikingjelly surrogate {name} has no graphspike_kd equivalent; "
                         f"supported: {sorted(SPIKINGJELLY_SURROGATES)}")
    if not getattr(obj, "spiking", True):
        raise ValueError(f"{where}: spikingjelly surrogate {obj!r} is in non-spiking mode; only spiking mode "
                         "maps")
    return get_surrogate(SPIKINGJELLY_SURROGATES[name], float(obj.alpha))


def _from_snntorch(obj: Any, where: str) -> SurrogateFunction:
    qualname = getattr(obj, "__qualname__", "") or type(obj).__name__
    factory = qualname.split(".<locals>")[0]
    closure = getattr(obj, "__closure__", None)
    if factory not in SNNTORCH_SURROGATES or not closure:
        raise ValueError(f"{where}: snntorch surrogate {qualname} has no graphspike_kd equivalent; "
                         f"supported: snntorch.surrogate.{{{', '.join(sorted(SNNTORCH_SURROGATES))}}}")
    name, param = SNNTORCH_SURROGATES[factory]
    cells = dict(zip(obj.__code__.co_freevars, closure, strict=True))
    return get_surrogate(name, float(cells[param].cell_contents))


def as_surrogate(obj: Any, where: str = "surrogate") -> SurrogateFunction:
    """``obj`` as a :class:`SurrogateFunction`: ours as it is; a spikingjelly 2.0 surrogate (``Sigmoid``,
    ``ATan``, ``Erf``, ``Rect``, spiking mode) or a snntorch spike gradient (``surrogate.atan(alpha)``,
    ``fast_sigmoid(slope)``, ``sigmoid(slope)``) mapped to ours with the same sharpness. Neither library is
    imported: objects are recognised by their module.

    Raises:
        ValueError: a spikingjelly or snntorch surrogate without an equivalent (named in the message).
        TypeError: anything else.
    """
    if isinstance(obj, SurrogateFunction):
        return obj
    module = type(obj).__module__ or ""
    if module.startswith("spikingjelly."):
        return _from_spikingjelly(obj, where)
    if callable(obj) and (getattr(obj, "__module__", None) or module).startswith("snntorch."):
        return _from_snntorch(obj, where)
    raise TypeError(f"{where}: surrogate must be a graphspike_kd.spiking.surrogate.SurrogateFunction, "
                    "a spikingjelly surrogate or a snntorch.surrogate spike gradient, got "
                    f"{type(obj).__name__} {obj!r}")
