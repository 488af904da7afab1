"""Few-shot node classification with LLM annotations: PKD (:class:`graphspike_kd.graph.pkd.PKD`, Wei et al.,
NeurIPS 2025, arXiv:2510.10116), its ablations, and the baselines it is measured against, on the shipped
text-attributed graphs.

    python -m graphspike_kd.benchmarks.pkd --dataset cora [--shots 5] [--seeds 0 1 2 3 4]
        [--protocol paper|strict] [--annotator cached|embedding|hf|openai|oracle] [--budget N]
        [--pkd-rows ROW ...] [--pkd-budget W] [--root DATA_DIR] [--cache-dir CACHE_DIR]
        [--output FILE.json]

For each seed it draws a few-shot split (:mod:`graphspike_kd.graph.splits`), then reports test accuracy of
the baselines

``gcn_fewshot``            GCN trained on the ``k`` shots per class only.
``llm_only``               the annotator's answer on every test node (an invalid answer counts as wrong).
``gcn_llm_labels``         LLM-GNN style: GCN on the shots plus the annotator's labels of ``budget`` nodes
                           drawn at random (seeded) from the unlabelled pool; true labels win on the shots,
                           invalid answers are dropped.
``teacher_<name>``         each teacher (default GCN, GAT, APPNP, H2GCN) trained on that same label set;
                           ``teacher_gcn`` is the same model as ``gcn_llm_labels``.
``teacher_majority_vote``  per-node majority of the teachers' predictions (ties: highest mean probability).
``best_teacher``           the teacher with the best validation accuracy (``paper`` protocol), or, with no
                           labelled validation set (``strict``), the teacher that agrees most with the
                           majority vote on the non-shot nodes (label-free selection).

and of PKD (teachers and student by dataset, see :func:`~graphspike_kd.graph.pkd.default_models`) with its
ablations (``--pkd-rows``):

``pkd``                    GNS (``--pkd-budget``, default 48 % of all nodes) + denoising + NGS + student.
``pkd_random_teacher``     the same expanded set and teachers, one teacher drawn at random per node.
``pkd_majority_teacher``   ... a teacher that agrees with the teachers' majority vote.
``pkd_confident_teacher``  ... the teacher with the lowest-entropy prediction.
``pkd_random_nodes``       GNS replaced by random selection of the same number of pool nodes (identical to
                           ``pkd`` when the budget is the whole pool, as under the paper protocol at 48 %).
``pkd_no_denoise``         every LLM label kept (the paper's pipeline without denoising).
``pkd_oracle_teacher``     a diagnostic, not a method: the accuracy of the oracle teacher selector (per test
                           node, a teacher that is right if any is) over PKD's final teachers, the upper
                           bound of every teacher selector; read from the test labels after the fit
                           (``per_seed[i].pkd.expansion.teacher_oracle`` also holds each teacher's
                           accuracy, the gap to the best teacher and the pairwise agreement).

PKD's fit never reads a test label; its test-label diagnostics (``per_seed[i].pkd``) come from
:meth:`~graphspike_kd.graph.pkd.PKD.evaluate_expansion` and :meth:`~graphspike_kd.graph.pkd.PKD.evaluate`
after it. ``--pkd-llm-acc-random`` adds the annotator's accuracy on ``W`` random pool nodes
(``llm_acc_random``), which costs up to ``W`` extra annotator calls per expansion.

``--output`` is checked before any work: a path that cannot be written fails at once. Accuracies are
fractions in [0, 1]; ``std`` is the population standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from graphspike_kd._cache import CACHE_ENV
from graphspike_kd.benchmarks import provenance
from graphspike_kd.graph.datasets import available_datasets, load_tag_dataset
from graphspike_kd.graph.models import build_model
from graphspike_kd.graph.pkd import DENOISE, PKD, REFEREE_CHECKS, PKDConfig, default_models
from graphspike_kd.graph.selectors import majority_vote
from graphspike_kd.graph.splits import PROTOCOLS, few_shot_split
from graphspike_kd.graph.training import TrainConfig, accuracy, predict, train_node_classifier

DEFAULT_TEACHERS = ("gcn", "gat", "appnp", "h2gcn")
PKD_ROWS = ("pkd", "pkd_random_teacher", "pkd_majority_teacher", "pkd_confident_teacher", "pkd_random_nodes",
            "pkd_no_denoise")


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here, or ``None``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        return f"not a device ({exc})"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"only {torch.cuda.device_count()} CUDA device(s) here"
    elif dev.type != "cpu":
        return f"unsupported device type {dev.type!r} (cpu or cuda)"
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m graphspike_kd.benchmarks.pkd",
        description="Few-shot node classification with LLM annotations on shipped text-attributed graphs: "
        "PKD and its ablations against GCN on the shots, the LLM alone, GCN on shots + LLM labels, and a "
        "teacher ensemble.",
    )
    p.add_argument("--dataset", default="cora", choices=available_datasets())
    p.add_argument("--shots", type=int, default=5, help="labelled nodes per class (default: 5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument(
        "--protocol",
        default="paper",
        choices=PROTOCOLS,
        help="paper: 32%% validation / 20%% test with true labels; strict: no labels beyond the "
        "shots (Planetoid test set where one exists) (default: paper)",
    )
    p.add_argument(
        "--annotator",
        default=None,
        help="annotator backend (cached, embedding, hf, openai); default: cached where the dataset "
        "ships LLM predictions (Cora), else embedding (MiniLM zero-shot, needs the text extra)",
    )
    p.add_argument(
        "--annotator-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the annotator backend, repeatable (e.g. model=PATH)",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="LLM-annotated nodes per seed (default: 20 x number of classes, capped by the pool)",
    )
    p.add_argument("--teachers", nargs="+", default=list(DEFAULT_TEACHERS))
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--epochs", type=int, default=200, help="max epochs (exact count without validation)")
    p.add_argument("--patience", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--features", default="default", choices=["default", "bow", "tfidf", "minilm"])
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; these graphs are too small for intra-op threads to pay off, and on "
        "a shared machine extra threads only contend (default: 1)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="seeds run in this many processes, each with --threads threads; per-seed results are identical "
        "to a sequential run (default: one per CPU core, up to the number of seeds, for annotators that "
        "need no new queries; 1 for LLM backends, whose answers go to a shared disk cache)",
    )
    p.add_argument("--pkd-rows", nargs="*", default=list(PKD_ROWS), choices=PKD_ROWS,
                   help="PKD rows to run; give the flag alone for none (default: all)")
    p.add_argument("--pkd-budget", type=int, default=None,
                   help="nodes GNS sends to the annotator (default: expand to 48%% of all nodes)")
    p.add_argument("--pkd-denoise", default=PKDConfig.denoise, choices=DENOISE,
                   help=f"denoiser of the LLM labels (default: {PKDConfig.denoise})")
    p.add_argument("--pkd-denoise-gate", default=PKDConfig.denoise_gate, choices=("auto", "off"),
                   help="auto: keep the denoised labels only if their teachers validate at least as well as "
                   "teachers on the raw labels, or, without validation labels, as --pkd-referee-check "
                   f"decides (default: {PKDConfig.denoise_gate})")
    p.add_argument("--pkd-denoise-min-shots", type=int, default=PKDConfig.denoise_min_shots,
                   help="the shot rule of --pkd-referee-check shots "
                   f"(default: {PKDConfig.denoise_min_shots})")
    p.add_argument("--pkd-referee-check", default=PKDConfig.referee_check, choices=REFEREE_CHECKS,
                   help="without validation labels, the shot-trained teachers are cross-validated on the "
                   "shots and compared with the annotator there (exact paired bounds, "
                   "PKDConfig.referee_confidence): veto = denoise unless the annotator is confidently more "
                   "accurate; cv = denoise only when the teachers are confidently more accurate; shots = "
                   "denoise from --pkd-denoise-min-shots shots per class "
                   f"(default: {PKDConfig.referee_check})")
    p.add_argument("--pkd-referee-confidence", type=float, default=PKDConfig.referee_confidence,
                   help="one-sided confidence level of the veto and cv checks' paired bounds, in (0, 1) "
                   f"(default: {PKDConfig.referee_confidence})")
    p.add_argument("--pkd-posterior-threshold", type=float, default=0.5,
                   help="min posterior of a kept label with --pkd-denoise posterior (default: 0.5)")
    p.add_argument("--pkd-posterior-iterations", type=int, default=1,
                   help="EM rounds of the posterior denoiser's confusion matrix (default: 1)")
    p.add_argument("--pkd-self-training", type=int, default=0, metavar="ROUNDS",
                   help="extra denoise -> retrain rounds, retrained teachers as referees (default: 0)")
    p.add_argument("--pkd-teachers", nargs="+", default=None,
                   help="PKD teachers (default: GCN, GAT, APPNP, H2GCN; heterophily set on WebKB)")
    p.add_argument("--pkd-student", default=None, help="PKD student (default: GCN; H2GCN on WebKB)")
    p.add_argument("--pkd-hidden", type=int, default=128)
    p.add_argument("--pkd-ngs-rounds", type=int, default=40, help="student/PPO alternations (paper: 200)")
    p.add_argument("--pkd-llm-acc-random", action="store_true",
                   help="also report the annotator's accuracy on W random pool nodes (llm_acc_random); costs "
                   "up to W extra annotator calls per PKD expansion (default: off)")
    p.add_argument("--root", type=Path, default=None, metavar="DATA_DIR",
                   help="data root holding the dataset folders (cora/, citeseer_tag/, webkb_tag/) (default: "
                   "$GRAPHSPIKE_KD_DATA, then the package data, then the checkout's data/)")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="CACHE_DIR",
                   help="cache root for text embeddings and annotator answers during the run (default: "
                   "$GRAPHSPIKE_KD_CACHE or ~/.cache/graphspike_kd)")
    p.add_argument("--device", default="cpu",
                   help="where models, features and adjacency live: cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--output", type=Path, default=None, help="write the results JSON here (checked first)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    device_problem = _device_problem(args.device)
    if device_problem:
        p.error(f"--device {args.device}: {device_problem}")
    if args.output is not None:
        problem = output_problem(args.output)
        if problem:
            p.error(f"--output {args.output}: {problem}")
    if args.root is not None and not args.root.is_dir():
        p.error(f"--root {args.root}: not a folder")
    if args.cache_dir is not None and args.cache_dir.exists() and not args.cache_dir.is_dir():
        p.error(f"--cache-dir {args.cache_dir}: exists and is not a folder")
    if args.shots < 1:
        p.error(f"--shots must be >= 1, got {args.shots}")
    if args.budget is not None and args.budget < 0:
        p.error(f"--budget must be >= 0, got {args.budget}")
    if args.workers is not None and args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if not 0.0 < args.pkd_referee_confidence < 1.0:
        p.error(f"--pkd-referee-confidence must be in (0, 1), got {args.pkd_referee_confidence}")
    return args


def output_problem(path: Path) -> str | None:
    """Why a results file cannot be written at ``path`` (``None`` if it can): checked before a run so that
    a bad path fails at once instead of after every seed. Creates the missing parent folders."""
    if path.is_dir():
        return "is a folder"
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create its folder {parent} ({exc.strerror or exc})"
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as exc:
        return f"cannot write in {parent} ({exc.strerror or exc})"
    if path.exists() and not os.access(path, os.W_OK):
        return "exists and is not writable"
    return None


@contextlib.contextmanager
def cache_root_set_to(path: Path | None) -> Iterator[None]:
    """Point the library's cache root (``$GRAPHSPIKE_KD_CACHE``: text embeddings, annotator answers) at
    ``path`` for the duration of the block, then restore it; ``None`` leaves it as it is."""
    if path is None:
        yield
        return
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before


def _annotator_options(pairs: list[str]) -> dict[str, object]:
    options: dict[str, object] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--annotator-option expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def run_seed(
    data, annotator, seed: int, args: argparse.Namespace, bar: tqdm | None = None
) -> tuple[dict[str, float], dict]:
    """All baselines for one seed; returns ``(accuracy per method, diagnostics)``. ``bar`` advances by
    one per trained model."""
    split = few_shot_split(
        data.y, args.shots, protocol=args.protocol, seed=seed, planetoid_test_mask=data.test_mask
    )
    val_mask = split.val_mask if split.has_validation else None
    config = TrainConfig(
        lr=args.lr,
        weight_decay=args.weight_decay,
        epochs=args.epochs,
        patience=args.patience if val_mask is not None else None,
    )
    num_classes = len(data.class_names)

    x, edge_index = data.x.to(args.device), data.edge_index.to(args.device)

    def fit(name: str, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        model = build_model(name, data.num_features, args.hidden, num_classes).to(args.device)
        train_node_classifier(
            model,
            x,
            edge_index,
            targets,
            mask,
            val_mask=val_mask,
            val_y=data.y,
            config=config,
            seed=seed,
        )
        if bar is not None:
            bar.set_postfix_str(f"seed {seed}: {name}")
            bar.update(1)
        return predict(model, x, edge_index).cpu()

    results: dict[str, float] = {}
    shots_only = torch.where(split.train_mask, data.y, torch.full_like(data.y, -1))
    results["gcn_fewshot"] = accuracy(fit("gcn", shots_only, split.train_mask), data.y, split.test_mask)

    test_ann = annotator.annotate(split.test_index.numpy())
    results["llm_only"] = test_ann.accuracy(data.y)

    pool = split.pool_index
    generator = torch.Generator().manual_seed(seed)
    budget = args.budget if args.budget is not None else 20 * num_classes
    budget = min(budget, pool.numel())
    chosen = pool[torch.randperm(pool.numel(), generator=generator)[:budget]]
    ann = annotator.annotate(chosen.numpy()) if budget else None
    targets = shots_only.clone()
    if ann is not None:
        llm_labels = torch.from_numpy(ann.labels.copy())
        targets[chosen] = torch.where(split.train_mask[chosen], data.y[chosen], llm_labels)
    label_mask = split.train_mask.clone()
    label_mask[chosen] = True
    label_mask &= targets >= 0

    probs, val_accs = [], {}
    for name in args.teachers:
        logits = fit(name, targets, label_mask)
        results[f"teacher_{name}"] = accuracy(logits, data.y, split.test_mask)
        if val_mask is not None:
            val_accs[name] = accuracy(logits, data.y, val_mask)
        probs.append(logits.softmax(-1))
    if "gcn" in args.teachers:
        results["gcn_llm_labels"] = results["teacher_gcn"]
    else:
        results["gcn_llm_labels"] = accuracy(fit("gcn", targets, label_mask), data.y, split.test_mask)
    stacked = torch.stack(probs)
    vote = majority_vote(stacked)
    results["teacher_majority_vote"] = float(
        (vote[split.test_mask] == data.y[split.test_mask]).float().mean()
    )
    if val_mask is not None:
        best = max(args.teachers, key=lambda t: val_accs[t])
    else:
        unlabeled = ~split.train_mask
        agreement = {
            t: float((p.argmax(-1)[unlabeled] == vote[unlabeled]).float().mean())
            for t, p in zip(args.teachers, probs, strict=True)
        }
        best = max(args.teachers, key=lambda t: agreement[t])
    results["best_teacher"] = results[f"teacher_{best}"]

    diagnostics = {
        "seed": seed,
        "best_teacher": best,
        "budget": int(budget),
        "annotated_label_accuracy": ann.accuracy(data.y) if ann is not None else None,
        "annotated_invalid": ann.n_invalid if ann is not None else 0,
        "test_invalid": test_ann.n_invalid,
        "train_nodes": int(split.train_mask.sum()),
        "val_nodes": int(split.val_mask.sum()),
        "test_nodes": int(split.test_mask.sum()),
        "pool_nodes": int(split.pool_mask.sum()),
    }
    if args.pkd_rows:
        pkd_results, diagnostics["pkd"] = run_pkd(data, annotator, split, seed, args, config)
        results.update(pkd_results)
    return results, diagnostics


def run_pkd(data, annotator, split, seed: int, args: argparse.Namespace, train: TrainConfig
            ) -> tuple[dict[str, float], dict]:
    """The PKD rows for one split; ablations share the GNS expansion where they can."""
    teachers, student = default_models(data.name)
    config = PKDConfig(
        teachers=tuple(args.pkd_teachers or teachers), student=args.pkd_student or student,
        hidden=args.pkd_hidden, train=train, budget_count=args.pkd_budget, denoise=args.pkd_denoise,
        denoise_gate=args.pkd_denoise_gate, denoise_min_shots=args.pkd_denoise_min_shots,
        referee_check=args.pkd_referee_check,
        referee_confidence=args.pkd_referee_confidence,
        posterior_threshold=args.pkd_posterior_threshold,
        posterior_iterations=args.pkd_posterior_iterations, self_training_rounds=args.pkd_self_training,
        ngs_rounds=args.pkd_ngs_rounds, final_epochs=args.epochs, device=args.device)
    results: dict[str, float] = {}
    diagnostics: dict[str, object] = {}
    rules = {"pkd": "ngs", "pkd_random_teacher": "random", "pkd_majority_teacher": "majority",
             "pkd_confident_teacher": "confident"}
    llm_random = annotator if args.pkd_llm_acc_random else None  # opt-in: extra annotator calls

    def measured(pkd: PKD, expansion) -> dict:  # label-free diagnostics + the test-label measurements
        return {**expansion.diagnostics,
                **pkd.evaluate_expansion(data, split, expansion, annotator=llm_random, seed=seed)}

    def distilled(pkd: PKD, expansion, rule: str | None = None):
        out = pkd.distill(data, expansion, split, seed, teacher_selection=rule)
        chosen = pkd.evaluate(data, split, out)["chosen_teacher_test_acc"]
        return out, {**out.diagnostics, "chosen_teacher_test_acc": chosen}

    pkd = PKD(config)
    expansion = None
    if any(r in args.pkd_rows for r in (*rules, "pkd_random_nodes")):
        expansion = pkd.expand(data, annotator, split, seed)
        diagnostics["expansion"] = measured(pkd, expansion)
        results["pkd_oracle_teacher"] = diagnostics["expansion"]["teacher_oracle"]["oracle_acc"]
    for row, rule in rules.items():
        if row in args.pkd_rows:
            out, diagnostics[row] = distilled(pkd, expansion, rule)
            results[row] = accuracy(out.logits, data.y, split.test_mask)
    if "pkd_random_nodes" in args.pkd_rows:
        if expansion.selected.numel() == expansion.diagnostics["pool"]:
            results["pkd_random_nodes"] = results["pkd"] if "pkd" in results else accuracy(
                pkd.distill(data, expansion, split, seed).logits, data.y, split.test_mask)
            diagnostics["pkd_random_nodes"] = "budget = whole pool: random selection picks the same set"
        else:
            random_pkd = PKD(replace(config, node_selection="random"))
            shared = expansion.shot_teachers
            random_exp = random_pkd.expand(data, annotator, split, seed, shot_teachers=shared)
            out = random_pkd.distill(data, random_exp, split, seed)
            results["pkd_random_nodes"] = accuracy(out.logits, data.y, split.test_mask)
            diagnostics["pkd_random_nodes"] = measured(random_pkd, out.expansion)
    if "pkd_no_denoise" in args.pkd_rows:
        plain = PKD(replace(config, denoise="none"))
        plain_exp = expansion.raw_expansion if expansion is not None else None  # trained by the denoise gate
        if plain_exp is None:
            shared = expansion.shot_teachers if expansion is not None else None
            plain_exp = plain.expand(data, annotator, split, seed, shot_teachers=shared)
        out = plain.distill(data, plain_exp, split, seed)
        results["pkd_no_denoise"] = accuracy(out.logits, data.y, split.test_mask)
        diagnostics["pkd_no_denoise"] = measured(plain, out.expansion)
    return results, diagnostics


def _parallel_safe(annotator) -> bool:
    """True when worker processes can share ``annotator``: it keeps answers in memory only (workers' copies
    diverge harmlessly), or it is the embedding backend, which :func:`run_seeds` warms on every node first so
    that no worker writes its disk cache."""
    return getattr(annotator.cache, "path", None) is None or annotator.backend == "embedding"


def resolve_workers(requested: int | None, annotator, num_seeds: int) -> int:
    """Number of worker processes for the seeds (see ``--workers``); raises ``SystemExit`` with the reason
    when ``requested > 1`` is not possible."""
    fork = "fork" in multiprocessing.get_all_start_methods()
    if requested is None:
        if not fork or not _parallel_safe(annotator):
            return 1
        return max(1, min(num_seeds, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1))
    if requested > 1 and not fork:
        raise SystemExit("--workers > 1 needs the 'fork' start method (Linux, macOS); use --workers 1")
    if requested > 1 and not _parallel_safe(annotator):
        raise SystemExit(
            f"--workers > 1 with the {annotator.backend!r} annotator: its answers go to a disk cache that "
            "parallel workers would write at once; use --workers 1"
        )
    return min(requested, num_seeds)


_WORKER_STATE: tuple | None = None  # (data, annotator, args), inherited by forked workers


def _seed_job(seed: int) -> tuple[dict[str, float], dict]:
    assert _WORKER_STATE is not None
    data, annotator, args = _WORKER_STATE
    torch.set_num_threads(args.threads)
    return run_seed(data, annotator, seed, args)


def run_seeds(
    data, annotator, args: argparse.Namespace, workers: int = 1
) -> list[tuple[dict[str, float], dict]]:
    """:func:`run_seed` for every seed of ``args.seeds``, in order; with ``workers > 1`` the seeds run in
    forked processes. Every seed seeds its own generators, so its results do not depend on ``workers``."""
    per_seed = 1 + len(args.teachers) + ("gcn" not in args.teachers)
    bar = tqdm(total=len(args.seeds) * per_seed, desc=f"{args.dataset} models trained", disable=args.quiet)
    if workers == 1:
        out = [run_seed(data, annotator, seed, args, bar) for seed in args.seeds]
        bar.close()
        return out
    if getattr(annotator.cache, "path", None) is not None:  # embedding backend: answer every node now
        annotator.annotate(np.arange(data.num_nodes))
    global _WORKER_STATE
    _WORKER_STATE = (data, annotator, args)
    results: dict[int, tuple[dict[str, float], dict]] = {}
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_seed_job, seed): i for i, seed in enumerate(args.seeds)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.set_postfix_str(f"seed {args.seeds[futures[future]]} done")
                bar.update(per_seed)
    finally:
        _WORKER_STATE = None
        bar.close()
    return [results[i] for i in range(len(args.seeds))]


METHOD_ORDER = ("gcn_fewshot", "llm_only", "gcn_llm_labels", "teacher_majority_vote", "best_teacher",
                *PKD_ROWS, "pkd_oracle_teacher")


def format_table(payload: dict) -> str:
    methods = payload["methods"]
    names = [m for m in METHOD_ORDER if m in methods] + sorted(m for m in methods if m not in METHOD_ORDER)
    width = max(len(n) for n in names) + 2
    head = f"{'method':<{width}}{'accuracy (%)':>16}   per seed ({', '.join(map(str, payload['seeds']))})"
    lines = [
        f"{payload['dataset']} | {payload['shots']} shots | protocol {payload['protocol']} | "
        f"annotator {payload['annotator']} ({payload['llm_model']})",
        head,
        "-" * len(head),
    ]
    for name in names:
        m = methods[name]
        per_seed = " ".join(f"{100 * a:5.1f}" for a in m["acc"])
        lines.append(f"{name:<{width}}{100 * m['mean']:>9.2f} ± {100 * m['std']:<5.2f}   {per_seed}")
    lines.append(f"wall time {payload['wall_time_s']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (arguments as on the command line); prints the table, writes ``--output`` and
    returns the results payload."""
    args = parse_args(argv)  # validates the output path before any work
    started = provenance.now()
    with cache_root_set_to(args.cache_dir):
        payload = _run(args, argv)
    print(format_table(payload))
    if args.output is not None:
        payload = provenance.write_json(args.output, payload, command=payload["command"], started=started)
    return payload


def _run(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """Load the dataset and the annotator, run every seed and collect the payload."""
    torch.set_num_threads(args.threads)
    from graphspike_kd.graph.annotators import get_annotator

    start = time.perf_counter()
    data = load_tag_dataset(args.dataset, args.root, features=args.features, show_progress=not args.quiet)
    annotator_name = args.annotator or ("cached" if data.llm_predictions is not None else "embedding")
    options = _annotator_options(args.annotator_option)
    if annotator_name != "cached":
        options.setdefault("progress", not args.quiet)
    annotator = get_annotator(annotator_name, dataset=data, **options)
    model_name = getattr(annotator, "model_name", None) or data.llm_model or annotator_name

    per_method: dict[str, list[float]] = {}
    diagnostics = []
    workers = resolve_workers(args.workers, annotator, len(args.seeds))
    for results, diag in run_seeds(data, annotator, args, workers):
        for name, acc in results.items():
            per_method.setdefault(name, []).append(acc)
        diagnostics.append(diag)

    return {
        "dataset": args.dataset,
        "shots": args.shots,
        "protocol": args.protocol,
        "seeds": list(args.seeds),
        "methods": {
            name: {"acc": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs))}
            for name, accs in per_method.items()
        },
        "wall_time_s": time.perf_counter() - start,
        "workers": workers,
        "threads": args.threads,
        "annotator": annotator_name,
        "llm_model": str(model_name),
        "teachers": list(args.teachers),
        "features": args.features,
        "num_nodes": int(data.num_nodes),
        "per_seed": diagnostics,
        "command": "python -m graphspike_kd.benchmarks.pkd "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
    }


if __name__ == "__main__":
    main()
