import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from graphspike_kd.graph.annotators import Annotations
from graphspike_kd.graph.pkd import (
    PKD,
    PKDConfig,
    default_models,
    distillation_loss,
    entropy_loss,
    ngs_rewards,
    student_loss_terms,
)
from graphspike_kd.graph.splits import FewShotSplit, few_shot_split
from graphspike_kd.graph.training import TrainConfig, accuracy

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------- loss terms
def test_distillation_loss_hand_value():
    student = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # softmax: [.5, .5], [.75, .25]
    teacher = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    mask = torch.tensor([True, True])
    expected = 0.5 * (-math.log(0.5) + -(0.5 * math.log(0.75) + 0.5 * math.log(0.25)))
    assert distillation_loss(student, teacher, mask).item() == pytest.approx(expected, rel=1e-5)
    assert distillation_loss(student, teacher, torch.tensor([True, False])).item() == pytest.approx(
        math.log(2)
    )
    with pytest.raises(ValueError, match="no node"):
        distillation_loss(student, teacher, torch.tensor([False, False]))


def test_entropy_loss_bounds():
    assert entropy_loss(torch.zeros(4, 7)).item() == pytest.approx(math.log(7), rel=1e-6)
    assert entropy_loss(torch.tensor([[50.0, 0.0, 0.0]])).item() < 1e-6
    logits = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    assert entropy_loss(logits, torch.tensor([True, False])).item() == pytest.approx(math.log(2))


def test_student_loss_terms_weights():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g)
    teacher = torch.randn(6, 3, generator=g).softmax(-1)
    labels = torch.tensor([0, 1, -1, 2, -1, 0])
    everywhere = torch.ones(6, dtype=torch.bool)
    terms = student_loss_terms(
        logits,
        teacher,
        labels,
        distill_mask=everywhere,
        label_mask=everywhere,
        alpha=0.5,
        beta=1.0,
        gamma=0.1,
    )
    lab = labels >= 0
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits[lab], labels[lab]).item(), rel=1e-6)
    assert terms["distill"].item() == pytest.approx(
        0.5 * distillation_loss(logits, teacher, everywhere).item()
    )
    assert terms["entropy"].item() == pytest.approx(0.1 * entropy_loss(logits).item())
    doubled = student_loss_terms(
        logits,
        teacher,
        labels,
        distill_mask=everywhere,
        label_mask=everywhere,
        alpha=1.0,
        beta=2.0,
        gamma=0.2,
    )
    for key in ("ce", "distill", "entropy"):
        assert doubled[key].item() == pytest.approx(2 * terms[key].item(), rel=1e-6)
    # gradient of the CE term vanishes when no node has a label
    none = student_loss_terms(
        logits, teacher, torch.full((6,), -1), distill_mask=everywhere, label_mask=everywhere
    )
    assert "ce" not in none


def test_ngs_reward_hand_value():
    student = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # p = [.75, .25], [.5, .5]
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, -1])
    r = ngs_rewards(student, teacher, labels, eta=0.3)
    # node 0: Acc 1, CE -ln .75, DL -ln .75; node 1: no label -> only DL = ln 2
    assert r[0].item() == pytest.approx(0.7 - 0.3 * (2 * -math.log(0.75)), rel=1e-5)
    assert r[1].item() == pytest.approx(-0.3 * math.log(2), rel=1e-5)


def test_default_models():
    assert default_models("cora") == (("gcn", "gat", "appnp", "h2gcn"), "gcn")
    teachers, student = default_models("Texas")
    assert student == "h2gcn" and "h2gcn" in teachers and len(teachers) == 4


def test_config_validation():
    with pytest.raises(ValueError, match="teacher_selection"):
        PKDConfig(teacher_selection="oracle")
    with pytest.raises(ValueError, match="denoise"):
        PKDConfig(denoise="magic")
    with pytest.raises(ValueError, match="at least 2 teachers"):
        PKDConfig(teachers=("gcn",))


# ------------------------------------------------------------------------------------ denoising
def _denoise_case():
    """5 nodes, 2 classes: node 0 is the shot (class 0), nodes 1-4 were annotated."""
    split = FewShotSplit(
        train_mask=torch.tensor([True, False, False, False, False]),
        val_mask=torch.zeros(5, dtype=torch.bool),
        test_mask=torch.zeros(5, dtype=torch.bool),
        pool_mask=torch.tensor([False, True, True, True, True]),
        protocol="strict",
        shots=1,
        seed=0,
    )
    # two teachers [B=2, N=5, C=2]
    probs = torch.tensor(
        [
            [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]],
            [[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.3, 0.7], [0.1, 0.9]],
        ]
    )
    selected = torch.tensor([1, 2, 3, 4])
    llm = torch.tensor([0, 0, 0, -1])  # node 4: no valid answer
    labels = torch.tensor([0, 0, 0, 0, -1])
    return split, probs, selected, llm, labels


def test_denoise_drop_and_relabel_hand_cases():
    split, probs, selected, llm, labels = _denoise_case()
    # node 1: both teachers say 0 = LLM -> kept; node 2: both say 1 -> dropped; node 3: one says 0 -> kept
    out = PKD(PKDConfig(denoise="drop")).denoise_once(labels, selected, llm, None, probs, split)
    assert out.tolist() == [0, 0, -1, 0, -1]
    ranked = torch.tensor([[0, 1], [0, 1], [0, -1], [-1, -1]])
    out = PKD(PKDConfig(denoise="relabel")).denoise_once(labels, selected, llm, ranked, probs, split)
    assert out.tolist() == [0, 0, 1, 0, -1]  # node 2: the teachers' class 1 is in the LLM's list
    ranked[1] = torch.tensor([0, -1])
    out = PKD(PKDConfig(denoise="relabel")).denoise_once(labels, selected, llm, ranked, probs, split)
    assert out.tolist() == [0, 0, -1, 0, -1]  # ... and dropped when it is not


def test_denoise_posterior_hand_value_and_em():
    split, probs, selected, llm, labels = _denoise_case()
    shot_llm = torch.tensor([0])
    mean = probs.mean(0)[selected]  # q_i(y) of nodes 1-4

    def hand_posterior(belief):
        # soft counts: 1 everywhere + shot (y=0, l=0) + belief of the valid annotated nodes, all with l = 0
        counts = torch.ones(2, 2)
        counts[0, 0] += 1
        counts[:, 0] += belief[:3].sum(0)
        pi = counts / counts.sum(1, keepdim=True)
        post = mean * pi[:, 0]
        return post / post.sum(1, keepdim=True)

    post = hand_posterior(mean)  # first estimate: the teachers' mean softmax q as the belief
    pkd = PKD(PKDConfig(denoise="posterior", posterior_threshold=0.5))
    torch.testing.assert_close(pkd._llm_posterior(llm, llm >= 0, mean, labels, split, shot_llm), post)
    out = pkd.denoise_once(labels, selected, llm, None, probs, split, shot_llm)
    expected = torch.where(post.max(1).values >= 0.5, post.argmax(1), -1)
    expected[3] = -1  # invalid answer
    assert out[0] == 0 and out[selected].tolist() == expected.tolist()
    # EM: a second round re-estimates pi from the first posterior, not from q
    em = PKD(PKDConfig(denoise="posterior", posterior_iterations=2))
    torch.testing.assert_close(
        em._llm_posterior(llm, llm >= 0, mean, labels, split, shot_llm), hand_posterior(post)
    )
    with pytest.raises(ValueError, match="posterior_iterations"):
        PKDConfig(posterior_iterations=0)


# ------------------------------------------------------------------------------------ end to end
class NoisyAnnotator:
    """Answers the true label with probability ``accuracy`` (seeded per node), a wrong one otherwise; wrong
    on every shot node so that the test can check that true labels win there. Records what it was asked."""

    def __init__(self, y, shots, accuracy=0.7, seed=0):
        rng = np.random.default_rng(seed)
        c = int(y.max()) + 1
        self.answer = y.numpy().copy()
        flip = rng.random(len(self.answer)) > accuracy
        flip[shots.numpy()] = True
        self.answer[flip] = (self.answer[flip] + 1 + rng.integers(0, c - 1, flip.sum())) % c
        self.neighbours = None
        self.seen_neighbours = []
        self.asked = []

    def annotate(self, node_ids):
        node_ids = np.asarray(node_ids, dtype=np.int64)
        self.asked.append(node_ids)
        self.seen_neighbours.append(self.neighbours)
        labels = self.answer[node_ids]
        return Annotations(
            node_ids=node_ids,
            labels=labels,
            confidence=np.ones(len(node_ids)),
            raw=[""] * len(node_ids),
            ranked=labels.reshape(-1, 1),
        )


def _sbm(n_per_class=60, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    n = y.numel()
    same = y.view(-1, 1) == y.view(1, -1)
    prob = torch.where(same, torch.tensor(0.08), torch.tensor(0.005))
    adj = torch.rand(n, n, generator=g) < prob
    adj = torch.triu(adj, 1)
    edge_index = adj.nonzero().T
    edge_index = torch.cat([edge_index, edge_index.flip(0)], 1)
    x = F.one_hot(y, classes).float() * 0.6 + torch.randn(n, 16, generator=g)[:, :classes] * 1.0
    x = torch.cat([x, torch.randn(n, 13, generator=g)], 1)
    data = Data(x=x, edge_index=edge_index, y=y)
    data.class_names = [f"c{i}" for i in range(classes)]
    data.name = "sbm"
    return data


@pytest.mark.parametrize("protocol", ["paper", "strict"])
def test_pkd_end_to_end_small_graph(protocol):
    data = _sbm()
    split = few_shot_split(data.y, 3, protocol=protocol, seed=0)
    annotator = NoisyAnnotator(data.y, split.train_index, accuracy=0.7)
    teachers = ("gcn", "gat", "appnp", "h2gcn") if protocol == "paper" else ("gcn", "appnp", "mlp")
    config = PKDConfig(
        teachers=teachers,
        hidden=16,
        train=TrainConfig(epochs=30, patience=10),
        budget_count=60,
        ngs_rounds=3,
        student_epochs_per_round=3,
        final_epochs=30,
        denoise="drop",
        ppo_hidden=16,
    )
    pkd = PKD(config)
    expansion = pkd.expand(data, annotator, split, seed=0)
    # budget arithmetic and selection from the pool only
    assert expansion.selected.numel() == 60
    assert not bool(split.train_mask[expansion.selected].any())
    assert bool(split.pool_mask[expansion.selected].all())
    # DNS neighbours were given to the annotator for the selection query, then removed again
    assert isinstance(annotator.seen_neighbours[0], dict)
    assert set(annotator.seen_neighbours[0]) == set(expansion.selected.tolist())
    assert all(len(v) <= 4 * len(teachers) for v in annotator.seen_neighbours[0].values())
    assert annotator.neighbours is None
    # true labels win on the shots; dropped labels are -1 and outside the label mask
    assert torch.equal(expansion.labels[split.train_mask], data.y[split.train_mask])
    assert torch.equal(expansion.label_mask, expansion.labels >= 0)
    assert "llm_acc_selected" not in expansion.diagnostics  # test-label measurements live in evaluate
    d = pkd.evaluate_expansion(data, split, expansion)
    assert 0.0 <= d["llm_acc_selected"] <= 1.0 and set(d["teacher_test_acc"]) == set(config.teachers)
    assert "llm_acc_random" not in d  # opt-in: needs extra annotator calls
    # vetting by the teachers keeps a cleaner subset than the raw LLM labels
    assert d["expanded_label_acc"] >= d["llm_acc_selected"]

    for rule in ("ngs", "majority"):
        result = pkd.distill(data, expansion, split, seed=0, teacher_selection=rule)
        assert result.logits.shape == (data.num_nodes, 3)
        assert result.teacher_choice.shape == (data.num_nodes,)
        assert accuracy(result.logits, data.y, split.test_mask) > 0.6  # chance is 1/3
    assert sum(result.diagnostics["choice_counts"]) == data.num_nodes


@pytest.mark.parametrize(
    "protocol,shots,gate",
    [("paper", 2, "auto"), ("paper", 2, "off"), ("strict", 3, "auto"), ("strict", 2, "auto")],
)
def test_denoise_gate(protocol, shots, gate):
    data = _sbm(n_per_class=30)
    split = few_shot_split(data.y, shots, protocol=protocol, seed=2)
    config = PKDConfig(
        teachers=("gcn", "mlp"),
        hidden=8,
        train=TrainConfig(epochs=15, patience=10),
        budget_count=30,
        denoise="drop",
        denoise_gate=gate,
        dns_k=0,
    )
    annotator = NoisyAnnotator(data.y, split.train_index, accuracy=0.6)
    expansion = PKD(config).expand(data, annotator, split, seed=0)
    plain = PKD(replace(config, denoise="none")).expand(data, annotator, split, seed=0)
    llm = torch.from_numpy(annotator.answer)[plain.selected]
    if gate == "off":  # always denoised
        assert expansion.raw_expansion is None and "denoise_gate" not in expansion.diagnostics
        assert not torch.equal(expansion.labels[expansion.selected], llm)  # some LLM labels were dropped
        return
    g = expansion.diagnostics["denoise_gate"]
    if protocol == "strict":  # the referee check: the annotator is wrong on every shot, the referees are not
        assert g["llm_shot_acc"] == 0.0 and g["referee_cv_acc"] > 0.0
        assert g["folds"] == min(shots, PKDConfig.referee_folds) and g["held_out"] == 3 * g["folds"]
        # every discordant pair goes to the referees: the default veto never fires
        wins = g["referee_only_right"]
        assert g["llm_only_right"] == 0 and wins == round(g["referee_cv_acc"] * g["held_out"])
        assert g["rule"] == "veto" and g["chosen"] == "denoised" and g["annotator_p_value"] == 1.0
        # the cv rule denoises only when that many wins is significant at 90 %: exact McNemar p = 2^-wins
        cv = PKD(replace(config, referee_check="cv")).expand(data, annotator, split, seed=0)
        gcv = cv.diagnostics["denoise_gate"]
        assert gcv["rule"] == "cv" and gcv["referee_only_right"] == wins
        assert gcv["chosen"] == ("denoised" if 0.5**wins < 0.1 else "raw")
        for e in (expansion, cv):
            if e.diagnostics["denoise_gate"]["chosen"] == "denoised":
                assert e.raw_expansion is None
                assert not torch.equal(e.labels[e.selected], llm)
            else:
                assert e.raw_expansion is e
                assert torch.equal(e.labels[e.selected], llm)
        return
    raw = expansion.raw_expansion
    # the raw alternative keeps every LLM label (true ones on the shots), and equals denoise="none"
    assert torch.equal(raw.labels[raw.selected], llm)
    assert torch.equal(plain.teacher_probs, raw.teacher_probs)
    val = split.val_mask
    mean_val = lambda e: float((e.teacher_probs.argmax(-1)[:, val] == data.y[val]).float().mean())  # noqa: E731
    assert g["teacher_val_acc_raw"] == pytest.approx(mean_val(raw))
    assert g["chosen"] == ("denoised" if g["teacher_val_acc_denoised"] >= g["teacher_val_acc_raw"] else "raw")
    assert (expansion is raw) == (g["chosen"] == "raw")
    with pytest.raises(ValueError, match="denoise_gate"):
        PKDConfig(denoise_gate="validation")
    with pytest.raises(ValueError, match="denoise_min_shots"):
        PKDConfig(denoise_min_shots=0)


def test_pkd_is_deterministic():
    data = _sbm(n_per_class=30)
    split = few_shot_split(data.y, 2, seed=1)
    config = PKDConfig(
        hidden=8,
        train=TrainConfig(epochs=20, patience=10),
        budget_count=20,
        ngs_rounds=2,
        student_epochs_per_round=2,
        final_epochs=20,
        self_training_rounds=0,
        ppo_hidden=8,
        denoise="none",
        teachers=("gcn", "mlp"),
        dns_k=0,
    )
    runs = [PKD(config).fit(data, NoisyAnnotator(data.y, split.train_index), split, seed=3) for _ in range(2)]
    assert torch.equal(runs[0].logits, runs[1].logits)
    assert torch.equal(runs[0].teacher_choice, runs[1].teacher_choice)


def test_benchmark_pkd_rows_on_cora(tmp_path):
    from graphspike_kd.benchmarks.pkd import main

    out = tmp_path / "pkd.json"
    argv = [
        "--dataset",
        "cora",
        "--seeds",
        "0",
        "--shots",
        "1",
        "--epochs",
        "5",
        "--teachers",
        "gcn",
        "mlp",
        "--pkd-teachers",
        "gcn",
        "mlp",
        "--pkd-ngs-rounds",
        "2",
        "--pkd-budget",
        "50",
        "--pkd-hidden",
        "16",
        "--pkd-rows",
        "pkd",
        "pkd_random_teacher",
        "pkd_random_nodes",
        "--pkd-llm-acc-random",
        "--quiet",
        "--output",
        str(out),
    ]
    payload = main(argv)
    for row in ("pkd", "pkd_random_teacher", "pkd_random_nodes"):
        assert len(payload["methods"][row]["acc"]) == 1 and 0.0 <= payload["methods"][row]["mean"] <= 1.0
    diag = payload["per_seed"][0]["pkd"]["expansion"]
    assert diag["budget"] == 50 and 0.0 <= diag["llm_acc_selected"] <= 1.0 and "teacher_test_acc" in diag
    assert 0.0 <= diag["llm_acc_random"] <= 1.0  # opted in with --pkd-llm-acc-random
    oracle = diag["teacher_oracle"]  # the oracle row is the oracle of the expansion's teachers
    assert payload["methods"]["pkd_oracle_teacher"]["acc"] == [oracle["oracle_acc"]]
    assert oracle["oracle_acc"] >= max(oracle["teacher_acc"].values())
    assert set(oracle["agreement"]) == {"gcn|mlp"}
    assert 0.0 <= payload["per_seed"][0]["pkd"]["pkd"]["chosen_teacher_test_acc"] <= 1.0


# ------------------------------------------------------------------------ what the fit may read
def test_fit_reads_no_label_beyond_shots_and_validation():
    """Every label outside the shots and the validation nodes is made wrong: the fit does not change."""
    data = _sbm(n_per_class=30)
    config = PKDConfig(
        teachers=("gcn", "mlp"),
        hidden=8,
        train=TrainConfig(epochs=15, patience=5),
        budget_count=30,
        ngs_rounds=2,
        student_epochs_per_round=2,
        final_epochs=15,
        ppo_hidden=8,
        dns_k=2,
    )
    for protocol in ("paper", "strict"):
        split = few_shot_split(data.y, 3, protocol=protocol, seed=0)
        hidden = copy.copy(data)
        secret = ~(split.train_mask | split.val_mask)
        hidden.y = torch.where(secret, (data.y + 1) % 3, data.y)
        assert int(secret.sum()) > data.num_nodes // 2 and not torch.equal(hidden.y, data.y)
        runs = [
            PKD(config).fit(d, NoisyAnnotator(data.y, split.train_index), split, seed=0)
            for d in (data, hidden)
        ]
        assert torch.equal(runs[0].logits, runs[1].logits)
        assert torch.equal(runs[0].expansion.labels, runs[1].expansion.labels)
        assert runs[0].expansion.diagnostics == runs[1].expansion.diagnostics


def test_fit_never_computes_the_teacher_oracle(monkeypatch):
    """The oracle reads test labels: the fit must not call it, only the evaluation does."""
    import graphspike_kd.graph.pkd as pkd_module
    import graphspike_kd.graph.selectors as selectors_module

    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return selectors_module.teacher_oracle(*args, **kwargs)

    monkeypatch.setattr(pkd_module, "teacher_oracle", spy)
    data = _sbm(n_per_class=20)
    split = few_shot_split(data.y, 3, protocol="paper", seed=0)
    config = PKDConfig(teachers=("gcn", "mlp"), hidden=8, train=TrainConfig(epochs=5, patience=5),
                       budget_count=20, ngs_rounds=1, student_epochs_per_round=2, final_epochs=4,
                       ppo_hidden=8, dns_k=0)
    pkd = PKD(config)
    result = pkd.fit(data, NoisyAnnotator(data.y, split.train_index), split, seed=0)
    assert calls == []
    report = pkd.evaluate(data, split, result)
    assert calls == [1] and 0.0 <= report["expansion"]["teacher_oracle"]["oracle_acc"] <= 1.0


def test_evaluate_measures_against_the_true_labels():
    data = _sbm(n_per_class=30)
    split = few_shot_split(data.y, 3, protocol="paper", seed=0)
    annotator = NoisyAnnotator(data.y, split.train_index)
    config = PKDConfig(
        teachers=("gcn", "mlp"),
        hidden=8,
        train=TrainConfig(epochs=15, patience=5),
        budget_count=30,
        ngs_rounds=1,
        student_epochs_per_round=2,
        final_epochs=15,
        ppo_hidden=8,
        denoise="drop",
        denoise_gate="off",
        dns_k=0,
    )
    pkd = PKD(config)
    result = pkd.fit(data, annotator, split, seed=0)
    report = pkd.evaluate(data, split, result)
    exp, y, test = result.expansion, data.y, split.test_mask
    assert report["test_acc"] == accuracy(result.logits, y, test)
    chosen = exp.teacher_probs[result.teacher_choice, torch.arange(data.num_nodes)]
    assert report["chosen_teacher_test_acc"] == pytest.approx(
        float((chosen.argmax(-1) == y)[test].float().mean())
    )
    e = report["expansion"]
    sel = exp.selected
    assert e["llm_acc_selected"] == pytest.approx(float(np.mean(annotator.answer[sel] == y[sel].numpy())))
    kept = exp.labels[sel] >= 0
    assert e["expanded_label_acc"] == pytest.approx(
        float((exp.labels[sel][kept] == y[sel][kept]).float().mean())
    )
    assert e["denoise_label_acc"] == e["expanded_label_acc"] and 0 < exp.diagnostics["denoise_kept"] <= 1
    for b, name in enumerate(config.teachers):
        assert e["teacher_test_acc"][name] == accuracy(exp.teacher_probs[b], y, test)
        assert e["teacher_oracle"]["teacher_acc"][name] == pytest.approx(e["teacher_test_acc"][name])
        assert e["teacher_test_acc_shots"][name] == accuracy(exp.shot_teachers[1][b], y, test)
    right = (exp.teacher_probs.argmax(-1) == y.view(1, -1))[:, test]
    assert e["teacher_oracle"]["oracle_acc"] == pytest.approx(float(right.any(0).float().mean()))
    assert e["teacher_oracle"]["num_nodes"] == int(test.sum())


def test_distill_trains_the_student_on_student_loss_terms(monkeypatch):
    import graphspike_kd.graph.pkd as pkd_module

    seen = []

    def spy(*args, **kwargs):
        terms = student_loss_terms(*args, **kwargs)
        seen.append((tuple(terms), kwargs["alpha"], kwargs["beta"], kwargs["gamma"]))
        return terms

    monkeypatch.setattr(pkd_module, "student_loss_terms", spy)
    data = _sbm(n_per_class=20)
    split = few_shot_split(data.y, 3, protocol="strict", seed=0)
    config = PKDConfig(
        teachers=("gcn", "mlp"),
        hidden=8,
        train=TrainConfig(epochs=5),
        budget_count=20,
        ngs_rounds=2,
        student_epochs_per_round=3,
        final_epochs=4,
        ppo_hidden=8,
        dns_k=0,
        alpha=0.3,
        beta=0.7,
        gamma=0.2,
    )
    PKD(config).fit(data, NoisyAnnotator(data.y, split.train_index), split, seed=0)
    assert len(seen) == 2 * 3 + 4  # every student epoch of the NGS rounds and of the final run
    assert set(seen) == {(("ce", "distill", "entropy"), 0.3, 0.7, 0.2)}


@pytest.mark.parametrize(
    "protocol,shots,denoise,gate,budget,mode",
    [
        ("paper", 1, "posterior", "auto", 10, "compare"),
        ("paper", 1, "drop", "off", 10, "denoised"),
        ("paper", 1, "none", "auto", 10, "raw"),
        ("strict", 2, "posterior", "auto", 10, "check"),  # nothing to validate on: the referee check
        ("strict", 1, "drop", "auto", 10, "raw"),  # one shot per class: nothing to hold out
        ("strict", 3, "posterior", "auto", 10, "check"),
        ("paper", 3, "posterior", "auto", 0, "denoised"),  # nothing annotated, nothing to compare
    ],
)
def test_gate_mode(protocol, shots, denoise, gate, budget, mode):
    split = few_shot_split(_sbm(n_per_class=20).y, shots, protocol=protocol, seed=0)
    assert PKD(PKDConfig(denoise=denoise, denoise_gate=gate)).gate_mode(split, budget) == mode
    if protocol == "strict" and gate == "auto":  # the fixed shot rule, still selectable
        rule = PKD(PKDConfig(denoise=denoise, denoise_gate=gate, referee_check="shots"))
        assert rule.gate_mode(split, budget) == ("raw" if shots < 3 else "denoised")


def _referee_case(signal: float, seed: int = 0):
    """An SBM whose features and edges carry the class (``signal`` 1) or nothing at all (``signal`` 0)."""
    g = torch.Generator().manual_seed(seed)
    classes, per = 3, 40
    y = torch.arange(classes).repeat_interleave(per)
    n = y.numel()
    same = y.view(-1, 1) == y.view(1, -1)
    p_in, p_out = (0.15, 0.005) if signal else (0.04, 0.04)
    adj = torch.triu(torch.rand(n, n, generator=g) < torch.where(same, p_in, p_out), 1)
    ei = adj.nonzero().T
    x = torch.cat([F.one_hot(y, classes).float() * 2.0 * signal, torch.randn(n, 10, generator=g)], 1)
    data = Data(x=x, edge_index=torch.cat([ei, ei.flip(0)], 1), y=y)
    data.class_names, data.name = [f"c{i}" for i in range(classes)], "sbm"
    return data


@pytest.mark.parametrize(
    "b,c,rule,confidence,denoise",
    [
        (1, 9, "veto", 0.9, False),  # annotator-only right on 9 of 10 discordant shots: p = 11/1024
        (3, 6, "veto", 0.9, True),  # p = 130/512 = 0.25: no confident veto
        (3, 6, "veto", 0.7, False),  # ... but at 70 %
        (0, 0, "veto", 0.9, True),  # no evidence: denoise
        (0, 4, "veto", 0.9, False),  # p = 1/16
        (0, 3, "veto", 0.9, True),  # p = 1/8
        (4, 0, "cv", 0.9, True),  # referees only: p = 1/16
        (3, 0, "cv", 0.9, False),  # p = 1/8
        (0, 0, "cv", 0.9, False),  # no evidence: raw
        (7, 3, "cv", 0.9, False),  # p = 176/1024 = 0.17
        (7, 3, "veto", 0.9, True),
    ],
)
def test_referee_decision_hand_cases(b, c, rule, confidence, denoise):
    """The two rules on hand-counted discordant pairs (exact one-sided binomial tails at p = 1/2)."""
    from graphspike_kd.graph.pkd import referee_decision

    assert referee_decision(b, c, 35, rule=rule, confidence=confidence) is denoise
    # the margin moves the threshold: a margin below every bound flips "cv" to denoise, "veto" to raw
    assert referee_decision(b, c, 35, rule="cv", confidence=confidence, margin=-1.1) is True
    assert referee_decision(b, c, 35, rule="veto", confidence=confidence, margin=-1.1) is False
    with pytest.raises(ValueError, match="rule"):
        referee_decision(b, c, 35, rule="shots")


@pytest.mark.parametrize("good", [True, False])
def test_referee_check_tells_good_from_bad_referees(good):
    """Known-good referees (the class is in the features and the edges) beat an annotator that is right on
    2 shots in 3; known-bad ones (no signal anywhere: chance is 1/3) lose to it."""
    data = _referee_case(1.0 if good else 0.0)
    split = few_shot_split(data.y, 5, protocol="strict", seed=0)
    shot_y = data.y[split.train_index]
    shot_llm = torch.where(torch.arange(shot_y.numel()) % 3 == 0, (shot_y + 1) % 3, shot_y)  # 2/3 right
    config = PKDConfig(teachers=("gcn", "mlp"), hidden=16, train=TrainConfig(epochs=60), referee_folds=5)
    check = PKD(config).referee_check(data, split, shot_llm, seed=0)
    # five folds of five shots: every shot is held out once
    assert check["llm_shot_acc"] == pytest.approx(float((shot_llm == shot_y).float().mean()))
    assert check["folds"] == 5 and check["held_out"] == 15
    gain = check["referee_cv_acc"] - check["llm_shot_acc"]
    assert (check["referee_only_right"] - check["llm_only_right"]) / 15 == pytest.approx(gain, abs=1e-6)
    assert check["gain_lower_bound"] < gain
    if good:  # 5 discordant pairs, all to the referees: p = 2^-5
        assert check["referee_cv_acc"] >= 0.85 and check["denoise"] and check["p_value"] < 0.1
    else:  # the annotator wins the discordant pairs significantly: the default veto keeps the raw labels
        assert check["referee_cv_acc"] <= 0.6 and not check["denoise"] and check["annotator_p_value"] < 0.1
    cv = PKD(replace(config, referee_check="cv")).referee_check(data, split, shot_llm, seed=0)
    assert cv["denoise"] == good and cv["rule"] == "cv" and check["rule"] == "veto"
    assert {k: v for k, v in cv.items() if k not in ("rule", "reason")} == {
        k: v for k, v in check.items() if k not in ("rule", "reason")
    }  # the same cross-validation, read by another rule
    assert ("<=" in cv["reason"]) != cv["denoise"] and ("<=" in check["reason"]) == check["denoise"]
    # the check reads only the shots' labels: changing every other label changes nothing
    hidden = copy.copy(data)
    hidden.y = torch.where(split.train_mask, data.y, (data.y + 1) % 3)
    assert PKD(config).referee_check(hidden, split, shot_llm, seed=0) == check
    # one shot per class: nothing to hold out, raw labels
    one = few_shot_split(data.y, 1, protocol="strict", seed=0)
    none = PKD(config).referee_check(data, one, data.y[one.train_index], seed=0)
    assert not none["denoise"] and none["folds"] == 0 and "two shots" in none["reason"]


def test_referee_check_needs_confident_referees():
    """``"cv"``: good referees that beat the annotator on only two held-out shots: a point comparison would
    denoise, the 90 % bound does not (exact McNemar p = 1/4); at confidence 0.7 it does. A tie never
    denoises under ``"cv"`` and always does under ``"veto"``."""
    data = _referee_case(1.0)
    split = few_shot_split(data.y, 5, protocol="strict", seed=0)
    shot_y = data.y[split.train_index]
    wrong = torch.zeros(shot_y.numel(), dtype=torch.bool)
    wrong[:2] = True
    shot_llm = torch.where(wrong, (shot_y + 1) % 3, shot_y)  # right on 13 shots of 15
    config = PKDConfig(teachers=("gcn", "mlp"), hidden=16, train=TrainConfig(epochs=60), referee_folds=5,
                       referee_check="cv")
    check = PKD(config).referee_check(data, split, shot_llm, seed=0)
    assert check["referee_cv_acc"] == 1.0 and check["llm_shot_acc"] == pytest.approx(13 / 15)
    assert (check["referee_only_right"], check["llm_only_right"]) == (2, 0) and check["p_value"] == 0.25
    assert not check["denoise"] and check["gain_lower_bound"] < 0 < 2 / 15
    loose = PKD(replace(config, referee_confidence=0.7)).referee_check(data, split, shot_llm, seed=0)
    assert loose["denoise"] and loose["gain_lower_bound"] > 0 and loose["confidence"] == 0.7
    tie = PKD(config).referee_check(data, split, shot_y.clone(), seed=0)  # both right on every shot
    assert (tie["referee_only_right"], tie["llm_only_right"]) == (0, 0)
    assert tie["gain_lower_bound"] == 0.0 and not tie["denoise"]
    veto = PKD(replace(config, referee_check="veto")).referee_check(data, split, shot_y.clone(), seed=0)
    assert veto["rule"] == "veto" and veto["denoise"] and veto["annotator_gain_lower_bound"] == 0.0
    with pytest.raises(ValueError, match="referee_confidence"):
        PKDConfig(referee_confidence=1.0)


def test_referee_check_decides_the_strict_expansion():
    """Under strict, expand denoises exactly when the referee check says so, and records why. Five shots per
    class (15 held out): with no signal the referees are right on about a third of them, the annotator on
    all, which the default veto needs to see significantly."""
    for good in (True, False):
        data = _referee_case(1.0 if good else 0.0, seed=1)
        split = few_shot_split(data.y, 5, protocol="strict", seed=0)
        annotator = NoisyAnnotator(data.y, split.train_index, accuracy=0.7)
        annotator.answer[split.train_index.numpy()] = data.y[split.train_index].numpy()  # right on the shots
        if good:  # make it wrong on two shots in three, so that good referees win significantly
            idx = split.train_index
            wrong = idx[torch.arange(idx.numel()) % 3 != 0].numpy()
            annotator.answer[wrong] = (annotator.answer[wrong] + 1) % 3
        config = PKDConfig(teachers=("gcn", "mlp"), hidden=16, train=TrainConfig(epochs=40), budget_count=30,
                           denoise="posterior", dns_k=0)
        expansion = PKD(config).expand(data, annotator, split, seed=0)
        g = expansion.diagnostics["denoise_gate"]
        assert g["chosen"] == ("denoised" if g["denoise"] else "raw")
        assert g["denoise"] == good
        assert (expansion.raw_expansion is expansion) == (not good)


def test_teachers_that_read_labels_train_in_pkd():
    """Label propagation (nothing to train) and correct-and-smooth (an MLP, then the labels) as teachers."""
    data = _sbm(n_per_class=20)
    split = few_shot_split(data.y, 3, protocol="paper", seed=0)
    config = PKDConfig(teachers=("gcn", "labelprop", "cs", "sgc"), hidden=8,
                       train=TrainConfig(epochs=10, patience=5))
    pkd = PKD(config)
    y = torch.where(split.train_mask, data.y, torch.full_like(data.y, -1))
    models, probs = pkd.train_teachers(data, data.x, y, split.train_mask, split, seed=0)
    assert probs.shape == (4, data.num_nodes, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(4, data.num_nodes), atol=1e-4)
    # label propagation and C&S reproduce the shots they were given
    for b in (1, 2):
        assert torch.equal(probs[b].argmax(-1)[split.train_mask], data.y[split.train_mask])
    with pytest.raises(ValueError, match="student"):
        PKDConfig(student="labelprop")


def test_paired_gain_lower_bound():
    """The exact Clopper-Pearson bound on discordant pairs: closed forms, the defining tail equation, and
    the duality with the exact one-sided McNemar test."""
    from math import comb

    from graphspike_kd.graph.pkd import paired_gain_lower_bound

    # all discordant pairs won: theta_L = alpha^(1/n)
    assert paired_gain_lower_bound(3, 0, 9, 0.9) == pytest.approx(3 / 9 * (2 * 0.1 ** (1 / 3) - 1))
    assert paired_gain_lower_bound(0, 3, 9, 0.9) == pytest.approx(-3 / 9)  # theta_L = 0
    assert paired_gain_lower_bound(0, 0, 9, 0.9) == 0.0  # no discordant pair: no evidence

    def tail(w, n, t):
        return sum(comb(n, j) * t**j * (1 - t) ** (n - j) for j in range(w, n + 1))

    for wins, losses, total in ((6, 2, 15), (10, 3, 20), (20, 5, 40), (1, 4, 10)):
        n = wins + losses
        bound = paired_gain_lower_bound(wins, losses, total, 0.9)
        theta = (bound * total / n + 1) / 2
        assert tail(wins, n, theta) == pytest.approx(0.1, abs=1e-9)  # P(Bin(n, theta_L) >= wins) = alpha
        assert bound < (wins - losses) / total  # below the point estimate
        assert paired_gain_lower_bound(wins, losses, total, 0.95) < bound  # more confident, lower
    for n in range(1, 13):  # the bound is positive exactly when McNemar's exact one-sided p < 1 - confidence
        for wins in range(n + 1):
            p_value = tail(wins, n, 0.5)
            for conf in (0.8, 0.9, 0.95):
                if abs(p_value - (1 - conf)) > 1e-9:
                    assert (paired_gain_lower_bound(wins, n - wins, 20, conf) > 0) == (p_value < 1 - conf)
    with pytest.raises(ValueError, match="confidence"):
        paired_gain_lower_bound(1, 0, 2, 1.0)
    with pytest.raises(ValueError, match="total"):
        paired_gain_lower_bound(3, 2, 4)
