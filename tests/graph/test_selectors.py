import math

import pytest
import torch
import torch.nn.functional as F

from graphspike_kd.graph.selectors import (
    PPOTeacherSelector,
    confident_teacher,
    dns_neighbours,
    expansion_budget,
    gns_select,
    k_uncertainty,
    majority_teacher,
    majority_vote,
    ngs_state,
    random_teacher,
    rule_teacher_choice,
    teacher_oracle,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


# ----------------------------------------------------------------------------------------- delta_K
def test_pairwise_form_matches_hand_computed_value():
    p1, p2, p3 = [0.5, 0.5], [0.25, 0.75], [0.9, 0.1]
    probs = torch.tensor([[p1], [p2], [p3]])  # B=3, N=1, C=2
    # one-directional KL over the pairs i < j: (1,2), (1,3), (2,3)
    expected = _kl(p1, p2) + _kl(p1, p3) + _kl(p2, p3)
    assert k_uncertainty(probs, "pairwise").item() == pytest.approx(expected, rel=1e-5)
    # 0.5 ln 2 + 0.5 ln(2/3) for the first pair, written out by hand
    two = torch.tensor([[p1], [p2]])
    assert k_uncertainty(two).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-5)


def test_js_form_matches_hand_computed_value():
    p1, p2 = [0.5, 0.5], [0.25, 0.75]
    m = [0.375, 0.625]
    expected = 0.5 * (_kl(p1, m) + _kl(p2, m))
    assert expected == pytest.approx(0.0338228, abs=1e-6)
    assert k_uncertainty(torch.tensor([[p1], [p2]]), "js").item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("form", ["pairwise", "js"])
def test_k_uncertainty_zero_iff_agreement_and_nonnegative(form):
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(4, 50, 6, generator=g).softmax(-1)
    delta = k_uncertainty(probs, form)
    assert delta.shape == (50,)
    assert bool((delta >= -1e-6).all())
    same = probs[:1].expand(4, -1, -1)
    assert torch.allclose(k_uncertainty(same, form), torch.zeros(50), atol=1e-6)


def test_forms_rank_similarly():
    g = torch.Generator().manual_seed(1)
    probs = (2 * torch.randn(4, 300, 5, generator=g)).softmax(-1)
    a, b = k_uncertainty(probs, "pairwise"), k_uncertainty(probs, "js")
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    spearman = torch.corrcoef(torch.stack([ra, rb]))[0, 1]
    # the spec infers that the forms "rank nodes similarly"; on random teachers Spearman's rho is 0.88
    assert spearman > 0.8
    top_a, top_b = set(a.topk(60).indices.tolist()), set(b.topk(60).indices.tolist())
    assert len(top_a & top_b) >= 36  # the top fifth overlaps by at least 60 %


def test_k_uncertainty_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, N, C\]"):
        k_uncertainty(torch.rand(3, 4))
    with pytest.raises(ValueError, match="at least 2"):
        k_uncertainty(torch.rand(1, 3, 4).softmax(-1))
    with pytest.raises(ValueError, match="unknown K-uncertainty form"):
        k_uncertainty(torch.rand(2, 3, 4).softmax(-1), "sym")


# ------------------------------------------------------------------------------------------ budget
def test_budget_fraction_on_cora_sizes():
    # floor(0.48 * 2708) = 1299 labelled in total, 35 of them shots -> 1264 to annotate
    assert expansion_budget(2708, 35, pool_size=2000) == 1264
    # under the paper protocol the pool is exactly 48 % minus the shots, so all of it is annotated
    assert expansion_budget(2708, 35, pool_size=1264) == 1264


def test_budget_count_and_caps():
    assert expansion_budget(2708, 35, pool_size=1264, count=140) == 140
    assert expansion_budget(2708, 35, pool_size=100, count=140) == 100
    assert expansion_budget(100, 60, pool_size=40, fraction=0.48) == 0  # already above the target
    assert expansion_budget(1000, 10, pool_size=900, fraction=0.1) == 90
    with pytest.raises(ValueError, match="fraction"):
        expansion_budget(100, 5, pool_size=50, fraction=1.5)
    with pytest.raises(ValueError, match="count"):
        expansion_budget(100, 5, pool_size=50, count=-1)


def test_gns_selects_most_uncertain_pool_nodes():
    agree = torch.tensor([0.9, 0.1])
    probs = torch.stack([agree.expand(6, 2).clone(), agree.expand(6, 2).clone()])
    probs[1, 2] = torch.tensor([0.1, 0.9])  # strong disagreement on node 2
    probs[1, 4] = torch.tensor([0.6, 0.4])  # mild disagreement on node 4
    probs[1, 0] = torch.tensor([0.01, 0.99])  # strongest, but node 0 is not in the pool
    pool = torch.tensor([False, True, True, True, True, True])
    assert gns_select(probs, pool, 2).tolist() == [2, 4]
    assert gns_select(probs, pool, 2, form="js").tolist() == [2, 4]
    assert gns_select(probs, pool, 0).numel() == 0
    with pytest.raises(ValueError, match="budget"):
        gns_select(probs, pool, 6)


# --------------------------------------------------------------------------------------------- DNS
def test_dns_union_dedup_excludes_self():
    # teacher A: nodes on a line; teacher B: reversed order of closeness for node 0
    line = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    other = torch.tensor([[0.0], [9.0], [8.0], [1.0], [0.5]])
    nb = dns_neighbours([line, other], torch.tensor([0]), k=2, metric="euclidean")
    # A: 1, 2; B: 4, 3 -> union in teacher order, no duplicates, never 0 itself
    assert nb == {0: [1, 2, 4, 3]}
    nb_same = dns_neighbours([line, line], torch.tensor([0, 4]), k=2, metric="euclidean")
    assert nb_same == {0: [1, 2], 4: [3, 2]}
    emb = [torch.randn(30, 4, generator=torch.Generator().manual_seed(b)) for b in range(4)]
    out = dns_neighbours(emb, torch.arange(30), k=4)
    for node, ids in out.items():
        assert node not in ids and len(ids) == len(set(ids)) and 4 <= len(ids) <= 16


def test_dns_candidates_restrict_neighbours():
    emb = torch.arange(10, dtype=torch.float32).view(-1, 1)
    allowed = torch.zeros(10, dtype=torch.bool)
    allowed[[7, 8, 9]] = True
    assert dns_neighbours([emb], torch.tensor([0]), k=2, candidates=allowed, metric="euclidean") == {
        0: [7, 8]
    }


# --------------------------------------------------------------------------------------------- NGS
def test_ngs_state_shape_and_agreement():
    probs = torch.tensor([[[0.9, 0.1]] * 3, [[0.8, 0.2]] * 3, [[0.3, 0.7]] * 3])  # B=3, N=3, C=2
    x = torch.eye(3)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    s = ngs_state(x, edge_index, probs)
    assert s.shape == (3, 2 * 3 + 3 * (2 * 2 + 2))
    agreement = s[:, 6 + 6 + 3 : 6 + 6 + 6]
    assert torch.allclose(agreement[0], torch.tensor([0.5, 0.5, 0.0]))


def test_ngs_state_extra_parts_hand_case():
    # path 0-1-2; teachers' argmax: t0 = [0, 0, 1], t1 = [1, 1, 1]; labels: node 0 -> 0, node 2 -> 1
    probs = torch.tensor([[[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], [[0.3, 0.7], [0.1, 0.9], [0.4, 0.6]]])
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    labels = torch.tensor([0, -1, 1])
    parts = ("degree", "confidence", "label_agreement")
    s = ngs_state(torch.eye(3), edge_index, probs, labels=labels, parts=parts)
    assert s.shape == (3, 1 + 2 + 3)
    assert torch.allclose(s[:, 0], torch.log1p(torch.tensor([1.0, 2.0, 1.0])))
    assert torch.allclose(s[:, 1:3], torch.tensor([[0.9, 0.7], [0.6, 0.9], [0.8, 0.6]]))
    # node 1 has labelled neighbours 0 (class 0) and 2 (class 1): each teacher agrees with half of them;
    # nodes 0 and 2 have one unlabelled neighbour
    assert torch.allclose(s[:, 3:5], torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.0, 0.0]]))
    assert torch.allclose(s[:, 5], torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="needs labels"):
        ngs_state(torch.eye(3), edge_index, probs, parts=("label_agreement",))
    with pytest.raises(ValueError, match="parts"):
        ngs_state(torch.eye(3), edge_index, probs, parts=("magic",))


def test_ngs_state_keeps_sparse_features_sparse():
    g = torch.Generator().manual_seed(0)
    dense = (torch.rand(30, 20, generator=g) < 0.15).float()
    probs = torch.rand(2, 30, 3, generator=g).softmax(-1)
    edge_index = torch.randint(0, 30, (2, 60), generator=g)
    ref = ngs_state(dense, edge_index, probs, max_features=4)
    for sparse in (dense.to_sparse_csr(), dense.to_sparse_coo()):
        out = ngs_state(sparse, edge_index, probs, max_features=4)
        assert out.shape == ref.shape == (30, 2 * 4 + 2 * (2 * 3 + 2))
        # PCA components are defined up to sign
        assert torch.allclose(out[:, :8].abs(), ref[:, :8].abs(), atol=1e-4)
        assert torch.equal(out[:, 8:], ref[:, 8:])


def test_policy_sums_to_one_and_value_can_be_negative():
    agent = PPOTeacherSelector(5, 4, lr=1e-2)
    states = torch.randn(20, 5)
    assert torch.allclose(agent.probabilities(states).sum(-1), torch.ones(20))
    targets = torch.full((20,), -3.0)
    for _ in range(25):
        agent.update(
            states,
            torch.zeros(20, dtype=torch.long),
            torch.full((20,), math.log(0.25)),
            targets,
            torch.zeros(20),
        )
    assert float(agent(states)[1].detach().mean()) < -1.0


def test_ppo_converges_to_the_always_right_teacher():
    """Four teachers; teacher 2 is always right. The reward (the PKD reward with a student that has fitted
    the labels) prefers the teacher the student agrees with, so PPO must learn to pick teacher 2."""
    from graphspike_kd.graph.pkd import ngs_rewards

    g = torch.Generator().manual_seed(0)
    n, c, b = 256, 5, 4
    labels = torch.randint(0, c, (n,), generator=g)
    states = torch.randn(n, 8, generator=g)
    right = 2
    teacher_probs = torch.full((b, n, c), 0.05)
    for t in range(b):
        cls = labels if t == right else (labels + 1 + torch.randint(0, c - 1, (n,), generator=g)) % c
        teacher_probs[t, torch.arange(n), cls] = 0.8
    student_logits = 4.0 * torch.nn.functional.one_hot(labels, c).float()
    torch.manual_seed(0)
    agent = PPOTeacherSelector(8, b, lr=1e-2)
    for _ in range(60):
        actions, logp, values = agent.act(states, generator=g)
        rewards = ngs_rewards(student_logits, teacher_probs[actions, torch.arange(n)], labels)
        agent.update(states, actions, logp, rewards, values)
    greedy = agent.act(states, sample=False)[0]
    assert (greedy == right).float().mean() > 0.95
    assert agent.probabilities(states)[:, right].mean() > 0.8


# ------------------------------------------------------------------------------ rule teacher selectors
def _rule_case():
    # B=3 teachers, N=2 nodes, C=2 classes
    return torch.tensor(
        [
            [[0.6, 0.4], [0.3, 0.7]],
            [[0.9, 0.1], [0.45, 0.55]],
            [[0.2, 0.8], [0.95, 0.05]],
        ]
    )


def test_majority_and_confident_teacher_hand_cases():
    probs = _rule_case()
    assert majority_vote(probs).tolist() == [0, 1]
    # node 0: teachers 0 and 1 vote class 0, teacher 1 is surer; node 1: teachers 0 and 1 vote class 1,
    # teacher 0 is surer, although teacher 2 (the minority) is the most confident of all
    assert majority_teacher(probs).tolist() == [1, 0]
    assert confident_teacher(probs).tolist() == [1, 2]
    assert rule_teacher_choice(probs, "majority").tolist() == [1, 0]
    assert rule_teacher_choice(probs, "confident").tolist() == [1, 2]


def test_random_teacher_is_seeded_and_uniform():
    probs = torch.full((4, 4000, 3), 1 / 3)
    first = random_teacher(probs, generator=torch.Generator().manual_seed(5))
    again = rule_teacher_choice(probs, "random", generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and first.shape == (4000,)
    counts = torch.bincount(first, minlength=4)
    assert counts.numel() == 4 and int(counts.min()) > 900  # 1000 expected per teacher


def test_rule_teacher_choice_rejects_unknown_rules_and_shapes():
    with pytest.raises(ValueError, match="random, majority, confident"):
        rule_teacher_choice(_rule_case(), "oracle")
    with pytest.raises(ValueError, match=r"\[B, N, C\]"):
        majority_teacher(torch.rand(2, 3))


# ---------------------------------------------------------------------------- oracle diagnostic
def _oracle_case():
    # 3 teachers, 5 nodes, 3 classes; predictions (argmax) per teacher:
    #   t0: 0 1 2 0 1     t1: 0 2 2 1 1     t2: 1 1 0 2 1
    # truth:    0 1 0 2 0
    top = torch.tensor([[0, 1, 2, 0, 1], [0, 2, 2, 1, 1], [1, 1, 0, 2, 1]])
    probs = F.one_hot(top, 3).float() * 0.8 + 0.2 / 3
    y = torch.tensor([0, 1, 0, 2, 0])
    return probs, y


def test_teacher_oracle_hand_case():
    probs, y = _oracle_case()
    out = teacher_oracle(probs, y, torch.ones(5, dtype=torch.bool), ["a", "b", "c"])
    # right: t0 1 1 0 0 0, t1 1 0 0 0 0, t2 0 1 1 1 0 -> any: 1 1 1 1 0
    assert out["oracle_acc"] == pytest.approx(0.8)
    assert out["teacher_acc"] == pytest.approx({"a": 0.4, "b": 0.2, "c": 0.6})
    assert out["best_teacher_acc"] == pytest.approx(0.6) and out["oracle_gap"] == pytest.approx(0.2)
    assert out["all_right"] == 0.0 and out["all_wrong"] == pytest.approx(0.2)
    # agreement a|b: nodes 0, 2, 4 -> 3/5; a|c: 1, 4 -> 2/5; b|c: 4 -> 1/5
    assert out["agreement"] == pytest.approx({"a|b": 0.6, "a|c": 0.4, "b|c": 0.2})
    assert out["num_nodes"] == 5
    # on nodes 0 and 1 only: every node has a right teacher, a is right on both
    two = teacher_oracle(probs, y, torch.tensor([True, True, False, False, False]))
    assert two["oracle_acc"] == 1.0 and two["teacher_acc"]["0"] == 1.0 and two["oracle_gap"] == 0.0
    # identical teachers leave no room: oracle = each teacher's accuracy, agreement 1
    same = teacher_oracle(probs[:1].expand(3, -1, -1), y, torch.ones(5, dtype=torch.bool))
    assert same["oracle_gap"] == 0.0 and set(same["agreement"].values()) == {1.0}


def test_teacher_oracle_reads_only_the_evaluation_nodes():
    probs, y = _oracle_case()
    mask = torch.tensor([True, False, True, True, False])
    base = teacher_oracle(probs, y, mask)
    for other in range(3):
        changed = y.clone()
        changed[~mask] = other
        assert teacher_oracle(probs, changed, mask) == base
    changed = y.clone()
    changed[2] = 2  # an evaluation node: the result moves
    assert teacher_oracle(probs, changed, mask) != base
    empty = teacher_oracle(probs, y, torch.zeros(5, dtype=torch.bool))
    assert empty["num_nodes"] == 0 and math.isnan(empty["oracle_acc"])
    with pytest.raises(ValueError, match="bool"):
        teacher_oracle(probs, y, mask.long())
    with pytest.raises(ValueError, match="names"):
        teacher_oracle(probs, y, mask, ["a"])
