r"""A first layer that is fast on sparse CSR node features (bag of words, TF-IDF), in both passes.

``F.linear`` accepts a CSR input, but its backward pass computes the weight gradient
:math:`\nabla W = G^\top X` by transposing :math:`X` on every step: a sort of all non-zeros, which on Cora
(2,708 x 1,433, 49k non-zeros) costs more than the forward and backward matmuls together. Here the
transposed *structure* of :math:`X` is computed once per feature matrix and cached; each step only gathers
the current values (input dropout changes them, never the structure) and multiplies:

.. math::
    Y = X W^\top + b,\qquad \nabla W = \big(X^\top G\big)^\top,\qquad \nabla b = \textstyle\sum_i G_i

:func:`enable_sparse_input` switches the linear layers of a model that read the raw features to this path
by swapping their class for a subclass that overrides ``forward`` only (parameters, initialisation and
``state_dict`` keys are unchanged; dense inputs take the usual ``F.linear``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["csr_linear", "enable_sparse_input"]


class _TransposeCache:
    """Transposed CSR structure ``(crow, col, perm)`` of the last few sparsity structures seen.

    ``perm`` maps the transpose's non-zeros to the original's: ``values_T = values[perm]``. Entries are keyed
    by the addresses of ``crow_indices`` and ``col_indices`` and hold those tensors, so the memory cannot be
    freed and reused by another matrix while its entry exists (a stale structure is never returned);
    the oldest entry is dropped beyond ``size``."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = OrderedDict()

    def get(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        crow, col = x.crow_indices(), x.col_indices()
        key = (crow.data_ptr(), col.data_ptr(), col.numel(), tuple(x.shape), str(col.device))
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][2:]
        rows = torch.repeat_interleave(torch.arange(x.size(0), device=col.device), crow.diff())
        perm = torch.argsort(col, stable=True)
        t_col = rows[perm]
        t_crow = torch.zeros(x.size(1) + 1, dtype=crow.dtype, device=col.device)
        t_crow[1:] = torch.bincount(col, minlength=x.size(1)).cumsum(0)
        self._entries[key] = (crow, col, t_crow, t_col, perm)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return t_crow, t_col, perm


_TRANSPOSES = _TransposeCache()


class _CSRLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        out = torch.sparse.mm(x, weight.t())
        if bias is not None:
            out = out + bias
        ctx.x = x
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x: Tensor = ctx.x
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            t_crow, t_col, perm = _TRANSPOSES.get(x)
            x_t = torch.sparse_csr_tensor(
                t_crow, t_col, x.values()[perm], (x.size(1), x.size(0)), check_invariants=False
            )
            grad_weight = torch.sparse.mm(x_t, grad.contiguous()).t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return None, grad_weight, grad_bias


def csr_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for a sparse CSR ``x`` that needs no gradient, with the transposed
    structure of ``x`` cached for the weight gradient (see the module docstring). Any other ``x`` goes to
    :func:`torch.nn.functional.linear`.

    Shapes:
        - **input:** x :math:`(N, F_{in})` sparse CSR; weight :math:`(F_{out}, F_{in})`;
          bias :math:`(F_{out})`
        - **output:** :math:`(N, F_{out})` dense
    """
    if x.layout != torch.sparse_csr or x.requires_grad or x.dim() != 2:
        return F.linear(x, weight, bias)
    if x.size(1) != weight.size(1):
        raise ValueError(f"x has {x.size(1)} features but weight expects {weight.size(1)}")
    return _CSRLinear.apply(x, weight, bias)


_SUBCLASSES: dict[type, type] = {}


def _sparse_input_class(cls: type) -> type:
    if cls not in _SUBCLASSES:

        def forward(self, x: Tensor) -> Tensor:
            if isinstance(x, Tensor) and x.layout == torch.sparse_csr:
                return csr_linear(x, self.weight, self.bias)
            return cls.forward(self, x)

        _SUBCLASSES[cls] = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__})
    return _SUBCLASSES[cls]


def enable_sparse_input(module: nn.Module, in_features: int) -> int:
    """Route every linear layer of ``module`` with ``in_features`` inputs (``torch.nn.Linear`` or PyG's
    ``Linear``, initialised) through :func:`csr_linear` when it receives a CSR tensor. Returns the number of
    layers switched. Layers that never see a sparse input behave exactly as before."""
    from torch_geometric.nn.dense.linear import Linear as PyGLinear

    switched = 0
    for child in module.modules():
        if type(child) in _SUBCLASSES.values():
            continue
        if isinstance(child, nn.Linear):
            fan_in = child.in_features
        elif isinstance(child, PyGLinear):
            fan_in = child.in_channels
        else:
            continue
        if fan_in == in_features:
            if isinstance(child.weight, nn.parameter.UninitializedParameter):
                continue
            child.__class__ = _sparse_input_class(type(child))
            switched += 1
    return switched
