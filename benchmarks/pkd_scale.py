r"""PKD at scale: time per stage, peak memory and accuracy on synthetic citation-like graphs of growing size.

    python benchmarks/pkd_scale.py --nodes 2708 30000 --threads 2      # one subprocess per size
    python benchmarks/pkd_scale.py --nodes 169343 --threads 2           # merges into the same JSON
    python benchmarks/pkd_scale.py --plot-only                          # redraw the PNG from the JSON

Each size runs in its own Python process (so its peak RSS is its own) with one seed, the default
:class:`~graphspike_kd.graph.pkd.PKDConfig`, the ``"paper"`` split protocol with 5 shots per class and the
noisy oracle annotator (accuracy 0.7, uniform confusion). Results go to ``benchmarks/results/pkd_scale.json``
(one record per size, replaced on a rerun of that size) and the plot of stage time against :math:`N` to
``benchmarks/results/pkd_scale.png``.

**The graph recipe** (:func:`citation_graph`), a degree-corrected stochastic block model (Karrer & Newman,
"Stochastic blockmodels and community structure in networks", Phys. Rev. E 83, 2011) with citation-like
statistics:

1. class sizes :math:`\pi_c \propto c^{-1/2}` (a mild long tail, as in ogbn-arxiv's 40 subject areas);
2. node propensities :math:`\theta_i` from a Pareto law with tail index 2.5 (heavy-tailed degrees),
   capped at :math:`\sqrt{N}` times their mean;
3. :math:`m = \bar d N` directed draws: source :math:`i \propto \theta_i`; with probability :math:`h`
   (``homophily``) the target is drawn :math:`\propto \theta` within the source's class, otherwise
   :math:`\propto \theta` over the whole graph; then the edges are symmetrised, self loops and duplicates
   removed. The expected edge homophily is :math:`h + (1-h)\sum_c \pi_c^2`;
4. features, either ``"bow"``: a sparse bag of words, ``words`` tokens per node over a vocabulary of
   ``vocab`` terms; each token comes with probability ``topic_weight`` from the node's class topic (a
   random set of ``vocab / 20`` terms, Zipf-weighted) and otherwise from a Zipf background over the whole
   vocabulary; binary CSR, like Cora's; or ``"dense"``: 128-d Gaussian class centroids (unit scale) plus
   isotropic noise, dense like ogbn-arxiv's averaged skip-gram vectors.

Stages (seconds, wall clock): ``teachers_shots`` (the teachers on the shots), ``select`` (GNS), ``dns``
(neighbour search, inside ``annotate``), ``annotate``, ``denoise`` (the label vetting passes),
``teachers_expanded`` (every teacher trained on expanded labels: raw and denoised when the gate compares
them), ``ngs`` (PPO rounds with the student), ``student_final`` and ``evaluate``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graphspike_kd.benchmarks import provenance  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_JSON = RESULTS / "pkd_scale.json"
DEFAULT_PNG = RESULTS / "pkd_scale.png"
STAGES = (
    "teachers_shots",
    "select",
    "dns",
    "annotate",
    "denoise",
    "teachers_expanded",
    "ngs",
    "student_final",
    "evaluate",
)


# ------------------------------------------------------------------------------------------ the graph
def citation_graph(
    num_nodes: int,
    num_classes: int,
    *,
    avg_degree: float = 7.0,
    homophily: float = 0.65,
    features: str = "bow",
    vocab: int = 2000,
    words: int = 40,
    topic_weight: float = 0.5,
    seed: int = 0,
):
    """A synthetic text-attributed citation-like graph (the recipe of the module docstring).

    Args:
        num_nodes (int): :math:`N`. num_classes (int): :math:`C`.
        avg_degree (float, optional): directed draws per node before symmetrising. (default: ``7``)
        homophily (float, optional): :math:`h`, the chance a draw stays in the source's class.
            (default: ``0.65``)
        features (str, optional): ``"bow"`` (sparse CSR) or ``"dense"`` (128-d). (default: ``"bow"``)
        vocab (int), words (int), topic_weight (float): the bag-of-words parameters.
            (default: ``2000``, ``40``, ``0.5``)
        seed (int, optional): seeds everything. (default: ``0``)

    Returns:
        a PyG ``Data`` with ``x``, ``edge_index`` (undirected, coalesced), ``y``, ``name`` and
        ``class_names``.
    """
    from torch_geometric.data import Data
    from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

    if features not in ("bow", "dense"):
        raise ValueError(f"unknown features {features!r}; valid: bow, dense")
    rng = np.random.default_rng(seed)
    sizes = 1.0 / np.sqrt(np.arange(1, num_classes + 1))
    y = rng.choice(num_classes, size=num_nodes, p=sizes / sizes.sum())
    theta = rng.pareto(2.5, size=num_nodes) + 1.0
    theta = np.minimum(theta, math.sqrt(num_nodes) * theta.mean())

    order = np.argsort(y, kind="stable")  # nodes grouped by class, for within-class draws
    cls_sorted = y[order]
    starts = np.searchsorted(cls_sorted, np.arange(num_classes + 1))
    cum_in = np.cumsum(theta[order])  # within-class draws: cumulative propensity in class order
    cum_all = np.cumsum(theta)

    m = int(round(avg_degree * num_nodes))
    src = np.searchsorted(cum_all, rng.random(m) * cum_all[-1], side="right")
    same = rng.random(m) < homophily
    dst = np.searchsorted(cum_all, rng.random(m) * cum_all[-1], side="right")
    c = y[src[same]]
    lo = np.where(starts[c] > 0, cum_in[np.maximum(starts[c] - 1, 0)], 0.0)
    hi = cum_in[starts[c + 1] - 1]
    pos = np.searchsorted(cum_in, lo + rng.random(c.size) * (hi - lo), side="right")
    dst[same] = order[np.minimum(pos, starts[c + 1] - 1)]
    edge_index = torch.from_numpy(np.stack([src, dst])).long()
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = coalesce(to_undirected(edge_index, num_nodes=num_nodes), num_nodes=num_nodes)

    if features == "bow":
        zipf = 1.0 / np.arange(1, vocab + 1)
        background = zipf / zipf.sum()
        topic_size = max(vocab // 20, 1)
        topics = np.stack([rng.choice(vocab, size=topic_size, replace=False) for _ in range(num_classes)])
        topic_p = zipf[:topic_size] / zipf[:topic_size].sum()
        from_topic = rng.random((num_nodes, words)) < topic_weight
        tokens = rng.choice(vocab, size=(num_nodes, words), p=background)
        picks = rng.choice(topic_size, size=(num_nodes, words), p=topic_p)
        tokens = np.where(from_topic, topics[y][np.arange(num_nodes)[:, None], picks], tokens)
        rows = np.repeat(np.arange(num_nodes), words)
        key = np.unique(rows.astype(np.int64) * vocab + tokens.reshape(-1))  # binary, sorted per row
        r, col = key // vocab, key % vocab
        crow = np.zeros(num_nodes + 1, dtype=np.int64)
        crow[1:] = np.cumsum(np.bincount(r, minlength=num_nodes))
        x = torch.sparse_csr_tensor(
            torch.from_numpy(crow), torch.from_numpy(col), torch.ones(key.size), (num_nodes, vocab)
        )
    else:
        centroids = rng.standard_normal((num_classes, 128)).astype(np.float32)
        x = torch.from_numpy(centroids[y] + 2.0 * rng.standard_normal((num_nodes, 128)).astype(np.float32))
    data = Data(x=x, edge_index=edge_index, y=torch.from_numpy(y).long(), num_nodes=num_nodes)
    data.name = f"synthetic_citation_{num_nodes}"
    data.class_names = [f"class {i}" for i in range(num_classes)]
    return data


def edge_homophily(data) -> float:
    src, dst = data.edge_index
    return float((data.y[src] == data.y[dst]).float().mean())


# ----------------------------------------------------------------------------------------- one size
class StageTimer:
    """Wall-clock seconds per stage, gathered by wrapping the named steps of one :class:`PKD` instance."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.teacher_calls = 0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def wrap(self, pkd) -> None:
        import graphspike_kd.graph.pkd as pkd_module

        def timed(name, fn, stage_of):
            def inner(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.add(stage_of(), time.perf_counter() - start)

            return inner

        def teacher_stage() -> str:
            self.teacher_calls += 1
            return "teachers_shots" if self.teacher_calls == 1 else "teachers_expanded"

        pkd.train_teachers = timed("train_teachers", pkd.train_teachers, teacher_stage)
        pkd.select = timed("select", pkd.select, lambda: "select")
        pkd.denoise_once = timed("denoise_once", pkd.denoise_once, lambda: "denoise")
        pkd.ngs = timed("ngs", pkd.ngs, lambda: "ngs")
        annotate = pkd.annotate

        def annotate_timed(*args, **kwargs):
            start = time.perf_counter()
            dns_before = self.seconds["dns"]
            try:
                return annotate(*args, **kwargs)
            finally:
                self.add("annotate", time.perf_counter() - start - (self.seconds["dns"] - dns_before))

        pkd.annotate = annotate_timed
        pkd_module._attach_dns = timed("dns", pkd_module._attach_dns, lambda: "dns")


def schedule_overrides(args: argparse.Namespace) -> dict:
    """PKDConfig fields changed from the defaults by ``--epochs``, ``--ngs-rounds``, ``--round-epochs`` and
    ``--final-epochs`` (a short schedule measures memory and per-epoch growth at sizes where the default
    schedule does not fit the time at hand; the JSON records it)."""
    from dataclasses import replace

    from graphspike_kd.graph.pkd import PKDConfig

    out: dict = {}
    if args.teachers:
        out["teachers"] = tuple(args.teachers)
    if args.epochs is not None:
        base = PKDConfig.at_scale() if args.preset == "at-scale" else PKDConfig()
        out["train"] = replace(base.train, epochs=args.epochs)
    if args.ngs_rounds is not None:
        out["ngs_rounds"] = args.ngs_rounds
    if args.round_epochs is not None:
        out["student_epochs_per_round"] = args.round_epochs
    if args.final_epochs is not None:
        out["final_epochs"] = args.final_epochs
    return out


def run_one(args: argparse.Namespace, num_nodes: int) -> dict:
    from graphspike_kd.graph.annotators.oracle import OracleAnnotator
    from graphspike_kd.graph.pkd import PKD, PKDConfig
    from graphspike_kd.graph.splits import few_shot_split
    from graphspike_kd.graph.training import accuracy

    torch.set_num_threads(args.threads)
    classes = args.classes or (7 if num_nodes < 10_000 else 40)
    t0 = time.perf_counter()
    data = citation_graph(
        num_nodes,
        classes,
        avg_degree=args.avg_degree,
        homophily=args.homophily,
        features=args.features,
        seed=args.seed,
    )
    generate_s = time.perf_counter() - t0
    split = few_shot_split(data.y, args.shots, protocol="paper", seed=args.seed)
    annotator = OracleAnnotator(data, accuracy=args.oracle_accuracy, seed=args.seed)
    if args.dns:
        annotator.neighbours = None  # take DNS context like the text annotators (the oracle ignores it)
    fields = PKDConfig.__dataclass_fields__
    overrides = schedule_overrides(args)
    build = PKDConfig.at_scale if args.preset == "at-scale" else PKDConfig
    config = build(**({"device": args.device} if "device" in fields else {}), **overrides)
    pkd = PKD(config)
    timer = StageTimer()
    timer.wrap(pkd)
    profiler = cProfile.Profile() if args.profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    expansion = pkd.expand(data, annotator, split, args.seed)
    before = time.perf_counter()
    result = pkd.distill(data, expansion, split, args.seed)
    timer.add("student_final", time.perf_counter() - before - timer.seconds["ngs"])
    before = time.perf_counter()
    measured = pkd.evaluate(data, split, result)
    timer.add("evaluate", time.perf_counter() - before)
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(35)
    total = time.perf_counter() - start
    degree = torch.bincount(data.edge_index[0], minlength=num_nodes).double()
    return {
        "nodes": num_nodes,
        "edges_undirected": data.edge_index.size(1) // 2,
        "classes": classes,
        "features": args.features,
        "feature_nnz": int(data.x._nnz()) if data.x.layout != torch.strided else int(data.x.numel()),
        "edge_homophily": edge_homophily(data),
        "sum_squared_degree": float((degree**2).sum()),
        "budget": expansion.diagnostics["budget"],
        "teachers": list(config.teachers),
        "preset": args.preset,
        "schedule": "preset" if not overrides else {k: str(v) for k, v in overrides.items()},
        "train": str(config.train),
        "ngs_rounds": config.ngs_rounds,
        "student_epochs_per_round": config.student_epochs_per_round,
        "final_epochs": config.final_epochs,
        "dns": args.dns,
        "device": getattr(config, "device", "cpu"),
        "generate_s": round(generate_s, 2),
        "stage_s": {k: round(v, 2) for k, v in timer.seconds.items()},
        "total_s": round(total, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "test_acc": measured["test_acc"],
        "val_acc": accuracy(result.logits, data.y, split.val_mask) if bool(split.val_mask.any()) else None,
        "llm_acc_selected": measured["expansion"].get("llm_acc_selected"),
        "teacher_test_acc": measured["expansion"].get("teacher_test_acc"),
        "denoise_gate": expansion.diagnostics.get("denoise_gate"),
        "threads": args.threads,
        "load_average_at_end": list(os.getloadavg()),
    }


# ---------------------------------------------------------------------------------------- the driver
def merge(path: Path, record: dict, command: str, *, file_command: str | None = None,
          started: float | None = None, run_started: float | None = None) -> dict:
    """Add (or replace) the run at ``record["nodes"]`` in the JSON at ``path``. The run keeps its own
    ``command`` and provenance record (runs of one file may come from separate invocations); the file's
    ``provenance`` is that of the invocation that wrote it last (``file_command``, ``started``)."""
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload.pop("provenance", None)  # the file's command and record are those of this invocation
    payload.pop("command", None)
    runs = [r for r in payload.get("runs", []) if r["nodes"] != record["nodes"]]
    runs.append({**record, "command": command,
                 "provenance": provenance.collect(command, started=run_started, repo_dir=ROOT)})
    payload.update(benchmark="pkd_scale", runs=sorted(runs, key=lambda r: r["nodes"]))
    payload["exponents_30k_to_largest"] = exponents(payload["runs"])
    return provenance.write_json(path, payload, command=file_command, started=started, repo_dir=ROOT)


def exponents(runs: list[dict], low: int = 30_000) -> dict[str, float]:
    """Per-stage growth exponent :math:`\\log(t_2/t_1)/\\log(N_2/N_1)` between the run at ``low`` nodes and
    the largest run (stages under 0.5 s at both ends are left out: timer noise)."""
    small = [r for r in runs if r["nodes"] == low]
    big = max(runs, key=lambda r: r["nodes"], default=None)
    if not small or big is None or big["nodes"] <= low:
        return {}
    a, out = small[0], {}
    ratio = math.log(big["nodes"] / a["nodes"])
    for stage in (*STAGES, "total"):
        t1 = a["total_s"] if stage == "total" else a["stage_s"].get(stage, 0.0)
        t2 = big["total_s"] if stage == "total" else big["stage_s"].get(stage, 0.0)
        if max(t1, t2) >= 0.5 and t1 > 0 and t2 > 0:
            out[stage] = round(math.log(t2 / t1) / ratio, 3)
    return out


def plot(path: Path, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = json.loads(path.read_text())["runs"]
    n = [r["nodes"] for r in runs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stage in STAGES:
        t = [max(r["stage_s"].get(stage, 0.0), 1e-2) for r in runs]
        if max(t) >= 0.5:
            ax.plot(n, t, marker="o", label=stage)
    ax.plot(n, [r["total_s"] for r in runs], marker="s", color="black", linewidth=2, label="total")
    if len(n) >= 2:  # reference slope N^1.2 through the first total
        ref = [runs[0]["total_s"] * (x / n[0]) ** 1.2 for x in n]
        ax.plot(n, ref, linestyle="--", color="grey", label="∝ N^1.2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes N")
    ax.set_ylabel("seconds (one seed)")
    ax.set_title("PKD stage time against graph size (synthetic citation graphs)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    provenance.atomic_savefig(fig, output, dpi=120)
    plt.close(fig)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[2708, 30_000, 169_343])
    p.add_argument("--classes", type=int, default=None, help="default: 7 below 10k nodes, else 40")
    p.add_argument("--avg-degree", type=float, default=7.0)
    p.add_argument("--homophily", type=float, default=0.65)
    p.add_argument("--features", default="bow", choices=["bow", "dense"])
    p.add_argument(
        "--preset",
        default="at-scale",
        choices=["at-scale", "default"],
        help="PKDConfig.at_scale() (the large-graph configuration) or PKDConfig() (default: at-scale)",
    )
    p.add_argument("--teachers", nargs="+", default=None, help="teacher names (default: the preset's)")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--oracle-accuracy", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-dns",
        dest="dns",
        action="store_false",
        help="do not give the oracle a neighbours option (then PKD skips DNS, as for the oracle)",
    )
    p.add_argument("--epochs", type=int, default=None, help="teacher epochs (default: PKDConfig's 200)")
    p.add_argument("--ngs-rounds", type=int, default=None, help="default: PKDConfig's 40")
    p.add_argument("--round-epochs", type=int, default=None, help="student epochs per NGS round (default 5)")
    p.add_argument("--final-epochs", type=int, default=None, help="default: PKDConfig's 200")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", type=Path, default=DEFAULT_JSON)
    p.add_argument("--plot", type=Path, default=DEFAULT_PNG)
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--profile", type=Path, default=None, help="cProfile stats file (with one --nodes)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        plot(args.output, args.plot)
        return
    if args.child:
        print("RESULT " + json.dumps(run_one(args, args.nodes[0])), flush=True)
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    file_command = provenance.command_line(["benchmarks/pkd_scale.py", *argv])
    started = provenance.now()
    for n in args.nodes:
        child = [a for a in argv if a != "--child"]
        i = child.index("--nodes") if "--nodes" in child else None
        if i is not None:
            j = i + 1
            while j < len(child) and not child[j].startswith("--"):
                j += 1
            del child[i:j]
        cmd = [sys.executable, __file__, "--child", "--nodes", str(n), *child]
        load_at_start = list(os.getloadavg())
        run_started = provenance.now()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(proc.stderr[-4000:])
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        print("\n".join(x for x in proc.stdout.splitlines() if not x.startswith("RESULT ")))
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"the run at {n} nodes failed (exit {proc.returncode})")
        record = json.loads(lines[-1][len("RESULT ") :])
        record["load_average_at_start"] = load_at_start
        command = provenance.command_line(["benchmarks/pkd_scale.py", "--nodes", str(n), *child])
        merge(args.output, record, command, file_command=file_command, started=started,
              run_started=run_started)
        print(json.dumps({k: record[k] for k in ("nodes", "total_s", "peak_rss_mb", "test_acc")}), flush=True)
        plot(args.output, args.plot)


if __name__ == "__main__":
    main()
