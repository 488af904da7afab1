from __future__ import annotations

import pytest
import torch

from graphspike_kd.graph.splits import few_shot_split


def _labels(n_per_class=(50, 30, 20)):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])[
        torch.randperm(100, generator=torch.Generator().manual_seed(0))
    ]


@pytest.mark.parametrize("shots", [1, 3, 5])
def test_paper_protocol(shots):
    y = _labels()
    s = few_shot_split(y, shots, protocol="paper", seed=3)
    assert torch.bincount(y[s.train_mask], minlength=3).tolist() == [shots] * 3
    assert int(s.val_mask.sum()) == 32 and int(s.test_mask.sum()) == 20
    masks = torch.stack([s.train_mask, s.val_mask, s.test_mask, s.pool_mask]).int()
    assert bool((masks.sum(0) == 1).all()), "masks must partition the nodes"
    assert s.has_validation


def test_seeded_and_seed_dependent():
    y = _labels()
    a, b, c = (few_shot_split(y, 3, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.train_mask, b.train_mask) and torch.equal(a.test_mask, b.test_mask)
    assert not torch.equal(a.train_mask, c.train_mask)


def test_strict_protocol_with_and_without_fixed_test():
    y = _labels()
    fixed = torch.zeros(100, dtype=torch.bool)
    fixed[-30:] = True
    s = few_shot_split(y, 5, protocol="strict", seed=0, planetoid_test_mask=fixed)
    assert not s.has_validation
    assert torch.equal(s.test_mask, fixed & ~s.train_mask)
    assert not bool((s.pool_mask & (s.train_mask | s.test_mask)).any())
    s2 = few_shot_split(y, 5, protocol="strict", seed=0)
    assert torch.equal(s2.test_mask, ~s2.train_mask)
    assert torch.equal(s2.pool_mask, ~s2.train_mask)  # transductive pool: the test nodes, labels unseen


def test_small_class_gives_all_its_nodes_and_unlabelled_nodes_are_skipped():
    y = torch.tensor([0] * 10 + [1] * 2 + [-1] * 3)
    s = few_shot_split(y, 5, protocol="strict", seed=0)
    assert torch.bincount(y[s.train_mask]).tolist() == [5, 2]
    assert not bool(s.test_mask[-3:].any())


def test_errors():
    y = _labels()
    with pytest.raises(ValueError, match="unknown protocol"):
        few_shot_split(y, 1, protocol="fancy")
    with pytest.raises(ValueError, match="shots"):
        few_shot_split(y, 0)
    with pytest.raises(ValueError, match="validation"):
        few_shot_split(y, 5, val_fraction=0.6, test_fraction=0.35)
