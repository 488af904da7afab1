r"""Token-level distillation for language models, and AdaSPEC's selective KD for speculative decoding drafts.

All token losses take ``(student_logits, teacher_logits, labels, ignore_index)`` with logits
``[B, L, V]`` already aligned with ``labels`` ``[B, L]`` (for a causal LM, drop the last logit position
and the first label: :func:`shift_for_causal_lm`); positions whose label equals ``ignore_index`` are
padding / prompt and never count. They can return per-token values (``reduction="none"``), so a
selector (AdaSPEC's top-k on :math:`\Delta L`, or your own) composes on top and a Hugging Face
``Trainer.compute_loss`` adapter stays a thin shim.

- :func:`token_kl`: per-token forward KL :math:`\mathrm{KL}(P \| Q)`.
- :func:`token_kd_loss` (registry ``"token_kd"``): plain token KD (DistillSpec-style forward KL).
- :func:`adaspec_select`, :func:`adaspec_terms`, :func:`adaspec_loss` (registry ``"adaspec"``).
- :func:`acceptance_rate`, :func:`speculative_decoding_acceptance`, :func:`block_efficiency`: how a draft
  would fare in speculative decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from graphspike_kd.common.losses._validation import check_finite, check_reduction, check_temperature, upcast
from graphspike_kd.common.losses.soft_target import soft_target_loss
from graphspike_kd.common.registry import register_loss

IGNORE_INDEX = -100
TOKEN_REDUCTIONS = ("mean", "sum", "none")


def shift_for_causal_lm(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Align next-token logits with their labels: ``logits[:, :-1]`` predicts ``labels[:, 1:]``."""
    if logits.ndim != 3 or labels.ndim != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"shift_for_causal_lm: expects logits [B, L, V] and labels [B, L], got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    return logits[:, :-1], labels[:, 1:]


def check_token_logits(
    *logits: Tensor, labels: Tensor | None, ignore_index: int, loss_name: str
) -> tuple[list[Tensor], Tensor]:
    """Validate ``[B, L, V]`` logits of equal shape (and ``[B, L]`` integer labels).

    Returns the logits upcast to a common fp32/fp64 dtype and the ``[B, L]`` bool mask of valid tokens.
    """
    shape = None
    for i, x in enumerate(logits):
        if not isinstance(x, Tensor) or x.ndim != 3 or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{loss_name}: logits #{i} must be a floating [B, L, V] tensor, got {got}")
        if shape is None:
            shape = x.shape
        elif x.shape != shape:
            raise ValueError(f"{loss_name}: logits shapes differ: {tuple(shape)} vs {tuple(x.shape)}")
        check_finite(x, f"logits #{i}", loss_name)
    assert shape is not None
    if shape[2] < 1:
        raise ValueError(f"{loss_name}: vocabulary size must be >= 1, got shape {tuple(shape)}")
    if labels is None:
        mask = torch.ones(shape[:2], dtype=torch.bool, device=logits[0].device)
    else:
        if not isinstance(labels, Tensor) or tuple(labels.shape) != tuple(shape[:2]):
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"{loss_name}: labels must have shape [B, L] = {list(shape[:2])}, got {got}")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"{loss_name}: labels must be integer token ids, got dtype {labels.dtype}")
        mask = labels != ignore_index
        valid = labels[mask]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= shape[2]):
            raise ValueError(
                f"{loss_name}: labels must lie in [0, {shape[2]}) or equal ignore_index={ignore_index}, "
                f"got min {int(valid.min())}, max {int(valid.max())}"
            )
    dtype = upcast(logits[0]).dtype
    for x in logits[1:]:
        dtype = torch.promote_types(dtype, upcast(x).dtype)
    return [x.to(dtype) for x in logits], mask


def _reduce_tokens(per_token: Tensor, mask: Tensor, reduction: str, loss_name: str) -> Tensor:
    if reduction == "none":
        return per_token
    total = (per_token * mask).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        # an all-ignored batch gives 0 (still attached to the graph), not 0/0
        return total / mask.sum().clamp_min(1)
    raise ValueError(f"{loss_name}: reduction must be one of {TOKEN_REDUCTIONS}, got {reduction!r}")


def token_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    temperature: float = 1.0,
) -> Tensor:
    r"""Per-token forward KL :math:`\mathrm{KL}\big(P(\cdot|x_{<i}) \,\|\, Q(\cdot|x_{<i})\big)`,
    :math:`P = \mathrm{softmax}(z^t/T)` (teacher / target model), :math:`Q = \mathrm{softmax}(z^s/T)`.

    Shapes: logits :math:`(B, L, V)`, labels :math:`(B, L)` → :math:`(B, L)`, 0 at ignored positions.
    """
    return _token_kl(student_logits, teacher_logits, labels, ignore_index, temperature, False, "token_kl")


def _token_kl(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None, ignore_index: int,
              temperature: float, t2_scale: bool, loss_name: str) -> Tensor:
    check_temperature(temperature, loss_name)
    (s, t), mask = check_token_logits(
        student_logits, teacher_logits, labels=labels, ignore_index=ignore_index, loss_name=loss_name
    )
    v = s.shape[-1]
    kl = soft_target_loss(
        s.reshape(-1, v), t.reshape(-1, v), temperature=temperature, t2_scale=t2_scale, reduction="none"
    )
    return kl.view(mask.shape) * mask


def token_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Plain token-level KD (forward KL, DistillSpec-style): the mean of :func:`token_kl` over valid
    tokens, times :math:`T^2`.

    .. math:: \mathcal{L} = \frac{T^2}{|\mathcal V|}\sum_{i \in \mathcal V}
        \mathrm{KL}(P_i \| Q_i), \qquad \mathcal V = \{i : y_i \ne \text{ignore\_index}\}

    Args:
        student_logits, teacher_logits: aligned logits.
        labels: token ids (only used for the mask); ``None`` = every position valid.
        ignore_index (int, optional): label of masked positions. (default: ``-100``)
        temperature (float, optional): :math:`T`. (default: ``1.0``, as AdaSPEC)
        reduction (str, optional): ``"mean"`` over valid tokens (0 if there are none), ``"sum"``, or
            ``"none"`` for :math:`(B, L)`. (default: ``"mean"``)

    Shapes: :math:`(B, L, V)`, :math:`(B, L, V)`, :math:`(B, L)` → scalar or :math:`(B, L)`.
    """
    check_reduction(reduction, "token_kd_loss", TOKEN_REDUCTIONS)
    # T^2 applied per token inside the KL, so a huge KL that T^2 < 1 brings back into range stays finite
    kl = _token_kl(student_logits, teacher_logits, labels, ignore_index, temperature, True, "token_kd_loss")
    mask = (labels != ignore_index) if labels is not None else torch.ones_like(kl, dtype=torch.bool)
    return _reduce_tokens(kl, mask, reduction, "token_kd_loss")


def adaspec_select(delta: Tensor, valid: Tensor, *, k: float = 0.4) -> Tensor:
    r"""AdaSPEC's token filter: the top :math:`\lceil k\,|\mathcal V|\rceil` valid tokens by
    :math:`\Delta L`, over the whole micro-batch (not per sequence).

    Ties are broken by position (a stable sort), so exactly :math:`\lceil k |\mathcal V| \rceil` tokens are
    kept; the reference code thresholds at the :math:`(1-k)`-quantile instead, which can keep a few more
    on ties. An all-ignored batch selects nothing.

    Shapes: delta, valid :math:`(B, L)` → bool :math:`(B, L)`.
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"adaspec_select: k must lie in (0, 1], got {k}")
    if delta.shape != valid.shape:
        raise ValueError(f"adaspec_select: delta {tuple(delta.shape)} and valid {tuple(valid.shape)} differ")
    flat_valid = valid.reshape(-1)
    n_valid = int(flat_valid.sum())
    selected = torch.zeros_like(flat_valid)
    if n_valid == 0:
        return selected.view_as(valid)
    count = min(n_valid, math.ceil(k * n_valid - 1e-9))
    key = delta.detach().reshape(-1).masked_fill(~flat_valid, float("-inf"))
    order = torch.sort(key, descending=True, stable=True).indices[:count]
    selected[order] = True
    return selected.view_as(valid)


def adaspec_terms(
    draft_logits: Tensor,
    target_logits: Tensor,
    reference_logits: Tensor,
    labels: Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    k: float = 0.4,
    temperature: float = 1.0,
) -> dict[str, Tensor]:
    """Per-token ``"draft_kl"``, ``"reference_kl"``, ``"delta"`` (all :math:`(B, L)`, 0 where ignored), the
    bool ``"selected"`` mask, ``"selected_fraction"`` (of valid tokens) and the scalar ``"loss"`` of
    :func:`adaspec_loss`."""
    check_temperature(temperature, "adaspec_loss")
    (q, p, r), valid = check_token_logits(
        draft_logits, target_logits, reference_logits, labels=labels, ignore_index=ignore_index,
        loss_name="adaspec_loss",
    )
    v = q.shape[-1]
    target = p.detach().reshape(-1, v)

    def forward_kl(x: Tensor) -> Tensor:
        kl = soft_target_loss(x.reshape(-1, v), target, temperature=temperature, reduction="none")
        return kl.view(valid.shape) * valid

    draft_kl = forward_kl(q)
    with torch.no_grad():
        ref_kl = forward_kl(r)
    delta = draft_kl.detach() - ref_kl
    selected = adaspec_select(delta, valid, k=k)
    n_sel = selected.sum()
    loss = (draft_kl * selected).sum() / n_sel.clamp_min(1) * temperature**2
    return {
        "loss": loss,
        "draft_kl": draft_kl,
        "reference_kl": ref_kl,
        "delta": delta,
        "selected": selected,
        "selected_fraction": n_sel / valid.sum().clamp_min(1),
    }


def adaspec_loss(
    draft_logits: Tensor,
    target_logits: Tensor,
    reference_logits: Tensor,
    labels: Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    k: float = 0.4,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""AdaSPEC selective distillation (Hu et al., NeurIPS 2025).

    With :math:`P` the target model, :math:`Q` the draft being trained and :math:`R` a reference model
    (the draft's initialisation already distilled from :math:`P` with forward KL), per valid token :math:`w`:

    .. math::
        \Delta L(w) = \mathrm{KL}(P \| Q)(w) - \mathrm{KL}(P \| R)(w), \qquad
        S = \text{top } \lceil k|\mathcal V| \rceil \text{ tokens by } \Delta L, \qquad
        \mathcal{L} = \frac{T^2}{|S|} \sum_{w \in S} \mathrm{KL}(P \| Q)(w)

    A large :math:`\Delta L` marks a token the draft is far from but a same-size model can learn;
    tokens even the reference misses (small :math:`\Delta L`) are dropped as too hard. Selection runs
    over all valid tokens of the micro-batch, so results depend on the micro-batch size. The target and
    reference logits get no gradient. With ``k=1`` this is :func:`token_kd_loss`. An all-ignored batch
    returns 0 (attached to the draft's graph).

    Args:
        draft_logits: draft (student) logits :math:`Q`.
        target_logits: target (teacher) logits :math:`P`.
        reference_logits: reference-model logits :math:`R`.
        labels: token ids for the mask (``None``: all valid).
        ignore_index (int, optional): (default: ``-100``)
        k (float, optional): kept fraction. (default: ``0.4``, the paper's value everywhere)
        temperature (float, optional): (default: ``1.0``)
        reduction (str, optional): ``"mean"`` over selected tokens, ``"sum"``, or ``"none"`` for the
            :math:`(B, L)` draft KL with unselected positions zeroed. (default: ``"mean"``)

    Shapes: three :math:`(B, L, V)` and :math:`(B, L)` → scalar or :math:`(B, L)`.

    Reference: Y. Hu, Z. Guo, et al., "AdaSPEC: Selective Knowledge Distillation for Efficient
    Speculative Decoders", NeurIPS 2025, arXiv:2510.19779.
    """
    check_reduction(reduction, "adaspec_loss", TOKEN_REDUCTIONS)
    terms = adaspec_terms(
        draft_logits, target_logits, reference_logits, labels, ignore_index=ignore_index, k=k,
        temperature=temperature,
    )
    if reduction == "mean":
        return terms["loss"]
    per_token = terms["draft_kl"] * terms["selected"] * temperature**2
    return _reduce_tokens(per_token, terms["selected"], reduction, "adaspec_loss")


@register_loss("token_kd")
class TokenKDLoss(nn.Module):
    """Module form of :func:`token_kd_loss`: ``forward(student_logits, teacher_logits, target=None)`` with
    ``target`` the ``[B, L]`` labels (``ignore_index`` masked)."""

    def __init__(self, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX, reduction: str = "mean"):
        super().__init__()
        check_temperature(temperature, "TokenKDLoss")
        check_reduction(reduction, "TokenKDLoss", TOKEN_REDUCTIONS)
        self.temperature, self.ignore_index, self.reduction = temperature, ignore_index, reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        return token_kd_loss(
            student_logits, teacher_logits, target, ignore_index=self.ignore_index,
            temperature=self.temperature, reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, ignore_index={self.ignore_index}"


@register_loss("adaspec")
class AdaSPECLoss(nn.Module):
    """Module form of :func:`adaspec_loss`: ``forward(student_logits, teacher_logits, target=None, *,
    reference_logits)`` — student = draft, teacher = target model, ``target`` = ``[B, L]`` labels; the
    reference model's logits are a required keyword argument."""

    def __init__(
        self,
        k: float = 0.4,
        temperature: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_temperature(temperature, "AdaSPECLoss")
        check_reduction(reduction, "AdaSPECLoss", TOKEN_REDUCTIONS)
        if not 0.0 < k <= 1.0:
            raise ValueError(f"AdaSPECLoss: k must lie in (0, 1], got {k}")
        self.k, self.temperature, self.ignore_index, self.reduction = k, temperature, ignore_index, reduction

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        target: Tensor | None = None,
        *,
        reference_logits: Tensor | None = None,
    ) -> Tensor:
        if reference_logits is None:
            raise ValueError(
                "AdaSPECLoss needs the reference model's logits: "
                "loss(draft_logits, target_logits, labels, reference_logits=ref_logits)"
            )
        return adaspec_loss(
            student_logits, teacher_logits, reference_logits, target, ignore_index=self.ignore_index,
            k=self.k, temperature=self.temperature, reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"k={self.k}, temperature={self.temperature}, ignore_index={self.ignore_index}"


# ---------------------------------------------------------------------------------------------------------
# speculative decoding diagnostics


def acceptance_rate(
    draft_logits: Tensor,
    target_logits: Tensor,
    labels: Tensor | None = None,
    *,
    mode: str = "greedy",
    ignore_index: int = IGNORE_INDEX,
    temperature: float = 1.0,
) -> float:
    r"""Teacher-forced token acceptance rate of a draft under speculative decoding.

    - ``"greedy"``: the draft's token is accepted iff it equals the target's greedy token,
      :math:`\mathbb 1[\arg\max Q = \arg\max P]`.
    - ``"sampled"``: speculative sampling accepts :math:`x \sim Q` with probability
      :math:`\min(1, P(x)/Q(x))`; the expected acceptance is
      :math:`\sum_x \min(P(x), Q(x)) = 1 - \mathrm{TV}(P, Q)` (computed exactly, no sampling), with
      :math:`P, Q` at ``temperature``.

    Averaged over valid positions; ``nan`` if there are none. For the rate of a full decoding loop
    (contexts produced by the draft itself) see :func:`speculative_decoding_acceptance`.

    Shapes: :math:`(B, L, V)`, :math:`(B, L, V)`, :math:`(B, L)` → float.
    """
    if mode not in ("greedy", "sampled"):
        raise ValueError(f"acceptance_rate: mode must be 'greedy' or 'sampled', got {mode!r}")
    check_temperature(temperature, "acceptance_rate")
    (q, p), valid = check_token_logits(
        draft_logits, target_logits, labels=labels, ignore_index=ignore_index, loss_name="acceptance_rate"
    )
    if not bool(valid.any()):
        return float("nan")
    with torch.no_grad():
        if mode == "greedy":
            acc = (q.argmax(dim=-1) == p.argmax(dim=-1)).to(q.dtype)
        else:
            q_probs, p_probs = torch.softmax(q / temperature, -1), torch.softmax(p / temperature, -1)
            acc = torch.minimum(q_probs, p_probs).sum(-1)
        return float(acc[valid].mean())


def block_efficiency(alpha: float, gamma: int) -> float:
    r"""Expected tokens per target call with ``gamma`` drafted tokens and i.i.d. acceptance ``alpha``:
    :math:`\tau = (1 - \alpha^{\gamma+1}) / (1 - \alpha)` (:math:`\gamma + 1` when :math:`\alpha = 1`)."""
    if not 0.0 <= alpha <= 1.0 or gamma < 1:
        raise ValueError(f"block_efficiency: needs alpha in [0, 1] and gamma >= 1, got {alpha}, {gamma}")
    if alpha == 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


LogitsFn = Callable[[Tensor], Tensor]


@torch.no_grad()
def speculative_decoding_acceptance(
    target_fn: LogitsFn,
    draft_fn: LogitsFn,
    prompts: Sequence[Tensor],
    *,
    gamma: int = 4,
    max_new_tokens: int = 32,
    mode: str = "greedy",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    r"""Run speculative decoding (Leviathan et al. 2023) and count accepted / rejected draft tokens.

    Each round the draft proposes ``gamma`` tokens autoregressively; the target scores them in one call.
    ``"greedy"``: a token is accepted while it equals the target's argmax; the first mismatch is replaced
    by the target's token. ``"sampled"``: draft tokens are sampled from :math:`Q`, accepted with
    probability :math:`\min(1, P/Q)`, and a rejection resamples from :math:`\mathrm{norm}(\max(P-Q, 0))`;
    if all are accepted a bonus token is drawn from :math:`P`. Output has the target's distribution.

    Args:
        target_fn, draft_fn: map token ids ``[1, T]`` (int64) to logits ``[1, T, V]`` (no cache needed).
        prompts: 1-D int64 token-id tensors.
        gamma (int, optional): draft tokens per round. (default: ``4``)
        max_new_tokens (int, optional): tokens to generate per prompt. (default: ``32``)
        mode (str, optional): ``"greedy"`` or ``"sampled"``. (default: ``"greedy"``)
        temperature (float, optional): sampling temperature of both models. (default: ``1.0``)
        generator (torch.Generator, optional): for ``"sampled"``; seeded for reproducibility.

    Returns:
        dict with ``"accepted"``, ``"rejected"``, ``"acceptance_rate"`` = accepted / (accepted + rejected),
        ``"tokens_per_target_call"`` and ``"target_calls"``.
    """
    if mode not in ("greedy", "sampled"):
        raise ValueError(f"speculative_decoding_acceptance: mode must be 'greedy' or 'sampled', got {mode!r}")
    if gamma < 1 or max_new_tokens < 1:
        raise ValueError(f"speculative_decoding_acceptance: gamma and max_new_tokens must be >= 1, got "
                         f"{gamma}, {max_new_tokens}")
    check_temperature(temperature, "speculative_decoding_acceptance")
    accepted = rejected = calls = produced = 0

    def probs(logits: Tensor) -> Tensor:
        return torch.softmax(upcast(logits) / temperature, dim=-1)

    for prompt in prompts:
        if prompt.ndim != 1 or prompt.numel() == 0:
            raise ValueError(f"speculative_decoding_acceptance: prompts must be non-empty 1-D, got "
                             f"{tuple(prompt.shape)}")
        seq = prompt.long().view(1, -1)
        start = seq.shape[1]
        while seq.shape[1] - start < max_new_tokens:
            n_draft = min(gamma, max_new_tokens - (seq.shape[1] - start))
            draft_seq, q_rows = seq, []
            for _ in range(n_draft):
                q_last = probs(draft_fn(draft_seq)[0, -1])
                if mode == "greedy":
                    tok = q_last.argmax()
                else:
                    tok = torch.multinomial(q_last, 1, generator=generator)[0]
                q_rows.append(q_last)
                draft_seq = torch.cat([draft_seq, tok.view(1, 1)], dim=1)
            p_all = probs(target_fn(draft_seq)[0])  # [T + n_draft, V]
            calls += 1
            base = seq.shape[1] - 1
            new_tokens = []
            for j in range(n_draft):
                tok = int(draft_seq[0, seq.shape[1] + j])
                p_j, q_j = p_all[base + j], q_rows[j]
                if mode == "greedy":
                    ok = tok == int(p_j.argmax())
                else:
                    u = float(torch.rand((), generator=generator))
                    ok = u < min(1.0, float(p_j[tok]) / max(float(q_j[tok]), 1e-30))
                if ok:
                    accepted += 1
                    new_tokens.append(tok)
                    continue
                rejected += 1
                if mode == "greedy":
                    new_tokens.append(int(p_j.argmax()))
                else:
                    resid = (p_j - q_j).clamp_min(0)
                    resid = resid / resid.sum() if float(resid.sum()) > 0 else p_j
                    new_tokens.append(int(torch.multinomial(resid, 1, generator=generator)[0]))
                break
            else:
                p_bonus = p_all[base + n_draft]
                if mode == "greedy":
                    new_tokens.append(int(p_bonus.argmax()))
                else:
                    new_tokens.append(int(torch.multinomial(p_bonus, 1, generator=generator)[0]))
            new_tokens = new_tokens[: max_new_tokens - (seq.shape[1] - start)]
            produced += len(new_tokens)
            seq = torch.cat([seq, torch.tensor([new_tokens], dtype=torch.long)], dim=1)
    total = accepted + rejected
    return {
        "accepted": float(accepted),
        "rejected": float(rejected),
        "acceptance_rate": accepted / total if total else float("nan"),
        "tokens_per_target_call": produced / calls if calls else float("nan"),
        "target_calls": float(calls),
    }
