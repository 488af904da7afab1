"""Token KD, AdaSPEC selection/loss, acceptance-rate helpers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from graphspike_kd.common import get_loss
from graphspike_kd.common.losses import (
    acceptance_rate,
    adaspec_loss,
    adaspec_select,
    adaspec_terms,
    block_efficiency,
    shift_for_causal_lm,
    speculative_decoding_acceptance,
    token_kd_loss,
    token_kl,
)


def _logits(seed=0, b=2, L=6, v=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, L, v, generator=g) for _ in range(3)] + [torch.randint(0, v, (b, L), generator=g)]


def test_token_kl_hand_case_and_mask():
    s = torch.zeros(1, 2, 2)
    t = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])  # P = [.75, .25]
    labels = torch.tensor([[1, -100]])
    kl = token_kl(s, t, labels)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl[0, 0].item() == pytest.approx(expected, rel=1e-5)
    assert kl[0, 1].item() == 0.0
    assert token_kd_loss(s, t, labels).item() == pytest.approx(expected, rel=1e-5)
    assert token_kd_loss(s, t, labels, reduction="none").shape == (1, 2)


def test_k1_equals_token_kd_and_all_ignored():
    q, p, r, labels = _logits()
    labels[0, :3] = -100
    assert torch.allclose(adaspec_loss(q, p, r, labels, k=1.0), token_kd_loss(q, p, labels), atol=1e-6)
    ignored = torch.full_like(labels, -100)
    qq = q.clone().requires_grad_()
    out = adaspec_loss(qq, p, r, ignored)
    assert out.item() == 0.0
    out.backward()  # still attached to the graph
    assert torch.all(qq.grad == 0)
    assert token_kd_loss(q, p, ignored).item() == 0.0


def test_selection_hand_case():
    delta = torch.tensor([[0.5, 3.0, -1.0, 2.0, 9.0]])
    valid = torch.tensor([[True, True, True, True, False]])
    sel = adaspec_select(delta, valid, k=0.5)  # ceil(0.5 * 4) = 2 -> 3.0 and 2.0 (9.0 is padding)
    assert sel.tolist() == [[False, True, False, True, False]]
    assert not adaspec_select(delta, torch.zeros_like(valid), k=0.4).any()


def test_loss_uses_selected_tokens_only():
    q, p, r, labels = _logits(seed=3)
    terms = adaspec_terms(q, p, r, labels, k=0.4)
    d = F.kl_div(F.log_softmax(q, -1), F.log_softmax(p, -1), reduction="none", log_target=True).sum(-1)
    rk = F.kl_div(F.log_softmax(r, -1), F.log_softmax(p, -1), reduction="none", log_target=True).sum(-1)
    assert torch.allclose(terms["delta"], d - rk, atol=1e-5)
    sel = terms["selected"]
    assert int(sel.sum()) == math.ceil(0.4 * 12)
    assert torch.allclose(terms["loss"], d[sel].mean(), atol=1e-6)
    # the kept tokens have the largest delta
    assert terms["delta"][sel].min() >= terms["delta"][~sel].max()
    per_tok = adaspec_loss(q, p, r, labels, reduction="none")
    assert torch.all(per_tok[~sel] == 0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 8), st.floats(0.05, 1.0), st.integers(0, 1000))
def test_selected_fraction_and_padding_property(b, length, k, seed):
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(b, length, generator=g)
    valid = torch.rand(b, length, generator=g) > 0.3
    sel = adaspec_select(delta, valid, k=k)
    n = int(valid.sum())
    assert int(sel.sum()) == (math.ceil(k * n - 1e-9) if n else 0)
    assert not (sel & ~valid).any()


def test_registry_and_gradients():
    q, p, r, labels = _logits()
    q.requires_grad_()
    p.requires_grad_()
    crit = get_loss("adaspec", k=0.4)
    loss = crit(q, p, labels, reference_logits=r)
    loss.backward()
    assert q.grad is not None and p.grad is None
    assert torch.allclose(get_loss("token_kd")(q, p.detach(), labels), token_kd_loss(q, p.detach(), labels))


def test_bad_inputs():
    q, p, r, labels = _logits()
    crit = get_loss("adaspec")
    with pytest.raises(ValueError, match="reference_logits"):
        crit(q, p, labels)
    with pytest.raises(ValueError, match="shapes differ"):
        adaspec_loss(q, p[:, :5], r, labels)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        adaspec_loss(q, p, r, labels[:, :5])
    with pytest.raises(ValueError, match="lie in"):
        adaspec_loss(q, p, r, labels + 100)
    with pytest.raises(ValueError, match="k must"):
        get_loss("adaspec", k=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        token_kl(q, p * float("nan"))
    with pytest.raises(ValueError, match="3|\\[B, L, V\\]"):
        token_kl(q[0], p[0])
    with pytest.raises(ValueError, match="mode"):
        acceptance_rate(q, p, mode="beam")


def test_acceptance_rate_hand_cases():
    p = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])
    q = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert acceptance_rate(q, p) == 0.5
    assert acceptance_rate(p, p, mode="sampled") == pytest.approx(1.0)
    # 1 - TV: P = [.75, .25], Q = [.5, .5] -> min sum = .75
    pp = torch.tensor([[[math.log(3.0), 0.0]]])
    assert acceptance_rate(torch.zeros(1, 1, 2), pp, mode="sampled") == pytest.approx(0.75)
    assert math.isnan(acceptance_rate(q, p, torch.full((1, 2), -100)))
    assert block_efficiency(0.0, 4) == 1.0 and block_efficiency(1.0, 4) == 5.0
    assert block_efficiency(0.5, 1) == pytest.approx(1.5)


def _bigram_fn(table):
    def fn(ids):
        return table[ids]  # [1, T, V]

    return fn


def test_speculative_decoding_identical_models_accepts_everything():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(6, 6, generator=g) * 3
    fn = _bigram_fn(table)
    prompts = [torch.tensor([0, 3]), torch.tensor([5])]
    for mode in ("greedy", "sampled"):
        out = speculative_decoding_acceptance(fn, fn, prompts, gamma=3, max_new_tokens=7, mode=mode,
                                              generator=torch.Generator().manual_seed(1))
        assert out["acceptance_rate"] == 1.0
        assert out["rejected"] == 0


def test_speculative_greedy_always_wrong_draft():
    g = torch.Generator().manual_seed(2)
    target = torch.randn(5, 5, generator=g)
    # the draft's argmax is never the target's argmax -> every proposal rejected, one token per call
    wrong = torch.roll(torch.nn.functional.one_hot(target.argmax(1), 5).float(), 1, dims=1) * 10
    out = speculative_decoding_acceptance(_bigram_fn(target), _bigram_fn(wrong), [torch.tensor([1])],
                                          gamma=2, max_new_tokens=10)
    assert out["acceptance_rate"] == 0.0
    assert out["target_calls"] == 10 and out["tokens_per_target_call"] == 1.0
    # identical argmax but different distributions: greedy accepts all; gamma + 1 tokens per call
    agree = torch.nn.functional.one_hot(target.argmax(1), 5).float() * 10
    out = speculative_decoding_acceptance(_bigram_fn(target), _bigram_fn(agree), [torch.tensor([1])],
                                          gamma=4, max_new_tokens=10)
    assert out["acceptance_rate"] == 1.0
    assert out["target_calls"] == 2  # 5 + 5 tokens


def test_shift_for_causal_lm():
    logits = torch.randn(2, 5, 3)
    labels = torch.randint(0, 3, (2, 5))
    lo, la = shift_for_causal_lm(logits, labels)
    assert lo.shape == (2, 4, 3) and torch.equal(la, labels[:, 1:])


def _frozen_adaspec_kls(q, p, r, valid, temperature):
    """The per-token KLs as AdaSPEC's terms were written before sharing the soft-target core."""
    log_p = F.log_softmax(p.detach() / temperature, dim=-1)
    draft = F.kl_div(F.log_softmax(q / temperature, dim=-1), log_p, reduction="none", log_target=True)
    ref = F.kl_div(F.log_softmax(r / temperature, dim=-1), log_p, reduction="none", log_target=True)
    return draft.sum(dim=-1) * valid, ref.sum(dim=-1) * valid


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_terms_bit_identical_to_the_direct_kl(temperature, dtype):
    q, p, r, labels = _logits(seed=3, b=3, L=9, v=50)
    q, p, r = (x.to(dtype) * 4 for x in (q, p, r))
    labels[0, :3] = -100
    q.requires_grad_(True)
    terms = adaspec_terms(q, p, r, labels, temperature=temperature)
    valid = labels != -100
    draft, ref = _frozen_adaspec_kls(q, p, r, valid, temperature)
    assert torch.equal(terms["draft_kl"], draft)
    assert torch.equal(terms["reference_kl"], ref)
    (g_new,) = torch.autograd.grad(terms["draft_kl"].sum(), q)
    (g_old,) = torch.autograd.grad(draft.sum(), q)
    assert torch.equal(g_new, g_old)


def test_terms_finite_for_huge_logits():
    # Huge logits whose rows agree on a far-ahead top class: every KL is near 0, yet z / T overflows.
    g = torch.Generator().manual_seed(4)
    big = torch.finfo(torch.float32).max
    top = torch.randint(0, 11, (2, 5, 1), generator=g)

    def huge():
        return (torch.randn(2, 5, 11, generator=g) * 1e37).scatter(-1, top, big)

    q, p, r = huge().requires_grad_(True), huge(), huge()
    labels = torch.randint(0, 11, (2, 5), generator=g)
    with torch.no_grad():  # the direct formula is not finite here
        direct, _ = _frozen_adaspec_kls(q, p, r, labels != -100, 0.5)
    assert not bool(torch.isfinite(direct).all())
    terms = adaspec_terms(q, p, r, labels, temperature=0.5)
    for name in ("draft_kl", "reference_kl", "delta", "loss"):
        assert bool(torch.isfinite(terms[name]).all()), name
    assert bool((terms["draft_kl"] >= 0).all())
    terms["loss"].backward()
    assert bool(torch.isfinite(q.grad).all())
