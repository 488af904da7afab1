"""KD detection: scores (KL-inverse, ACS, CKA), probe synthesis, decision and metrics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from graphspike_kd.common.detection import (
    aligned_cosine_similarity,
    detect_teacher,
    detection_metrics,
    detection_scores,
    kernel_cka,
    kl_inverse_score,
    linear_cka,
    synthesize_probes,
)

# Tiny models: one intra-op thread avoids thread hand-off overhead on a shared CPU.
pytestmark = pytest.mark.usefixtures("single_thread")


class _Net(nn.Module):
    def __init__(self, d_in=6, hidden=8, c=3, bn=True):
        super().__init__()
        self.fc = nn.Linear(d_in, hidden)
        self.bn = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.head = nn.Linear(hidden, c)

    def forward(self, x, return_features=False):
        f = torch.relu(self.bn(self.fc(x)))
        return (self.head(f), f) if return_features else self.head(f)


def _orth(d, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def test_kl_inverse_hand_case():
    s = torch.zeros(2, 2, dtype=torch.float64)
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    kl0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    expected = (1 / (kl0 + 0.1) + 1 / 0.1) / 2
    assert kl_inverse_score(s, t, eps=0.1) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="eps"):
        kl_inverse_score(s, t, eps=0.0)
    with pytest.raises(ValueError, match="same shape|one shape"):
        kl_inverse_score(s, t[:, :1])


def test_acs_is_one_under_rotation_and_lower_for_unrelated():
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert aligned_cosine_similarity(x, x) == pytest.approx(1.0, abs=1e-9)
    assert aligned_cosine_similarity(x, x @ _orth(5, 1)) == pytest.approx(1.0, abs=1e-9)
    noise = torch.randn(40, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert aligned_cosine_similarity(x, noise) < 0.9
    # different widths: embed in 7 dims then rotate
    wide = torch.cat([x, torch.zeros(40, 2, dtype=torch.float64)], 1) @ _orth(7, 3)
    assert aligned_cosine_similarity(x, wide) == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 1000), st.floats(0.1, 10.0))
def test_cka_invariances(seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64)
    y = torch.randn(20, 6, generator=g, dtype=torch.float64)
    base = linear_cka(x, y)
    assert 0.0 <= base <= 1.0 + 1e-9
    assert linear_cka(scale * x @ _orth(4, seed), y) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    assert kernel_cka(x @ _orth(4, seed + 1), x) == pytest.approx(1.0, abs=1e-9)


def test_score_input_validation():
    with pytest.raises(ValueError, match="same N"):
        linear_cka(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="at least 2"):
        aligned_cosine_similarity(torch.randn(1, 2), torch.randn(1, 2))
    with pytest.raises(ValueError, match="non-finite"):
        kernel_cka(torch.full((3, 2), float("nan")), torch.randn(3, 2))


def test_probe_synthesis_matches_bn_statistics_and_keeps_model():
    torch.manual_seed(0)
    net = _Net()
    net.train()
    with torch.no_grad():
        for _ in range(20):  # give the BN non-trivial running statistics
            net(torch.randn(64, 6) * 2 + 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    probes = synthesize_probes(net, 32, (6,), 3, steps=60, lr=0.1, generator=g)
    assert probes.shape == (32, 6) and not probes.requires_grad
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing changed
    assert net.training  # mode restored
    h = net.fc(probes)
    h0 = net.fc(torch.randn(32, 6, generator=torch.Generator().manual_seed(0)))
    err = (h.mean(0) - net.bn.running_mean).pow(2).sum()
    err0 = (h0.mean(0) - net.bn.running_mean).pow(2).sum()
    assert err < 0.5 * err0
    # without the BN term, the mixed class targets are learnt: the argmax is the dominant class a_n
    net.eval()
    ce_only = synthesize_probes(net, 12, (6,), 3, steps=200, lr=0.1, bn_weight=0.0, generator=g)
    agree = (net(ce_only).argmax(1) == torch.arange(12) % 3).float().mean()
    assert agree >= 0.9
    with pytest.raises(ValueError, match="BatchNorm"):
        synthesize_probes(_Net(bn=False), 4, (6,), 3, steps=1)
    assert synthesize_probes(_Net(bn=False), 4, (6,), 3, steps=2, bn_weight=0.0).shape == (4, 6)


def test_detection_finds_the_copied_teacher():
    torch.manual_seed(0)
    t0, t1 = _Net(), _Net()
    student = _Net()
    student.load_state_dict(t1.state_dict())  # an exact copy of teacher 1
    for m in (t0, t1, student):
        m.eval()
    probes = torch.randn(30, 6, generator=torch.Generator().manual_seed(1))
    for score in ("kl", "acs", "cka"):
        s = detection_scores(student, [t0, t1], probes, score=score)
        assert detect_teacher(s) == 1
    with pytest.raises(ValueError, match="score must"):
        detection_scores(student, [t0], probes, score="lpips")
    with pytest.raises(ValueError, match="non-empty"):
        detect_teacher(torch.tensor([]))


def test_detection_metrics_hand_case():
    scores = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0], [1.0, 1.5]])
    out = detection_metrics(scores, [0, 1, 1, -1])
    assert out["accuracy"] == pytest.approx(2 / 3)
    # pairs: positives (0,0)=2, (1,1)=3, (2,1)=0; negatives 1, 0, 5, 1, 1.5
    pos, neg = [2.0, 3.0, 0.0], [1.0, 0.0, 5.0, 1.0, 1.5]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert out["auc_pairs"] == pytest.approx(wins / 15)
    assert 0.0 <= out["auc_ovr"] <= 1.0
    with pytest.raises(ValueError, match="labels"):
        detection_metrics(scores, [0, 1, 2, -1])
