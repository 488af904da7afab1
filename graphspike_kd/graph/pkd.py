r"""PKD, end to end: Preference-driven Knowledge Distillation for few-shot node classification (Wei et al.,
"Preference-driven Knowledge Distillation for Few-shot Node Classification", NeurIPS 2025,
arXiv:2510.10116), composed from :mod:`~graphspike_kd.graph.selectors`, the annotators, the GNN zoo and
the shared trainer.

:meth:`PKD.fit` is :meth:`PKD.expand` followed by :meth:`PKD.distill` (paper Algorithm 1; steps marked *
are additions to the paper). :meth:`PKD.expand` composes named steps:

1. train the ``B`` teachers on the shots :math:`D_L` (:meth:`PKD.train_teachers`);
2. :meth:`PKD.select`: **GNS** ranks the unlabelled pool by K-uncertainty :math:`\delta_K` and keeps the
   top :math:`W` nodes (the budget);
3. :meth:`PKD.annotate`: the annotator labels those :math:`W` nodes, with **DNS** neighbour context for
   annotators that take one, and, only when the posterior denoiser will run, the shots (whose true labels
   calibrate it); no other node is sent. True labels override LLM labels on :math:`D_L`;
4. \* :meth:`PKD.denoise`: the shot-trained teachers vet the LLM labels (their errors are independent of
   the annotator's), then the teachers are retrained with cross-entropy on the expanded set
   :math:`\tilde D_L` (optional self-training rounds re-vet with the retrained teachers);
5. \* :meth:`PKD.gate`: keep the denoised set, or the raw LLM labels when denoising is judged unsafe.

:meth:`PKD.distill` then runs **NGS**, a PPO policy that picks one teacher per node, alternating with the
student (student frozen during the PPO step and vice versa), and predicts with the student only.

No step reads a label beyond the shots and, under the ``"paper"`` protocol, the validation nodes;
:meth:`PKD.evaluate` and :meth:`PKD.evaluate_expansion` measure a fit against the test labels.

Student loss (paper Eq. 1, reconstructed from its prose; :func:`student_loss_terms`):

.. math::
    \mathcal{L} = \alpha\,\mathcal{L}_{DL} + \beta\,\mathcal{L}_{CE} + \gamma\,\mathcal{L}_{E},\qquad
    \mathcal{L}_{DL} = -\frac{1}{|D|}\sum_{i\in D} \tilde z^{T}_i\cdot\log f_S(x_i),\quad
    \mathcal{L}_{CE} = -\frac{1}{|\tilde D_L|}\sum_{i\in\tilde D_L} \log f_S(x_i)_{y_i},\quad
    \mathcal{L}_{E} = \frac{1}{N}\sum_{i} H\big(f_S(x_i)\big)

with :math:`\tilde z^T_i` the softmax of the teacher NGS picked for node :math:`i`, :math:`\alpha = 0.5`,
:math:`\beta = 1`, :math:`\gamma = 0.1`. :math:`D` is :math:`\tilde D_L` (paper) or, with
``distill_on="all"``, every node (teachers' predictions need no label).

NGS reward per node (paper Eq. 4, **reconstructed**: the typeset form is not available; the paper's
ablation R1 → R3 and its prose give the ingredients and signs; :func:`ngs_rewards`):

.. math::
    R_i = (1-\eta)\,\mathrm{Acc}_i - \eta\,\big(\ell^{CE}_i + \ell^{DL}_i(a_i)\big),\qquad \eta = 0.3

Denoising (``denoise=``; an addition to the paper): an LLM annotator's errors are often *systematic*
class confusions, which cost more than uniform noise, so the teachers trained on the shots vet its labels:

``"none"``       keep every LLM label (the paper).
``"drop"``       drop an LLM label when every teacher predicts another class.
``"relabel"``    as ``"drop"``, but when the teachers' majority class is in the LLM's ranked list, use it
                 instead of dropping the node.
``"posterior"``  class-aware correction (Dawid & Skene, "Maximum Likelihood Estimation of Observer
                 Error-Rates Using the EM Algorithm", JRSS C 1979): estimate the LLM's confusion matrix
                 :math:`\pi_{y\ell} = P(\ell \mid y)` from the shots (true :math:`y`) and the teachers'
                 mean softmax :math:`q_i` on the annotated nodes, then label node :math:`i` with
                 :math:`\arg\max_y q_i(y)\,\pi_{y\ell_i}`; nodes whose posterior mass on it is below
                 ``posterior_threshold`` are dropped; ``posterior_iterations > 1`` re-estimates
                 :math:`\pi` from the posteriors (EM). The default.

``self_training_rounds`` repeats denoise → retrain with the retrained teachers as referees.

The **denoise gate** (``denoise_gate="auto"``, the default) decides whether the referees are good enough.
With validation labels (the ``"paper"`` protocol) it also trains the teachers on the raw LLM labels and
keeps the denoised set only when its teachers' mean validation accuracy is at least as high. Without them
(``"strict"``) the **referee check** (:meth:`PKD.referee_check`) cross-validates the shot-trained teachers
on the shots and compares them with the annotator's answers on the same held-out shots (one-sided exact
paired bounds at ``referee_confidence``, see :func:`paired_gain_lower_bound`). With
``referee_check="veto"`` (the default) it denoises unless the annotator is *confidently* more accurate
there: the posterior combines two sources, so it gains from referees that are only as accurate as the
annotator (their errors differ), and loses when they are clearly worse. ``referee_check="cv"`` is the
stricter reading: denoise only when the referees are confidently *more* accurate. With one shot per class
nothing can be held out and both keep the raw labels. ``referee_check="shots"`` is the fixed rule instead:
raw labels below ``denoise_min_shots`` labelled nodes per class (default 3). ``denoise_gate="off"`` always
denoises.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from graphspike_kd.common.losses import soft_target_loss
from graphspike_kd.graph.models import (
    build_model,
    build_teacher,
    is_trainable,
    needs_labels,
    prepare_features,
)
from graphspike_kd.graph.selectors import (
    NGS_STATE_DEFAULT,
    NGS_STATE_PARTS,
    PPOTeacherSelector,
    dns_neighbours,
    expansion_budget,
    gns_select,
    majority_vote,
    ngs_state,
    rule_teacher_choice,
    teacher_oracle,
)
from graphspike_kd.graph.splits import FewShotSplit
from graphspike_kd.graph.training import (
    TrainConfig,
    accuracy,
    predict,
    target_loss,
    train_node_classifier,
)

HOMOPHILY_TEACHERS = ("gcn", "gat", "appnp", "h2gcn")
HETEROPHILY_TEACHERS = ("gprgnn", "h2gcn", "mlp", "dirgnn")
# the teachers of :meth:`PKDConfig.at_scale`: no per-edge attention (GAT) and no two-hop operator (H2GCN)
SCALE_TEACHERS = ("gcn", "sgc", "cs", "mlp")
TEACHER_SELECTIONS = ("ngs", "random", "majority", "confident")
NODE_SELECTIONS = ("gns", "random")
DENOISE = ("none", "drop", "relabel", "posterior")
REFEREE_CHECKS = ("veto", "cv", "shots")
LABEL_READING_MODELS = ("labelprop", "cs")  # teachers only: they read the training labels at inference


def default_models(dataset_name: str) -> tuple[tuple[str, ...], str]:
    """The paper's teacher set and student for a dataset: homophilous graphs (Cora, Citeseer) get GCN,
    GAT, APPNP, H2GCN and a GCN student; the heterophilous WebKB graphs a heterophily set (GPRGNN, H2GCN,
    MLP, DirGNN; the paper's HoloNets is not in the zoo, MLP stands in) and an H2GCN student."""
    if dataset_name.lower() in ("cornell", "texas", "washington", "wisconsin"):
        return HETEROPHILY_TEACHERS, "h2gcn"
    return HOMOPHILY_TEACHERS, "gcn"


# ----------------------------------------------------------------------------------------- loss terms
def distillation_loss(student_logits: Tensor, teacher_probs: Tensor, mask: Tensor) -> Tensor:
    r""":math:`\mathcal{L}_{DL}`: cross-entropy from the selected teacher's softmax to the student's,
    averaged over the nodes in ``mask``.

    Shapes: student_logits :math:`(N, C)`, teacher_probs :math:`(N, C)`, mask :math:`(N)` → scalar.
    """
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_probs.shape)} differ"
        )
    if not bool(mask.any()):
        raise ValueError("distillation mask selects no node")
    return soft_target_loss(
        student_logits.float(), teacher_probs.float(), target_type="probs", form="ce", mask=mask
    )


def entropy_loss(student_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    r""":math:`\mathcal{L}_E`: mean Shannon entropy of the student's softmax (over ``mask``, default all)."""
    logp = F.log_softmax(student_logits.float(), dim=1)
    ent = -(logp.exp() * logp).sum(1)
    return ent.mean() if mask is None else ent[mask].mean()


def student_loss_terms(
    student_logits: Tensor,
    teacher_probs: Tensor,
    labels: Tensor,
    *,
    distill_mask: Tensor,
    label_mask: Tensor,
    alpha: float = 0.5,
    beta: float = 1.0,
    gamma: float = 0.1,
) -> dict[str, Tensor]:
    r"""The weighted terms of :math:`\alpha\mathcal{L}_{DL} + \beta\mathcal{L}_{CE} + \gamma\mathcal{L}_E`
    as a dict (``ce``, ``distill``, ``entropy``, in that order) so every term can be logged; the student
    loss of :meth:`PKD.distill` is their sum. ``ce`` is left out when no node of ``label_mask`` has a label.

    Args:
        student_logits (Tensor): the student's logits.
        teacher_probs (Tensor): the selected teacher's softmax per node.
        labels (Tensor): hard labels, ``-1`` = none.
        distill_mask (Tensor): the nodes :math:`D` of :math:`\mathcal{L}_{DL}`.
        label_mask (Tensor): the nodes :math:`\tilde D_L` of :math:`\mathcal{L}_{CE}`.
        alpha, beta, gamma (float, optional): the weights. (default: ``0.5``, ``1.0``, ``0.1``)

    Shapes: student_logits :math:`(N, C)`, teacher_probs :math:`(N, C)`, labels :math:`(N)`, masks
    :math:`(N)` bool → dict of scalars.
    """
    terms: dict[str, Tensor] = {}
    if bool((label_mask & (labels >= 0)).any()):
        terms["ce"] = beta * target_loss(student_logits, labels, label_mask)
    terms["distill"] = alpha * distillation_loss(student_logits, teacher_probs, distill_mask)
    terms["entropy"] = gamma * entropy_loss(student_logits)
    return terms


def ngs_rewards(student_logits: Tensor, teacher_probs: Tensor, labels: Tensor, *, eta: float = 0.3) -> Tensor:
    r"""Per-node NGS reward :math:`R_i = (1-\eta)\mathrm{Acc}_i - \eta(\ell^{CE}_i + \ell^{DL}_i)`
    (reconstructed, see the module docstring). Nodes without a label (``-1``) get no Acc and CE terms.

    Shapes: student_logits :math:`(n, C)`, teacher_probs :math:`(n, C)` (the chosen teacher's softmax),
    labels :math:`(n)` → :math:`(n)`.
    """
    logp = F.log_softmax(student_logits.float(), dim=1)
    has = labels >= 0
    safe = labels.clamp(min=0)
    acc = (student_logits.argmax(1) == safe).float() * has
    ce = -logp.gather(1, safe.view(-1, 1)).view(-1) * has
    dl = soft_target_loss(
        student_logits.float(), teacher_probs.float(), target_type="probs", form="ce", reduction="none"
    )
    return (1 - eta) * acc - eta * (ce + dl)


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class PKDConfig:
    """Every knob of :class:`PKD` (defaults: the paper's where it gives one).

    Args:
        teachers (tuple of str): teacher models (:func:`~graphspike_kd.graph.models.build_model` names).
            (default: GCN, GAT, APPNP, H2GCN)
        student (str): student model. (default: ``"gcn"``)
        hidden (int): hidden width of teachers and student. (default: ``128``)
        train (TrainConfig): optimiser and schedule of every teacher (Adam lr 1e-2, wd 5e-4).
        device (str): where the teachers, the student, the features and the adjacency live (``"cpu"``,
            ``"cuda"``, ``"cuda:1"``, ...); labels, the annotator's answers, the selectors and the PPO policy
            stay on the CPU, and every returned tensor is on the CPU. (default: ``"cpu"``)
        budget_fraction (float | None): expand the labelled set to this fraction of all nodes.
            (default: ``0.48``)
        budget_count (int | None): absolute number of annotated nodes; overrides the fraction.
        uncertainty (str): δ_K form, ``"pairwise"`` (released code) or ``"js"`` (paper). (default: pairwise)
        node_selection (str): ``"gns"`` or ``"random"`` (ablation). (default: ``"gns"``)
        dns_k (int): DNS neighbours per teacher for annotators with a ``neighbours`` option; 0 = off.
            (default: ``4``)
        denoise (str): ``"none"``, ``"drop"``, ``"relabel"`` or ``"posterior"``. (default: ``"posterior"``)
        posterior_threshold (float): min posterior of a kept label (``"posterior"``). (default: ``0.5``)
        denoise_gate (str): ``"auto"``: with a labelled validation set (``"paper"`` protocol) also train
            the teachers on the raw LLM labels and keep the denoised labels only if their teachers' mean
            validation accuracy is at least as high; without one, decide by ``referee_check`` (denoising
            with poor referees throws away good labels, see the module docstring). ``"off"``: always
            denoise. (default: ``"auto"``)
        denoise_min_shots (int): the shot rule of ``referee_check="shots"``. (default: ``3``)
        posterior_iterations (int): EM rounds of the ``"posterior"`` confusion-matrix estimate (1: from the
            teachers' beliefs only). (default: ``1``)
        self_training_rounds (int): extra denoise → retrain rounds with the retrained teachers as the
            reference (the first round always uses the shot-trained teachers). (default: ``0``)
        teacher_selection (str): ``"ngs"`` (PPO), or the ablations ``"random"``, ``"majority"`` (a teacher
            that agrees with the majority vote), ``"confident"`` (lowest entropy). (default: ``"ngs"``)
        alpha, beta, gamma (float): student loss weights. (default: ``0.5``, ``1.0``, ``0.1``)
        eta (float): reward weight (reconstruction). (default: ``0.3``)
        distill_on (str): ``"labelled"`` (:math:`\\tilde D_L`, the paper) or ``"all"``. (default: ``"all"``)
        ngs_rounds (int): alternations of student training and PPO update (the paper: 200). (default: ``40``)
        student_epochs_per_round (int): student epochs between PPO updates (the paper: 5). (default: ``5``)
        final_epochs (int): student epochs after NGS with the argmax policy, with model selection.
            (default: ``200``)
        ppo_lr (float), ppo_hidden (int): PPO heads. (default: ``3e-3``, ``128``)
        ngs_state_parts (tuple of str): the blocks of the NGS state
            (:data:`~graphspike_kd.graph.selectors.NGS_STATE_PARTS`; ``"label_agreement"`` reads the
            expanded labels). (default: :data:`~graphspike_kd.graph.selectors.NGS_STATE_DEFAULT`)
        referee_check (str): how ``denoise_gate="auto"`` decides without validation labels (see
            :meth:`PKD.referee_check`, which cross-validates the shot-trained teachers on the shots):
            ``"veto"`` (denoise unless the annotator is confidently more accurate than the referees on the
            held-out shots), ``"cv"`` (denoise only when the referees are confidently more accurate) or
            ``"shots"`` (the fixed rule: denoise from ``denoise_min_shots`` shots per class).
            (default: ``"veto"``)
        referee_folds (int): folds of the referee check (``"veto"``, ``"cv"``), each holding out one shot
            per class; up to this many shots per class, every shot is held out once, which gives the
            paired bound the most pairs. (default: ``5``)
        referee_margin (float): the ``"cv"`` check denoises when the lower confidence bound of the
            referees' accuracy minus the annotator's, on the held-out shots, exceeds this margin; the
            ``"veto"`` check keeps the raw labels when the lower bound of the annotator's accuracy minus the
            referees' exceeds it. (default: ``0.0``)
        referee_confidence (float): the one-sided confidence level of those bounds, in ``(0, 1)``
            (:func:`paired_gain_lower_bound`); with margin 0 each check is an exact one-sided McNemar test
            at level ``1 - referee_confidence``. (default: ``0.9``)
    """

    teachers: tuple[str, ...] = HOMOPHILY_TEACHERS
    student: str = "gcn"
    hidden: int = 128
    train: TrainConfig = TrainConfig(epochs=200, patience=50)
    device: str = "cpu"
    budget_fraction: float | None = 0.48
    budget_count: int | None = None
    uncertainty: str = "pairwise"
    node_selection: str = "gns"
    dns_k: int = 4
    denoise: str = "posterior"
    posterior_threshold: float = 0.5
    posterior_iterations: int = 1
    denoise_gate: str = "auto"
    denoise_min_shots: int = 3
    self_training_rounds: int = 0
    teacher_selection: str = "ngs"
    alpha: float = 0.5
    beta: float = 1.0
    gamma: float = 0.1
    eta: float = 0.3
    distill_on: str = "all"
    ngs_rounds: int = 40
    student_epochs_per_round: int = 5
    final_epochs: int = 200
    ppo_lr: float = 3e-3
    ppo_hidden: int = 128
    ngs_state_parts: tuple[str, ...] = NGS_STATE_DEFAULT
    referee_check: str = "veto"
    referee_folds: int = 5
    referee_margin: float = 0.0
    referee_confidence: float = 0.9

    @classmethod
    def at_scale(cls, **overrides: Any) -> PKDConfig:
        r"""The configuration for large graphs (about :math:`10^5` nodes and more): every step linear in
        nodes and edges, a schedule that fits one seed of a 169k-node, 1.2M-edge graph in about 20 minutes
        on two CPU cores (``benchmarks/pkd_scale.py``, :doc:`/pkd-scale`). Any field can be overridden.

        It differs from the defaults in:

        - ``teachers`` = :data:`SCALE_TEACHERS`: GCN, SGC (a :math:`K = 2` low-pass filter, one linear
          map), Correct-and-Smooth (an MLP whose residuals and predictions are propagated) and a
          feature-only MLP, each a few sparse products per epoch. GAT keeps every head's per-edge messages
          for the backward pass (its memory grows fastest with the edges, see the estimate in
          :doc:`/pkd-scale`) and H2GCN's two-hop operator costs several GCN epochs per epoch. Two of the
          four kept ignore the graph, so their errors differ from the message-passing ones.
        - ``train`` = ``TrainConfig(epochs=50, patience=10, eval_every=5)``: validation every 5 epochs.
        - ``ngs_rounds=10``, ``final_epochs=100`` (the student schedule; 5 student epochs per round as
          in the defaults).

        Args:
            **overrides: fields to set instead of the preset's.

        Example:
            >>> PKDConfig.at_scale(device="cuda").teachers
            ('gcn', 'sgc', 'cs', 'mlp')
        """
        preset: dict[str, Any] = {
            "teachers": SCALE_TEACHERS,
            "train": TrainConfig(epochs=50, patience=10, eval_every=5),
            "ngs_rounds": 10,
            "final_epochs": 100,
        }
        unknown = sorted(set(overrides) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown PKDConfig fields {unknown}")
        return cls(**{**preset, **overrides})

    def __post_init__(self) -> None:
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"bad device={self.device!r}: {exc}") from None
        if len(self.teachers) < 2:
            raise ValueError(f"PKD needs at least 2 teachers, got {self.teachers}")
        for name, value, valid in (
            ("teacher_selection", self.teacher_selection, TEACHER_SELECTIONS),
            ("node_selection", self.node_selection, NODE_SELECTIONS),
            ("denoise", self.denoise, DENOISE),
            ("distill_on", self.distill_on, ("labelled", "all")),
            ("uncertainty", self.uncertainty, ("pairwise", "js")),
            ("denoise_gate", self.denoise_gate, ("auto", "off")),
            ("referee_check", self.referee_check, REFEREE_CHECKS),
        ):
            if value not in valid:
                raise ValueError(f"unknown {name}={value!r}; valid: {', '.join(valid)}")
        if self.self_training_rounds < 0 or self.ngs_rounds < 0 or self.final_epochs < 1:
            raise ValueError("self_training_rounds and ngs_rounds must be >= 0, final_epochs >= 1")
        if self.denoise_min_shots < 1:
            raise ValueError(f"denoise_min_shots must be >= 1, got {self.denoise_min_shots}")
        if self.posterior_iterations < 1:
            raise ValueError(f"posterior_iterations must be >= 1, got {self.posterior_iterations}")
        if self.referee_folds < 1:
            raise ValueError(f"referee_folds must be >= 1, got {self.referee_folds}")
        if not 0.0 < self.referee_confidence < 1.0:
            raise ValueError(f"referee_confidence must be in (0, 1), got {self.referee_confidence}")
        bad = [q for q in self.ngs_state_parts if q not in NGS_STATE_PARTS]
        if bad or not self.ngs_state_parts:
            raise ValueError(f"unknown or no ngs_state_parts {bad}; valid: {', '.join(NGS_STATE_PARTS)}")
        if self.student.lower() in LABEL_READING_MODELS:
            raise ValueError(f"student {self.student!r} reads the labels at inference; a student must not")


# ------------------------------------------------------------------------------------------- results
@dataclass
class LLMAnswers:
    """What :meth:`PKD.annotate` got from the annotator."""

    labels: Tensor  # [W] the annotator's class for each selected node (-1: invalid answer)
    ranked: Tensor | None = None  # [W, R] its ranked classes (-1 padded), when the annotator gives them
    shot_labels: Tensor | None = None  # [Q] its answers on the shots (asked only for the posterior denoiser)


@dataclass
class Expansion:
    """What :meth:`PKD.expand` produced: the expanded label set and the teachers trained on it (input of
    :meth:`PKD.distill`). ``diagnostics`` holds only what needs no hidden label (budget, pool size, invalid
    answers, the denoiser's kept fraction, the gate's decision); :meth:`PKD.evaluate_expansion` adds the
    test-label measurements."""

    labels: Tensor  # [N] long: true labels on shots, (denoised) LLM labels, -1 elsewhere
    label_mask: Tensor  # [N] bool: nodes of the expanded set with a label
    selected: Tensor  # [W] node ids sent to the annotator
    llm_labels: Tensor  # [W] raw annotator labels of `selected` (-1 invalid)
    teacher_probs: Tensor  # [B, N, C] softmax of the final teachers
    teacher_models: list[nn.Module]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    shot_teachers: tuple[list[nn.Module], Tensor] | None = None  # stage-1 teachers and their softmax
    raw_expansion: Expansion | None = None  # the undenoised alternative, when the denoise gate trained it


@dataclass
class PKDResult:
    """What :meth:`PKD.distill` produced: the student, its logits on every node, the expansion it learnt
    from, the teacher chosen per node and label-free diagnostics (NGS trace, policy, choice counts)."""

    student: nn.Module
    logits: Tensor
    expansion: Expansion
    teacher_choice: Tensor  # [N] chosen teacher per node (argmax policy / ablation rule)
    diagnostics: dict[str, Any] = field(default_factory=dict)


def visible_labels(y: Tensor, split: FewShotSplit) -> Tensor:
    """The labels PKD may read: the true labels of the shots and of the validation nodes (present only
    under the ``"paper"`` protocol), ``-1`` on every other node. Every step of :meth:`PKD.fit` reads labels
    through this, so the pool's and the test set's labels never reach the method.

    Shapes:
        - **input:** y :math:`(N)`
        - **output:** :math:`(N)`
    """
    return torch.where(split.train_mask | split.val_mask, y, torch.full_like(y, -1))


def annotation_pool(split: FewShotSplit) -> Tensor:
    """The nodes GNS may send to the annotator: the split's pool minus the shots, bool ``[N]``."""
    return split.pool_mask & ~split.train_mask


# ---------------------------------------------------------------------------------------------- PKD
class PKD:
    r"""The PKD pipeline with swappable parts: any annotator (``annotate(node_ids) -> Annotations``), any
    teacher set and student from the GNN zoo, any budget, either split protocol.

    >>> pkd = PKD(PKDConfig(budget_count=140))
    >>> result = pkd.fit(data, annotator, split, seed=0)
    >>> accuracy(result.logits, data.y, split.test_mask)
    >>> pkd.evaluate(data, split, result)          # test-label diagnostics, outside the fit

    :meth:`fit` = :meth:`expand` (shot teachers → :meth:`select` → :meth:`annotate` → :meth:`denoise` →
    :meth:`gate`) followed by :meth:`distill` (NGS + student). Calling them separately lets several
    teacher-selection rules share one expansion, as the benchmark's ablations do. The annotator is asked
    about the :math:`W` selected nodes, plus the shots when the ``"posterior"`` denoiser runs, and nothing
    else.

    Args:
        config (PKDConfig): every setting. (default: :class:`PKDConfig`\ ``()``)
        progress (bool): progress bars. (default: ``False``)
    """

    def __init__(self, config: PKDConfig | None = None, *, progress: bool = False):
        self.config = config or PKDConfig()
        self.progress = progress

    def __repr__(self) -> str:
        c = self.config
        return (
            f"PKD(teachers={list(c.teachers)}, student={c.student!r}, selection={c.node_selection}/"
            f"{c.teacher_selection}, denoise={c.denoise!r})"
        )

    # ----------------------------------------------------------------------------------- helpers
    def on_device(self, data):
        """``data`` with its features (as :func:`prepare_features` gives them) and ``edge_index`` on
        ``config.device``: ``data`` itself on the CPU, else a shallow copy, made once per graph and kept
        while the same ``data`` object is used. Labels stay where they are."""
        device = torch.device(self.config.device)
        if device.type == "cpu":
            return data
        cached = getattr(self, "_placed", None)
        if cached is not None and cached[0] is data:
            return cached[1]
        placed = copy.copy(data)
        placed.x = prepare_features(data.x).to(device)
        placed.edge_index = data.edge_index.to(device)
        self._placed = (data, placed)
        return placed

    def _fit_model(
        self, name: str, data, x: Tensor, targets: Tensor, mask: Tensor, split: FewShotSplit, seed: int
    ) -> nn.Module:
        data = self.on_device(data)
        model = build_teacher(name, data.num_features, self.config.hidden, len(data.class_names))
        model = model.to(self.config.device)
        val_mask = split.val_mask if split.has_validation else None
        config = self.config.train if val_mask is not None else replace(self.config.train, patience=None)
        if is_trainable(model):
            train_node_classifier(
                model,
                x,
                data.edge_index,
                targets,
                mask,
                val_mask=val_mask,
                val_y=visible_labels(data.y, split),
                config=config,
                seed=seed,
            )
        if needs_labels(model):  # label propagation, correct and smooth: they read the training labels
            model.fit_labels(x, data.edge_index, targets, mask)
        return model

    def train_teachers(
        self, data, x: Tensor, targets: Tensor, mask: Tensor, split: FewShotSplit, seed: int
    ) -> tuple[list[nn.Module], Tensor]:
        """Train every teacher on ``targets[mask]`` (model selection on the validation nodes when the split
        has them); returns the models and their softmax ``[B, N, C]`` (on the CPU). ``x`` is on
        ``config.device``."""
        models, probs = [], []
        edge_index = self.on_device(data).edge_index
        for b, name in enumerate(self.config.teachers):
            model = self._fit_model(name, data, x, targets, mask, split, seed * 101 + b)
            models.append(model)
            probs.append(predict(model, x, edge_index).softmax(-1).cpu())
        return models, torch.stack(probs)

    # ------------------------------------------------------------------------------ expansion steps
    def select(self, split: FewShotSplit, shot_probs: Tensor, seed: int = 0) -> Tensor:
        r"""Choose the nodes to annotate. The budget :math:`W` is :func:`expansion_budget`
        (``budget_fraction`` or ``budget_count``) over :func:`annotation_pool`; ``node_selection="gns"``
        keeps the :math:`W` pool nodes with the largest :math:`\delta_K` of the shot-trained teachers
        (:func:`gns_select`, paper Sec. 3.2), ``"random"`` draws :math:`W` pool nodes uniformly (ablation).

        Args:
            split (FewShotSplit): the few-shot split.
            shot_probs (Tensor): softmax of the teachers trained on the shots.
            seed (int, optional): seed of the random selection. (default: ``0``)

        Shapes:
            - **input:** shot_probs :math:`(B, N, C)`
            - **output:** :math:`(W)` node ids (GNS: most uncertain first)
        """
        c = self.config
        pool = annotation_pool(split)
        budget = expansion_budget(
            pool.numel(),
            int(split.train_mask.sum()),
            int(pool.sum()),
            fraction=c.budget_fraction,
            count=c.budget_count,
        )
        if c.node_selection == "gns":
            return gns_select(shot_probs, pool, budget, form=c.uncertainty)
        generator = torch.Generator().manual_seed(seed)
        cand = pool.nonzero().view(-1)
        return cand[torch.randperm(cand.numel(), generator=generator)[:budget]]

    def annotate(
        self,
        annotator,
        data,
        split: FewShotSplit,
        selected: Tensor,
        shot_models: list[nn.Module],
        *,
        ask_shots: bool = False,
    ) -> LLMAnswers:
        """Ask the annotator about ``selected`` and, with ``ask_shots``, about the shots; no other node.

        An annotator with a ``neighbours`` option (the text backends) gets **DNS** context for the query on
        ``selected``: each node's ``dns_k`` nearest neighbours in every shot-trained teacher's embedding space
        (:func:`dns_neighbours`, paper Sec. 3.2); its previous setting is restored afterwards, so the shots
        are asked without context. ``dns_k = 0`` turns DNS off.

        Args:
            annotator: anything with ``annotate(node_ids) -> Annotations``.
            data: the graph (``x``, ``edge_index``).
            split (FewShotSplit): the few-shot split (its shots are the ``ask_shots`` query).
            selected (Tensor): ``[W]`` node ids from :meth:`select`.
            shot_models (list of nn.Module): the teachers trained on the shots (DNS embeddings).
            ask_shots (bool, optional): also annotate the shots, which the ``"posterior"`` denoiser
                compares with their true labels. (default: ``False``)
        """
        c = self.config
        restore = None
        if c.dns_k > 0:
            placed = self.on_device(data)
            x = prepare_features(placed.x)
            restore = _attach_dns(annotator, shot_models, placed, x, selected, c.dns_k)
        try:
            ann = annotator.annotate(selected.numpy()) if selected.numel() else None
        finally:
            if restore is not None:
                restore()
        if ann is None:
            answers = LLMAnswers(torch.empty(0, dtype=torch.long))
        else:
            ranked = torch.from_numpy(ann.ranked.copy()) if ann.ranked is not None else None
            answers = LLMAnswers(torch.from_numpy(ann.labels.copy()), ranked)
        if ask_shots:
            answers.shot_labels = torch.from_numpy(
                annotator.annotate(split.train_index.numpy()).labels.copy()
            )
        return answers

    def denoise(
        self,
        data,
        split: FewShotSplit,
        labels: Tensor,
        selected: Tensor,
        answers: LLMAnswers,
        shot_probs: Tensor,
        seed: int = 0,
    ) -> tuple[Tensor, list[nn.Module], Tensor]:
        """Vet the LLM labels and retrain the teachers on what is kept: ``1 + self_training_rounds`` rounds of
        :meth:`denoise_once` followed by :meth:`train_teachers`. The first round's referees are the
        shot-trained teachers (``shot_probs``), whose errors are independent of the annotator's (teachers
        trained on the LLM labels reproduce them, and then rarely contradict them); each later round's are
        the teachers just retrained.

        Args:
            data: the graph.
            split (FewShotSplit): the few-shot split.
            labels (Tensor): ``[N]`` raw expanded labels (true on the shots, LLM on ``selected``, ``-1``
                elsewhere).
            selected (Tensor): ``[W]`` annotated node ids.
            answers (LLMAnswers): what :meth:`annotate` returned.
            shot_probs (Tensor): ``[B, N, C]`` softmax of the shot-trained teachers.
            seed (int, optional): the teachers' seeds are ``seed + 1 + round``. (default: ``0``)

        Returns:
            ``(labels [N], teachers, their softmax [B, N, C])`` after the last round.
        """
        x = prepare_features(self.on_device(data).x)
        reference = shot_probs
        for rnd in range(1 + self.config.self_training_rounds):
            labels = self.denoise_once(
                labels, selected, answers.labels, answers.ranked, reference, split, answers.shot_labels
            )
            models, probs = self.train_teachers(data, x, labels, labels >= 0, split, seed + 1 + rnd)
            reference = probs
        return labels, models, probs

    def gate_mode(self, split: FewShotSplit, budget: int) -> str:
        """Which label sets :meth:`expand` trains teachers on, decided before any is trained:
        ``"raw"`` (every LLM label: ``denoise="none"``, or, without validation labels, one shot per class
        or the ``"shots"`` rule), ``"denoised"`` (``denoise_gate="off"``, the ``"shots"`` rule with enough
        shots, or nothing was annotated), ``"compare"`` (both; :meth:`gate` keeps the one whose teachers
        validate better) or ``"check"`` (no validation labels: :meth:`referee_check` decides once the
        annotator has answered on the shots)."""
        c = self.config
        if c.denoise == "none":
            return "raw"
        if c.denoise_gate != "auto" or budget == 0:
            return "denoised"
        if split.has_validation:
            return "compare"
        if c.referee_check == "shots":
            return "raw" if split.shots < c.denoise_min_shots else "denoised"
        return "raw" if split.shots < 2 else "check"  # one shot per class: nothing to hold out

    def referee_check(
        self, data, split: FewShotSplit, shot_llm: Tensor | None, seed: int = 0
    ) -> dict[str, Any]:
        r"""Label-free estimate of whether the referees (the teachers trained on the shots) can vet the
        annotator: cross-validation on the shots, paired with the annotator's answers on the same shots.

        Fold :math:`f < F` (:math:`F` = ``referee_folds``, at most the shots per class) holds out the
        :math:`f`-th shot of every class that has at least two, trains the teachers on the other shots and
        predicts the held-out ones with their mean softmax. Every held-out shot :math:`i \in H` then has a
        referee verdict :math:`r_i = [\arg\max_c \bar p^{(-f)}_i(c) = y_i]` and an annotator verdict
        :math:`a_i = [\ell_i = y_i]`, and

        .. math::
            \mathrm{acc}_{ref} - \mathrm{acc}_{LLM} = \frac{b - c}{|H|},\qquad
            b = \#\{i \in H: r_i > a_i\},\quad c = \#\{i \in H: r_i < a_i\}.

        With three shots per class a few classes give only a dozen held-out pairs, so a point comparison
        would decide on noise; the decision uses one-sided exact bounds at level ``referee_confidence``
        (:func:`paired_gain_lower_bound`):

        - ``referee_check="veto"`` (default): denoise unless the lower bound of the *annotator's* gain
          :math:`(c - b)/|H|` exceeds ``referee_margin``, i.e. unless the held-out shots show the annotator
          confidently more accurate. The posterior denoiser combines the two sources; referees about as
          accurate as the annotator still help it, because their errors differ from the annotator's.
        - ``referee_check="cv"``: denoise only when the lower bound of the *referees'* gain
          :math:`(b - c)/|H|` exceeds ``referee_margin``.

        (Called with ``referee_check="shots"``, which never runs it inside :meth:`expand`, it applies
        ``"veto"``.) :func:`referee_decision` is the rule on its own.

        Both are biased towards the annotator: the referees of the estimate see one shot per class fewer
        than the real ones, and the held-out shots are class-balanced where the annotated nodes need not
        be. Reads the shots' labels only.

        Args:
            data: the graph.
            split (FewShotSplit): the few-shot split.
            shot_llm (Tensor, optional): ``[Q]`` the annotator's answers on ``split.train_index``
                (``-1``: invalid, counted wrong); ``None``: the annotator was not asked (no denoising).
            seed (int, optional): seeds the fold teachers. (default: ``0``)

        Returns:
            dict with ``denoise`` (bool), ``rule`` (``"veto"`` or ``"cv"``), ``referee_cv_acc`` and
            ``llm_shot_acc`` (both on the held-out shots), ``referee_only_right`` (:math:`b`),
            ``llm_only_right`` (:math:`c`), ``gain_lower_bound`` (of the referees' gain),
            ``annotator_gain_lower_bound``, ``p_value`` (exact one-sided McNemar for the referees,
            :math:`P(B \ge b)` for :math:`B \sim \mathrm{Bin}(b + c, 1/2)`), ``annotator_p_value``
            (:math:`P(B \ge c)`), ``confidence``, ``folds``, ``held_out`` and ``reason``.
        """
        c = self.config
        y = visible_labels(data.y, split)
        idx = split.train_index
        cls = y[idx]
        rank = torch.zeros_like(idx)
        size = torch.zeros_like(idx)
        for k in cls.unique():
            members = (cls == k).nonzero().view(-1)
            rank[members] = torch.arange(members.numel())
            size[members] = members.numel()
        eligible = size >= 2
        asked = shot_llm is not None and idx.numel() > 0
        llm_acc = float((shot_llm == cls).float().mean()) if asked else math.nan
        rule = "cv" if c.referee_check == "cv" else "veto"
        out: dict[str, Any] = {
            "rule": rule, "referee_cv_acc": math.nan, "llm_shot_acc": llm_acc,
            "confidence": c.referee_confidence, "folds": 0, "held_out": 0,
        }
        if shot_llm is None or not bool(eligible.any()):
            why = "no class has two shots to cross-validate" if asked else "no annotator answers on the shots"
            return {**out, "denoise": False, "reason": f"{why}: raw labels"}
        folds = min(c.referee_folds, int(rank[eligible].max()) + 1)
        x = prepare_features(data.x)
        ref_hits, llm_hits = [], []
        for f in range(folds):
            held = eligible & (rank == f)
            train = split.train_mask.clone()
            train[idx[held]] = False
            targets = torch.where(train, y, torch.full_like(y, -1))
            _, probs = self.train_teachers(data, x, targets, train, split, seed * 1009 + 500 + f)
            ref_hits.append(probs.mean(0).argmax(-1).cpu()[idx[held]] == cls[held])
            llm_hits.append(shot_llm[held] == cls[held])
        ref, llm = torch.cat(ref_hits), torch.cat(llm_hits)
        b, d = int((ref & ~llm).sum()), int((~ref & llm).sum())
        bound = paired_gain_lower_bound(b, d, int(ref.numel()), c.referee_confidence)
        llm_bound = paired_gain_lower_bound(d, b, int(ref.numel()), c.referee_confidence)
        ref_acc, llm_held = float(ref.float().mean()), float(llm.float().mean())
        level = f"{c.referee_confidence:.0%} lower bound of the"
        denoise = referee_decision(
            b, d, int(ref.numel()), rule=rule, confidence=c.referee_confidence, margin=c.referee_margin
        )
        if rule == "cv":
            relation = ">" if denoise else "<="
            verdict = f"{level} referees' gain {bound:+.3f} {relation} margin {c.referee_margin}"
        else:
            verdict = (f"{level} annotator's gain {llm_bound:+.3f} {'<=' if denoise else '>'} margin "
                       f"{c.referee_margin}")
        return {
            **out,
            "referee_cv_acc": ref_acc,
            "llm_shot_acc": llm_held,
            "referee_only_right": b,
            "llm_only_right": d,
            "gain_lower_bound": bound,
            "annotator_gain_lower_bound": llm_bound,
            "p_value": _binomial_upper_tail(b, b + d, 0.5),
            "annotator_p_value": _binomial_upper_tail(d, b + d, 0.5),
            "folds": folds,
            "held_out": int(ref.numel()),
            "denoise": denoise,
            "reason": f"referees {ref_acc:.3f} vs annotator {llm_held:.3f} on {ref.numel()} held-out shots "
            f"({b} referee-only, {d} annotator-only right): {verdict}: "
            f"{'denoise' if denoise else 'raw labels'}",
        }

    def gate(
        self,
        data,
        split: FewShotSplit,
        raw: Expansion | None,
        denoised: Expansion | None,
        referee: dict[str, Any] | None = None,
    ) -> Expansion:
        """Choose between the raw and the denoised expansion (see the module docstring). With both, keep the
        denoised one unless the teachers trained on the raw labels have a higher mean accuracy on the
        validation nodes; with only the raw one because of the shot rule, record why. The decision goes to
        ``diagnostics["denoise_gate"]`` and the raw alternative to ``raw_expansion``.

        Args:
            data: the graph (its labels are read on the validation nodes only).
            split (FewShotSplit): the few-shot split.
            raw (Expansion, optional): teachers on every LLM label.
            denoised (Expansion, optional): teachers on the denoised labels.
            referee (dict, optional): what :meth:`referee_check` decided, recorded with the choice.
        """
        c = self.config
        if denoised is None:
            if raw is None:
                raise ValueError("gate needs the raw or the denoised expansion, got neither")
            if referee is not None:  # the referee check found the referees weaker than the annotator
                raw.diagnostics["denoise_gate"] = {"chosen": "raw", **referee}
                raw.raw_expansion = raw
            elif c.denoise != "none":  # no validation labels and too few shots to check the referees
                reason = (
                    f"{split.shots} < denoise_min_shots = {c.denoise_min_shots} labelled nodes per class"
                    if c.referee_check == "shots"
                    else f"{split.shots} labelled node per class: no shot to hold out for the referee check"
                )
                raw.diagnostics["denoise_gate"] = {
                    "chosen": "raw",
                    "reason": f"{reason} and no validation labels",
                }
                raw.raw_expansion = raw
            return raw
        if raw is None:
            if referee is not None:
                denoised.diagnostics["denoise_gate"] = {"chosen": "denoised", **referee}
            return denoised
        y = visible_labels(data.y, split)
        val_denoised = _mean_accuracy(denoised.teacher_probs, y, split.val_mask)
        val_raw = _mean_accuracy(raw.teacher_probs, y, split.val_mask)
        chosen = denoised if val_denoised >= val_raw else raw
        chosen.diagnostics["denoise_gate"] = {
            "teacher_val_acc_denoised": val_denoised,
            "teacher_val_acc_raw": val_raw,
            "chosen": "denoised" if chosen is denoised else "raw",
        }
        chosen.raw_expansion = raw
        return chosen

    # ------------------------------------------------------------------------------------- stage 1-4
    def expand(
        self,
        data,
        annotator,
        split: FewShotSplit,
        seed: int = 0,
        shot_teachers: tuple[list[nn.Module], Tensor] | None = None,
    ) -> Expansion:
        """Teachers on the shots → :meth:`select` (GNS) → :meth:`annotate` (+ DNS) → :meth:`denoise`
        (+ retrain) → :meth:`gate`.

        ``shot_teachers`` (the ``shot_teachers`` of an earlier :class:`Expansion` on the same split, seed
        and teacher set) skips retraining the shot-trained teachers, so that ablations share them."""
        c = self.config
        x = prepare_features(self.on_device(data).x)
        y = visible_labels(data.y, split)
        shots = torch.where(split.train_mask, y, torch.full_like(y, -1))
        if shot_teachers is None:
            shot_teachers = self.train_teachers(data, x, shots, split.train_mask, split, seed)
        shot_models, shot_probs = shot_teachers

        selected = self.select(split, shot_probs, seed)
        budget = selected.numel()
        mode = self.gate_mode(split, budget)
        ask_shots = (c.denoise == "posterior" and mode != "raw" and budget > 0) or mode == "check"
        answers = self.annotate(annotator, data, split, selected, shot_models, ask_shots=ask_shots)
        llm = answers.labels
        referee = None
        if mode == "check":  # no validation labels: are the referees more reliable than the annotator?
            referee = self.referee_check(data, split, answers.shot_labels, seed)
            mode = "denoised" if referee["denoise"] else "raw"

        raw_labels = shots.clone()
        raw_labels[selected] = llm
        raw_labels[split.train_mask] = y[split.train_mask]  # true labels win on the shots
        diagnostics: dict[str, Any] = {"budget": budget, "pool": int(annotation_pool(split).sum())}
        if budget:
            diagnostics["llm_invalid"] = int((llm < 0).sum())

        raw = denoised = None
        if mode in ("raw", "compare"):  # teachers on every LLM label (the paper's pipeline)
            models, probs = self.train_teachers(data, x, raw_labels, raw_labels >= 0, split, seed + 1)
            raw = Expansion(
                raw_labels, raw_labels >= 0, selected, llm, probs, models, dict(diagnostics), shot_teachers
            )
        if mode in ("denoised", "compare"):
            labels, models, probs = self.denoise(data, split, raw_labels, selected, answers, shot_probs, seed)
            extra = {"denoise_kept": float((labels[selected] >= 0).float().mean())} if budget else {}
            denoised = Expansion(
                labels, labels >= 0, selected, llm, probs, models, {**diagnostics, **extra}, shot_teachers
            )
        return self.gate(data, split, raw, denoised, referee)

    def denoise_once(
        self,
        labels: Tensor,
        selected: Tensor,
        llm: Tensor,
        ranked: Tensor | None,
        probs: Tensor,
        split: FewShotSplit,
        shot_llm: Tensor | None = None,
    ) -> Tensor:
        """One denoising pass over the LLM labels of ``selected`` with the teachers ``probs`` as referees
        (``denoise`` option, see the module docstring); the shots keep their labels.

        Args:
            labels (Tensor): ``[N]`` current expanded labels (true on the shots).
            selected (Tensor): ``[W]`` annotated node ids.
            llm (Tensor): ``[W]`` the annotator's labels of ``selected`` (``-1``: invalid).
            ranked (Tensor, optional): ``[W, R]`` its ranked classes (``"relabel"``).
            probs (Tensor): ``[B, N, C]`` the referees' softmax.
            split (FewShotSplit): the few-shot split.
            shot_llm (Tensor, optional): ``[Q]`` the annotator's labels of the shots (``"posterior"``).

        Returns:
            ``[N]`` labels, ``-1`` where a label was dropped.
        """
        c = self.config
        out = labels.clone()
        if selected.numel() == 0:
            return out
        teacher_top = probs.argmax(-1)[:, selected]  # [B, W]
        mean = probs.mean(0)  # [N, C]
        vote = majority_vote(probs)[selected]  # [W]
        valid = llm >= 0
        if c.denoise in ("drop", "relabel"):
            supported = (teacher_top == llm.view(1, -1)).any(0) & valid
            new = torch.where(supported, llm, torch.full_like(llm, -1))
            if c.denoise == "relabel" and ranked is not None:
                in_list = (ranked == vote.view(-1, 1)).any(1)
                new = torch.where(~supported & in_list, vote, new)
            out[selected] = new
        elif c.denoise == "posterior":
            post = self._llm_posterior(llm, valid, mean[selected], labels, split, shot_llm)
            conf, arg = post.max(1)
            keep = valid & (conf >= c.posterior_threshold)
            out[selected] = torch.where(keep, arg, torch.full_like(arg, -1))
        out[split.train_mask] = labels[split.train_mask]
        return out

    def _llm_posterior(
        self,
        llm: Tensor,
        valid: Tensor,
        prior: Tensor,
        labels: Tensor,
        split: FewShotSplit,
        shot_llm: Tensor | None,
    ) -> Tensor:
        r"""Posterior over the true class of each annotated node, :math:`P(y \mid \ell_i) \propto q_i(y)
        \pi_{y\ell_i}`, ``[W, C]``. The confusion matrix :math:`\pi` is estimated from soft counts: the shots
        (true class, the LLM's answer on them) with weight 1, and each annotated node with its current belief
        over the true class, plus 1 on every cell. The first belief is the teachers' mean softmax
        :math:`q_i`; each of the ``posterior_iterations - 1`` further rounds re-estimates :math:`\pi` from the
        previous posterior (Dawid-Skene EM with the teachers as a fixed prior)."""
        num_classes = prior.size(1)
        idx = valid.nonzero().view(-1)
        base = torch.ones(num_classes, num_classes)
        if shot_llm is not None:
            ok = shot_llm >= 0
            base.index_put_(
                (labels[split.train_index][ok], shot_llm[ok]), torch.ones(int(ok.sum())), accumulate=True
            )
        belief = prior
        post = prior
        for _ in range(self.config.posterior_iterations):
            counts = base.clone()
            counts.index_add_(1, llm[idx], belief[idx].T.contiguous())
            pi = counts / counts.sum(1, keepdim=True)  # P(l | y)
            post = prior * pi[:, llm.clamp(min=0)].T  # [W, C] ∝ q(y) P(l | y)
            post = post / post.sum(1, keepdim=True)
            belief = post
        return post

    # -------------------------------------------------------------------------------------- stage 5
    def _train_student(
        self,
        student: nn.Module,
        data,
        x: Tensor,
        split: FewShotSplit,
        expansion: Expansion,
        chosen_probs: Tensor,
        distill_mask: Tensor,
        config: TrainConfig,
        seed: int,
        reset: bool,
    ) -> None:
        """Train ``student`` on :func:`student_loss_terms` with the chosen teacher's softmax per node."""
        c = self.config
        val_mask = split.val_mask if split.has_validation and config.patience is not None else None
        device = x.device
        chosen_probs, distill_mask = chosen_probs.to(device), distill_mask.to(device)
        labels, label_mask = expansion.labels.to(device), expansion.label_mask.to(device)
        train_node_classifier(
            student,
            x,
            self.on_device(data).edge_index,
            None,
            label_mask,
            extra_loss=lambda logits: student_loss_terms(
                logits,
                chosen_probs,
                labels,
                distill_mask=distill_mask,
                label_mask=label_mask,
                alpha=c.alpha,
                beta=c.beta,
                gamma=c.gamma,
            ),
            val_mask=val_mask,
            val_y=visible_labels(data.y, split),
            config=config,
            seed=seed,
            reset=reset,
        )

    def ngs(
        self,
        student: nn.Module,
        data,
        x: Tensor,
        split: FewShotSplit,
        expansion: Expansion,
        distill_mask: Tensor,
        seed: int = 0,
    ) -> tuple[Tensor, dict[str, Any]]:
        r"""**NGS** (paper Sec. 3.3): ``ngs_rounds`` alternations of (a) sampling a teacher per node of
        ``distill_mask`` from the PPO policy over :func:`ngs_state`, (b) ``student_epochs_per_round`` student
        epochs on those teachers with the policy frozen, (c) one PPO update on the rewards of
        :func:`ngs_rewards` with the student frozen. Trains ``student`` in place (from parameters drawn with
        ``seed``).

        Returns:
            the argmax-policy teacher per node ``[N]`` (0 outside ``distill_mask``) and diagnostics
            (first and last round's mean reward and policy entropy, the mean policy).
        """
        c = self.config
        probs, labels = expansion.teacher_probs, expansion.labels
        b, n, _ = probs.shape
        generator = torch.Generator().manual_seed(seed)
        states = ngs_state(x, data.edge_index, probs, labels=labels, parts=c.ngs_state_parts)
        states = (states - states.mean(0)) / states.std(0).clamp(min=1e-6)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            agent = PPOTeacherSelector(states.size(1), b, hidden=c.ppo_hidden, lr=c.ppo_lr)
            student.reset_parameters()
        nodes = distill_mask.nonzero().view(-1)
        round_cfg = TrainConfig(
            lr=c.train.lr,
            weight_decay=c.train.weight_decay,
            epochs=c.student_epochs_per_round,
            patience=None,
        )
        choice = torch.zeros(n, dtype=torch.long)
        trace = []
        for rnd in tqdm(range(c.ngs_rounds), desc="NGS", disable=not self.progress, leave=False):
            perm = nodes[torch.randperm(nodes.numel(), generator=generator)]  # shuffle D~_L
            actions, old_logp, old_values = agent.act(states[perm], sample=True, generator=generator)
            choice[perm] = actions
            chosen = probs[choice, torch.arange(n)]
            self._train_student(  # agent frozen
                student, data, x, split, expansion, chosen, distill_mask, round_cfg, seed * 1000 + rnd, False
            )
            with torch.no_grad():
                logits = predict(student, x, self.on_device(data).edge_index).cpu()
            rewards = ngs_rewards(logits[perm], probs[actions, perm], labels[perm], eta=c.eta)
            stats = agent.update(states[perm], actions, old_logp, rewards, old_values)  # student frozen
            trace.append({"reward": float(rewards.mean()), "entropy": stats.entropy})
        choice = torch.zeros(n, dtype=torch.long)
        choice[nodes] = agent.act(states[nodes], sample=False)[0]
        policy = agent.probabilities(states[nodes])
        diagnostics = {
            "ngs_trace_first_last": [trace[0], trace[-1]] if trace else [],
            "policy_mean": policy.mean(0).tolist(),
        }
        return choice, diagnostics

    def distill(
        self,
        data,
        expansion: Expansion,
        split: FewShotSplit,
        seed: int = 0,
        teacher_selection: str | None = None,
    ) -> PKDResult:
        """Teacher selection (:meth:`ngs`, or a rule of :func:`rule_teacher_choice`) and student training on
        :func:`student_loss_terms`; a last ``final_epochs`` run with the final choice (model selection on the
        validation nodes when the split has them). Inference uses the student only.

        Args:
            data: the graph.
            expansion (Expansion): what :meth:`expand` produced.
            split (FewShotSplit): the few-shot split.
            seed (int, optional): seeds the student, the policy and the sampling. (default: ``0``)
            teacher_selection (str, optional): overrides ``config.teacher_selection``.
        """
        c = self.config
        rule = teacher_selection or c.teacher_selection
        if rule not in TEACHER_SELECTIONS:
            raise ValueError(f"unknown teacher_selection {rule!r}; valid: {', '.join(TEACHER_SELECTIONS)}")
        x = prepare_features(self.on_device(data).x)
        probs = expansion.teacher_probs
        b, n, _ = probs.shape
        distill_mask = (
            torch.ones(n, dtype=torch.bool) if c.distill_on == "all" else expansion.label_mask.clone()
        )
        student = build_model(c.student, data.num_features, c.hidden, len(data.class_names)).to(c.device)
        diagnostics: dict[str, Any] = {"teacher_selection": rule}
        if rule == "ngs":
            choice, ngs_diagnostics = self.ngs(student, data, x, split, expansion, distill_mask, seed)
            diagnostics.update(ngs_diagnostics)
            reset = c.ngs_rounds == 0
        else:
            choice = rule_teacher_choice(probs, rule, generator=torch.Generator().manual_seed(seed))
            reset = True
        final_cfg = replace(c.train, epochs=c.final_epochs)
        chosen = probs[choice, torch.arange(n)]
        self._train_student(
            student, data, x, split, expansion, chosen, distill_mask, final_cfg, seed * 1000 + 999, reset
        )
        logits = predict(student, x, self.on_device(data).edge_index).cpu()
        diagnostics["choice_counts"] = torch.bincount(choice[distill_mask], minlength=b).tolist()
        return PKDResult(student, logits, expansion, choice, diagnostics)

    def fit(self, data, annotator, split: FewShotSplit, seed: int = 0) -> PKDResult:
        """The whole pipeline on one split: :meth:`expand` then :meth:`distill`; returns the trained
        student and its logits. Reads no label beyond the shots and the validation nodes
        (:func:`visible_labels`); :meth:`evaluate` measures the result on the test set."""
        return self.distill(data, self.expand(data, annotator, split, seed), split, seed)

    # -------------------------------------------------------------------------------- evaluation
    def evaluate_expansion(
        self, data, split: FewShotSplit, expansion: Expansion, *, annotator=None, seed: int = 0
    ) -> dict[str, Any]:
        """Measure an expansion against the true labels (outside the fit, which never sees them).

        Keys: ``llm_acc_selected`` (the annotator's accuracy on the selected nodes, an invalid answer
        counting as wrong), ``expanded_label_acc`` (accuracy of the kept labels on the selected nodes; also
        as ``denoise_label_acc`` for a denoised expansion), ``teacher_test_acc_shots`` and
        ``teacher_test_acc`` (each teacher's test accuracy before and after the expansion), ``teacher_oracle``
        (:func:`~graphspike_kd.graph.selectors.teacher_oracle` of the final teachers on the test nodes: the
        oracle selector's accuracy, the best teacher's, their gap and the teachers' pairwise agreement). With
        ``annotator``, also ``llm_acc_random``: its accuracy on ``W`` pool nodes drawn at random (seeded by
        ``seed``), asked without DNS context. That costs up to ``W`` extra annotator calls, hence opt-in.

        Args:
            data: the graph, with its true labels ``y``.
            split (FewShotSplit): the split the expansion was made on.
            expansion (Expansion): what :meth:`expand` returned.
            annotator (optional): the annotator, for ``llm_acc_random``. (default: ``None``, not measured)
            seed (int, optional): the seed the expansion was made with. (default: ``0``)
        """
        y, names = data.y, self.config.teachers
        selected, llm, budget = expansion.selected, expansion.llm_labels, expansion.selected.numel()
        out: dict[str, Any] = {}
        if expansion.shot_teachers is not None:
            out["teacher_test_acc_shots"] = _teacher_acc(
                expansion.shot_teachers[1], y, split.test_mask, names
            )
        if budget:
            out["llm_acc_selected"] = float((llm == y[selected]).float().mean())
            if annotator is not None:
                cand = annotation_pool(split).nonzero().view(-1)
                order = torch.randperm(cand.numel(), generator=torch.Generator().manual_seed(seed + 7919))
                out["llm_acc_random"] = float(annotator.annotate(cand[order[:budget]].numpy()).accuracy(y))
            kept = expansion.labels[selected] >= 0
            out["expanded_label_acc"] = (
                float((expansion.labels[selected][kept] == y[selected][kept]).float().mean())
                if bool(kept.any())
                else float("nan")
            )
            if "denoise_kept" in expansion.diagnostics:
                out["denoise_label_acc"] = out["expanded_label_acc"]
        out["teacher_test_acc"] = _teacher_acc(expansion.teacher_probs, y, split.test_mask, names)
        out["teacher_oracle"] = teacher_oracle(expansion.teacher_probs, y, split.test_mask, names)
        return out

    def evaluate(
        self, data, split: FewShotSplit, result: PKDResult, *, annotator=None, seed: int = 0
    ) -> dict[str, Any]:
        """Measure a fit against the true labels (outside the fit, which never sees them).

        Keys: ``test_acc`` (the student's accuracy on the test nodes), ``chosen_teacher_test_acc`` (accuracy
        of the teacher chosen per node, on the test nodes; ``None`` without test nodes) and ``expansion``
        (:meth:`evaluate_expansion` of ``result.expansion``, with ``annotator`` and ``seed``).

        Args:
            data: the graph, with its true labels ``y``.
            split (FewShotSplit): the split the result was fitted on.
            result (PKDResult): what :meth:`fit` or :meth:`distill` returned.
            annotator (optional): passed to :meth:`evaluate_expansion`. (default: ``None``)
            seed (int, optional): the seed of the fit. (default: ``0``)
        """
        y, n = data.y, data.y.numel()
        chosen_right = (
            result.expansion.teacher_probs[result.teacher_choice, torch.arange(n)].argmax(-1) == y
        )[split.test_mask]
        return {
            "test_acc": accuracy(result.logits, y, split.test_mask),
            "chosen_teacher_test_acc": float(chosen_right.float().mean()) if chosen_right.numel() else None,
            "expansion": self.evaluate_expansion(
                data, split, result.expansion, annotator=annotator, seed=seed
            ),
        }


# ------------------------------------------------------------------------------------------- helpers
def _binomial_upper_tail(k: int, n: int, p: float) -> float:
    """:math:`P(X \\ge k)` for :math:`X \\sim \\mathrm{Bin}(n, p)`, exactly (1 when ``k <= 0``)."""
    if k <= 0:
        return 1.0
    return float(sum(math.comb(n, j) * p**j * (1.0 - p) ** (n - j) for j in range(k, n + 1)))


def paired_gain_lower_bound(wins: int, losses: int, total: int, confidence: float = 0.9) -> float:
    r"""One-sided lower confidence bound of the accuracy gain of a method A over a method B judged on the
    same ``total`` items, from the discordant pairs only: ``wins`` items only A gets right, ``losses`` items
    only B gets right.

    The gain is :math:`\Delta = P(A\,\text{only}) - P(B\,\text{only}) = \pi_d\,(2\theta - 1)` with
    :math:`\pi_d` the discordance rate and :math:`\theta` the chance that a discordant pair goes to A.
    Conditionally on the :math:`n_d` = ``wins + losses`` discordant pairs, ``wins`` is
    :math:`\mathrm{Bin}(n_d, \theta)` whatever the concordant pairs do (McNemar, "Note on the sampling
    error of the difference between correlated proportions or percentages", Psychometrika 1947). The
    exact Clopper–Pearson lower bound (Clopper & Pearson, "The use of confidence or fiducial limits
    illustrated in the case of the binomial", Biometrika 1934) of :math:`\theta` at level
    :math:`\gamma` is

    .. math::
        \theta_L = \inf\{\theta : P(\mathrm{Bin}(n_d, \theta) \ge w) > 1 - \gamma\}
                  = \mathrm{Beta}^{-1}(1 - \gamma;\ w,\ n_d - w + 1)\quad(\theta_L = 0 \text{ if } w = 0),

    and the bound is :math:`\Delta_L = \frac{n_d}{\text{total}}\,(2\theta_L - 1)`, the observed
    discordance rate standing in for :math:`\pi_d` (the inference is conditional on it). Its sign is
    exact: :math:`\Delta_L > 0` iff the exact one-sided McNemar test rejects :math:`\theta \le 1/2` at
    level :math:`1 - \gamma`. The exact test is chosen over the Wald/Wilson bounds of the two accuracies
    because the two verdicts are made on the same items (paired, so only the discordant pairs carry
    information) and the counts are tiny (a dozen held-out shots), where the normal approximation fails.

    Args:
        wins (int): items only method A gets right.
        losses (int): items only method B gets right.
        total (int): items judged, at least ``wins + losses``.
        confidence (float, optional): one-sided level :math:`\gamma \in (0, 1)`. (default: ``0.9``)

    Returns:
        float: :math:`\Delta_L \in [-1, 1]`; ``0`` when no pair is discordant (no evidence either way).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if min(wins, losses) < 0 or total < wins + losses:
        raise ValueError(f"need 0 <= wins, losses and wins + losses <= total; got {wins}, {losses}, {total}")
    n = wins + losses
    if n == 0:
        return 0.0
    alpha = 1.0 - confidence
    if wins == 0:
        theta = 0.0
    elif wins == n:
        theta = alpha ** (1.0 / n)  # P(Bin(n, t) >= n) = t^n
    else:
        lo, hi = 0.0, 1.0  # P(Bin(n, t) >= wins) increases with t: bisect for where it equals alpha
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _binomial_upper_tail(wins, n, mid) < alpha else (lo, mid)
        theta = 0.5 * (lo + hi)
    return n / total * (2.0 * theta - 1.0)


def referee_decision(
    referee_only_right: int,
    llm_only_right: int,
    held_out: int,
    *,
    rule: str = "veto",
    confidence: float = 0.9,
    margin: float = 0.0,
) -> bool:
    r"""The decision of :meth:`PKD.referee_check` from its paired counts: whether to denoise.

    With :math:`b` = ``referee_only_right`` and :math:`c` = ``llm_only_right`` held-out shots out of
    ``held_out``:

    - ``rule="veto"``: denoise unless :func:`paired_gain_lower_bound`\ :math:`(c, b)` (the annotator's
      gain over the referees) exceeds ``margin``;
    - ``rule="cv"``: denoise only when :func:`paired_gain_lower_bound`\ :math:`(b, c)` (the referees'
      gain) exceeds ``margin``.

    With margin 0 these are exact one-sided McNemar tests at level ``1 - confidence``; with no discordant
    pair ``"veto"`` denoises and ``"cv"`` does not.

    Example:
        >>> referee_decision(1, 9, 35)  # annotator-only right on 9 shots of 10 discordant: p = 0.011
        False
        >>> referee_decision(3, 6, 35), referee_decision(3, 6, 35, rule="cv")
        (True, False)
    """
    if rule == "veto":
        return paired_gain_lower_bound(llm_only_right, referee_only_right, held_out, confidence) <= margin
    if rule == "cv":
        return paired_gain_lower_bound(referee_only_right, llm_only_right, held_out, confidence) > margin
    raise ValueError(f"unknown rule {rule!r}; valid: veto, cv")


def _mean_accuracy(probs: Tensor, y: Tensor, mask: Tensor) -> float:
    """Accuracy on ``mask`` averaged over the ``B`` teachers of ``probs`` ``[B, N, C]``."""
    return float((probs.argmax(-1)[:, mask] == y[mask].view(1, -1)).float().mean())


def _teacher_acc(probs: Tensor, y: Tensor, mask: Tensor, names: Sequence[str]) -> dict[str, float]:
    if not bool(mask.any()):
        return {}
    return {
        name: float((probs[b].argmax(-1)[mask] == y[mask]).float().mean()) for b, name in enumerate(names)
    }


def _attach_dns(annotator, models: list[nn.Module], data, x: Tensor, selected: Tensor, k: int):
    """Give an annotator that takes neighbour context (``neighbours`` attribute: the text backends) the DNS
    neighbours of the selected nodes, computed in the shot-trained teachers' embedding spaces; returns a
    function that restores the annotator's previous setting. Annotators without that option are untouched."""
    if not hasattr(annotator, "neighbours") or selected.numel() == 0:
        return None
    with torch.no_grad():
        embeddings = []
        for m in models:
            m.eval()
            embeddings.append(m.embed(x, data.edge_index))
    neighbours = dns_neighbours(embeddings, selected, k=k)
    previous = annotator.neighbours
    annotator.neighbours = neighbours

    def restore() -> None:
        annotator.neighbours = previous

    return restore


def summarise(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return (
        {"mean": float(arr.mean()), "std": float(arr.std())}
        if arr.size
        else {"mean": math.nan, "std": math.nan}
    )
