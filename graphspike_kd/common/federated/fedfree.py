r"""FedFree: data-free reverse layer-wise knowledge transfer with Knowledge Gain Entropy.

Du et al., "FedFree: Breaking Knowledge-sharing Barriers through Layer-wise Alignment in Heterogeneous
Federated Learning", NeurIPS 2025 (OpenReview G10Y4vrhGF), §3. Per round:

1. **Upload** (client): after local training, the per-layer change
   :math:`\Delta\theta_{i,l} = \|\theta^t_{i,l} - \theta^{t-1}_{i,l}\|_2`; the top-:math:`k` (= 2) changed
   layers are uploaded (:func:`layer_change_norms`, :func:`top_k_changed_layers`).
2. **Align** (server): Gaussian pseudo-data :math:`\hat X \sim \mathcal N(0, I)` shaped to each layer's
   input; each global layer :math:`g_j` takes SGD steps (lr 0.01) on
   :math:`\frac{1}{|L_j|}\sum \|\theta_{i,l}(\hat X) - g_j(\hat X)\|^2` over the uploaded layers mapped to
   it (:func:`layer_alignment_loss`, :meth:`FedFreeServer.align`).
3. **Distribute** (server → client): :math:`\mathrm{KGE}(\theta_{i,l}, g_j) = H(g_j) - H(\theta_{i,l})`
   with :math:`H` the Shannon entropy of a 256-bin weight histogram; the uploaded layer with the largest
   positive KGE is replaced by its global counterpart (:func:`knowledge_gain_entropy`,
   :meth:`FedFreeServer.distribute`).

Choices where the paper is open (documented, **inferred**):

- Layer mapping: client layers map to global layers of the same type by relative depth,
  :math:`j = \mathrm{round}(l (J-1)/(L-1))` (:func:`map_layers_by_depth`).
- Shape mismatch in alignment: the pseudo-input is drawn at the global layer's input size, truncated or
  zero-padded for the client layer; outputs are compared on the first :math:`\min(d^{out}_g, d^{out}_l)`
  units. Conv layers are aligned only when kernel size, stride and padding agree (otherwise skipped).
- Shape mismatch in distribution: the paper copies the first :math:`d_{min}` flattened entries. With
  different input sizes that puts input column :math:`c` of one layer onto column :math:`c'` of the other,
  so by default (``copy_mode="block"``) the overlapping block ``W[:min(out), :min(in)]`` (and
  ``b[:min(out)]``) is copied — exactly the part the alignment matched; ``copy_mode="flat"`` is the
  paper's rule. The rest **retains the client's local values** (the paper says both "zero-initialised"
  and "retain local initialisation"; zeroing would erase trained weights).
- The alignment distance is the squared L2 norm over output units, averaged over the probes (as the
  paper's :math:`\|\cdot\|^2`); with a per-element mean the 0.01 step would barely move a layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALIGNABLE = (nn.Linear, nn.Conv2d)


def alignable_layers(model: nn.Module) -> list[nn.Module]:
    """The model's ``nn.Linear`` / ``nn.Conv2d`` layers in registration (depth) order."""
    return [m for m in model.modules() if isinstance(m, ALIGNABLE)]


def _flat_params(layer: nn.Module) -> Tensor:
    parts = [layer.weight.detach().reshape(-1)]
    if getattr(layer, "bias", None) is not None:
        parts.append(layer.bias.detach().reshape(-1))
    return torch.cat(parts)


def histogram_entropy(weights: Tensor, bins: int = 256) -> float:
    r"""Shannon entropy (nats) of a ``bins``-bin histogram of the flattened ``weights`` over their own
    range :math:`[\min, \max]`: :math:`H = -\sum_b p_b \log p_b`. A constant tensor has :math:`H = 0`;
    the maximum is :math:`\log(\text{bins})`."""
    if bins < 1:
        raise ValueError(f"histogram_entropy: bins must be >= 1, got {bins}")
    w = weights.detach().reshape(-1).double()
    if w.numel() == 0:
        raise ValueError("histogram_entropy: empty weight tensor")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("histogram_entropy: weights contain non-finite values")
    lo, hi = float(w.min()), float(w.max())
    if hi == lo:
        return 0.0
    counts = torch.histc(w, bins=bins, min=lo, max=hi)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def knowledge_gain_entropy(client_layer: nn.Module | Tensor, global_layer: nn.Module | Tensor,
                           bins: int = 256) -> float:
    r""":math:`\mathrm{KGE}(\theta_{i,l}, g_j) = H(g_j) - H(\theta_{i,l})` on 256-bin histograms of the
    flattened parameters (weight and bias for layers). Positive = the global layer carries more
    information than the client's."""
    c = _flat_params(client_layer) if isinstance(client_layer, nn.Module) else client_layer
    g = _flat_params(global_layer) if isinstance(global_layer, nn.Module) else global_layer
    return histogram_entropy(g, bins) - histogram_entropy(c, bins)


def layer_change_norms(before: nn.Module, after: nn.Module) -> Tensor:
    r""":math:`\Delta\theta_l = \|\theta^{t}_l - \theta^{t-1}_l\|_2` per alignable layer (weight and bias
    together). ``before`` and ``after`` must share the architecture.

    Shapes: → :math:`(L)`."""
    a, b = alignable_layers(before), alignable_layers(after)
    if len(a) != len(b):
        raise ValueError(f"layer_change_norms: models have {len(a)} and {len(b)} alignable layers")
    norms = []
    for i, (la, lb) in enumerate(zip(a, b, strict=True)):
        pa, pb = _flat_params(la), _flat_params(lb)
        if pa.shape != pb.shape:
            raise ValueError(f"layer_change_norms: layer {i} has {pa.numel()} vs {pb.numel()} parameters")
        norms.append((pb - pa).norm())
    return torch.stack(norms)


def top_k_changed_layers(change_norms: Tensor, k: int = 2) -> list[int]:
    """Indices of the ``k`` largest changes, largest first (ties: lower index first)."""
    if change_norms.ndim != 1 or change_norms.numel() == 0:
        raise ValueError(
            f"top_k_changed_layers: expects a non-empty 1-D tensor, got {tuple(change_norms.shape)}"
        )
    if k < 1:
        raise ValueError(f"top_k_changed_layers: k must be >= 1, got {k}")
    order = torch.sort(change_norms, descending=True, stable=True).indices
    return order[: min(k, change_norms.numel())].tolist()


def map_layers_by_depth(client_model: nn.Module, global_model: nn.Module) -> list[int | None]:
    """For each alignable client layer, the index of the global layer of the same type at the closest
    relative depth (``None`` when the global model has no layer of that type)."""
    c_layers, g_layers = alignable_layers(client_model), alignable_layers(global_model)
    out: list[int | None] = []
    for i, layer in enumerate(c_layers):
        same_c = [j for j, m in enumerate(c_layers) if type(m) is type(layer)]
        same_g = [j for j, m in enumerate(g_layers) if type(m) is type(layer)]
        if not same_g:
            out.append(None)
            continue
        pos = same_c.index(i)
        rel = pos / (len(same_c) - 1) if len(same_c) > 1 else 1.0
        out.append(same_g[round(rel * (len(same_g) - 1))])
    return out


def _in_out(layer: nn.Module) -> tuple[int, int]:
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels, layer.out_channels


def _compatible(a: nn.Module, b: nn.Module) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, nn.Conv2d):
        return (a.kernel_size, a.stride, a.padding, a.dilation, a.groups) == (
            b.kernel_size, b.stride, b.padding, b.dilation, b.groups
        ) and a.groups == 1
    return True


def _fit_input(x: Tensor, size: int) -> Tensor:
    d = x.shape[1]
    if d >= size:
        return x[:, :size]
    pad = [0, 0] * (x.ndim - 2) + [0, size - d]
    return F.pad(x, pad)


def gaussian_probes(global_layer: nn.Module, num: int, *, spatial: int = 8,
                    generator: torch.Generator | None = None) -> Tensor:
    """Pseudo-data :math:`\\hat X \\sim \\mathcal N(0, I)` shaped to the global layer's input:
    ``[num, in_features]`` or ``[num, in_channels, spatial, spatial]``."""
    d_in, _ = _in_out(global_layer)
    shape = (num, d_in) if isinstance(global_layer, nn.Linear) else (num, d_in, spatial, spatial)
    return torch.randn(shape, generator=generator, dtype=global_layer.weight.dtype)


def layer_alignment_loss(client_layer: nn.Module, global_layer: nn.Module, probes: Tensor) -> Tensor:
    r""":math:`\frac1n\sum_n \|\theta_{i,l}(\hat x_n) - g_j(\hat x_n)\|^2` on the first
    :math:`\min(d^{out})` output units; gradients flow into ``global_layer`` only.

    ``probes`` are shaped for the global layer; they are truncated / zero-padded on the channel axis for
    the client layer."""
    if not _compatible(client_layer, global_layer):
        raise ValueError(
            f"layer_alignment_loss: cannot align {client_layer} with {global_layer} (different type or conv "
            "geometry)"
        )
    c_in, c_out = _in_out(client_layer)
    _, g_out = _in_out(global_layer)
    with torch.no_grad():
        target = client_layer(_fit_input(probes, c_in))
    pred = global_layer(probes)
    d = min(c_out, g_out)
    diff = (pred[:, :d] - target[:, :d]).pow(2)
    return diff.reshape(diff.shape[0], -1).sum(dim=1).mean()


@torch.no_grad()
def copy_overlap_(dst: Tensor, src: Tensor, mode: str = "block") -> int:
    """Copy ``src`` into ``dst`` in place where they overlap; the rest of ``dst`` keeps its values.

    ``mode="flat"``: the first ``d_min = min(dst.numel(), src.numel())`` flattened entries (the paper's
    rule). ``mode="block"``: the leading block ``[:min(s_0), :min(s_1), ...]`` (tensors of equal ndim).
    Returns the number of entries copied."""
    if mode == "flat":
        d = min(dst.numel(), src.numel())
        dst.view(-1)[:d] = src.reshape(-1)[:d].to(dst.dtype)
        return d
    if mode != "block":
        raise ValueError(f"copy_overlap_: mode must be 'block' or 'flat', got {mode!r}")
    if dst.ndim != src.ndim:
        raise ValueError(
            f"copy_overlap_: block copy needs equal ndim, got {tuple(dst.shape)} and {tuple(src.shape)}"
        )
    block = tuple(slice(0, min(a, b)) for a, b in zip(dst.shape, src.shape, strict=True))
    dst[block] = src[block].to(dst.dtype)
    return int(dst[block].numel())


class FedFreeServer:
    r"""The FedFree server: a global model of a fixed architecture, aligned layer by layer to the layers
    the clients upload, and a KGE-driven distribution of global layers back to the clients.

    Args:
        global_model (nn.Module): the server's model.
        server_lr (float, optional): SGD step size :math:`\alpha` of the alignment. (default: ``0.01``)
        align_steps (int, optional): SGD steps per :meth:`align` call. (default: ``20``)
        num_probes (int, optional): Gaussian pseudo-inputs per step. (default: ``64``)
        top_k (int, optional): layers uploaded per client. (default: ``2``)
        bins (int, optional): histogram bins of the entropy. (default: ``256``)
        copy_mode (str, optional): ``"block"`` or ``"flat"``, see :func:`copy_overlap_`.
            (default: ``"block"``)
        generator (torch.Generator, optional): source of the pseudo-data.
    """

    def __init__(
        self,
        global_model: nn.Module,
        *,
        server_lr: float = 0.01,
        align_steps: int = 20,
        num_probes: int = 64,
        top_k: int = 2,
        bins: int = 256,
        copy_mode: str = "block",
        generator: torch.Generator | None = None,
    ) -> None:
        if copy_mode not in ("block", "flat"):
            raise ValueError(f"FedFreeServer: copy_mode must be 'block' or 'flat', got {copy_mode!r}")
        self.copy_mode = copy_mode
        if server_lr <= 0 or align_steps < 0 or num_probes < 1 or top_k < 1 or bins < 1:
            raise ValueError(
                f"FedFreeServer: invalid settings server_lr={server_lr}, align_steps={align_steps}, "
                f"num_probes={num_probes}, top_k={top_k}, bins={bins}"
            )
        self.global_model = global_model
        self.server_lr, self.align_steps, self.num_probes = server_lr, align_steps, num_probes
        self.top_k, self.bins = top_k, bins
        self.generator = generator

    def select_upload(self, before: nn.Module, after: nn.Module) -> list[int]:
        """Client side: the indices of the ``top_k`` most changed alignable layers of ``after``."""
        return top_k_changed_layers(layer_change_norms(before, after), self.top_k)

    def align(self, uploads: Sequence[tuple[nn.Module, Sequence[int]]]) -> dict[str, float]:
        r"""Reverse layer-wise transfer: SGD on each global layer towards the uploaded client layers mapped
        to it, on fresh Gaussian probes each step. ``uploads`` = ``[(client_model, layer_indices), ...]``
        (the client's full model is passed only to read the uploaded layers).

        Returns ``{"pairs", "skipped", "loss"}`` (the mean alignment loss of the last step)."""
        g_layers = alignable_layers(self.global_model)
        groups: dict[int, list[nn.Module]] = {}
        skipped = 0
        for client_model, idx in uploads:
            c_layers = alignable_layers(client_model)
            mapping = map_layers_by_depth(client_model, self.global_model)
            for i in idx:
                if not 0 <= i < len(c_layers):
                    raise ValueError(
                        f"FedFreeServer.align: layer index {i} out of range [0, {len(c_layers)})"
                    )
                j = mapping[i]
                if j is None or not _compatible(c_layers[i], g_layers[j]):
                    skipped += 1
                    continue
                groups.setdefault(j, []).append(c_layers[i])
        last = 0.0
        for j, clients in groups.items():
            g = g_layers[j]
            params = [p for p in (g.weight, g.bias) if p is not None]
            for _ in range(self.align_steps):
                probes = gaussian_probes(g, self.num_probes, generator=self.generator)
                loss = sum(layer_alignment_loss(c, g, probes) for c in clients) / len(clients)
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    for p, gr in zip(params, grads, strict=True):
                        p -= self.server_lr * gr
            last += float(loss.detach()) / len(groups) if self.align_steps else 0.0
        return {"pairs": float(sum(len(v) for v in groups.values())), "skipped": float(skipped), "loss": last}

    @torch.no_grad()
    def distribute(self, client_model: nn.Module, uploaded: Sequence[int]) -> dict[str, float]:
        r"""Send the global layer with the largest positive KGE over the client's uploaded layers and
        overwrite the overlapping part of the client layer with it (see :func:`copy_overlap_`).

        Returns ``{"replaced": 0/1, "client_layer", "global_layer", "kge"}`` (``-1`` / ``nan`` if none)."""
        c_layers, g_layers = alignable_layers(client_model), alignable_layers(self.global_model)
        mapping = map_layers_by_depth(client_model, self.global_model)
        best: tuple[float, int, int] | None = None
        for i in uploaded:
            j = mapping[i]
            if j is None or type(c_layers[i]) is not type(g_layers[j]):
                continue
            kge = knowledge_gain_entropy(c_layers[i], g_layers[j], self.bins)
            if kge > 0 and (best is None or kge > best[0]):
                best = (kge, i, j)
        if best is None:
            return {"replaced": 0.0, "client_layer": -1.0, "global_layer": -1.0, "kge": math.nan}
        kge, i, j = best
        copy_overlap_(c_layers[i].weight, g_layers[j].weight, self.copy_mode)
        if c_layers[i].bias is not None and g_layers[j].bias is not None:
            copy_overlap_(c_layers[i].bias, g_layers[j].bias, self.copy_mode)
        return {"replaced": 1.0, "client_layer": float(i), "global_layer": float(j), "kge": kge}
