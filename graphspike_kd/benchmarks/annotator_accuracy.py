"""Zero-shot accuracy of an annotator backend on the shipped text-attributed graphs.

    python -m graphspike_kd.benchmarks.annotator_accuracy --backend embedding \
        --datasets citeseer cornell texas washington wisconsin
    python -m graphspike_kd.benchmarks.annotator_accuracy --backend hf --model smollm2 \
        --datasets citeseer --nodes 50 --seed 0
    python -m graphspike_kd.benchmarks.annotator_accuracy --backend cached --datasets cora

Nodes: all nodes, or ``--nodes N`` drawn uniformly without replacement among the nodes that have text
(``numpy.random.default_rng(seed)``). Accuracy counts an invalid answer (label -1) as wrong; the
accuracy over valid answers, the number of invalid answers, the mean confidence, the expected
calibration error (10 equal-width bins) and the wall time are reported too. Answers go through the
annotator's persistent cache (``--cache-dir``, default ``$GRAPHSPIKE_KD_CACHE`` or
``~/.cache/graphspike_kd``), so a rerun is instant; pass ``--no-cache`` to measure from scratch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from graphspike_kd.benchmarks import provenance


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Sum over equal-width confidence bins of |accuracy − mean confidence| weighted by the bin's share."""
    if confidence.size == 0:
        return float("nan")
    idx = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def evaluate(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from graphspike_kd.graph.annotators import get_annotator
    from graphspike_kd.graph.datasets import load_tag_dataset

    data = load_tag_dataset(name)
    y = data.y.numpy()
    if data.texts is not None:
        pool = np.asarray(
            [i for i, t in enumerate(data.texts) if t is not None and str(t).strip()], dtype=np.int64
        )
    else:
        pool = np.arange(data.num_nodes, dtype=np.int64)
    if args.nodes is not None and args.nodes < pool.size:
        nodes = np.sort(np.random.default_rng(args.seed).choice(pool, size=args.nodes, replace=False))
    else:
        nodes = pool
    kwargs: dict[str, Any] = {"dataset": data, "progress": not args.quiet}
    if args.backend != "cached":
        kwargs["cache"] = (
            None
            if args.no_cache
            else (
                Path(args.cache_dir) / "annotations" / f"{args.backend}.jsonl"
                if args.cache_dir
                else "default"
            )
        )
    if args.backend == "embedding":
        kwargs["temperature"] = args.temperature
        if args.cache_dir:
            kwargs["embedding_cache"] = Path(args.cache_dir) / "embeddings"
        if args.no_cache:
            kwargs["embedding_cache"] = None
    if args.backend == "hf":
        kwargs.update(
            model=args.model or "smollm2",
            batch_size=args.batch_size,
            max_text_chars=args.max_text_chars,
            calibration=args.calibration,
        )
    if args.backend == "openai":
        kwargs.update(model=args.model, base_url=args.base_url)
    start = time.perf_counter()
    annotator = get_annotator(args.backend, **kwargs)
    loaded = time.perf_counter()
    out = annotator.annotate(nodes)
    done = time.perf_counter()
    correct = out.labels == y[nodes]
    valid = out.valid
    return {
        "dataset": name,
        "backend": args.backend,
        "model": annotator.model_name,
        "nodes": int(nodes.size),
        "accuracy": float(correct.mean()),
        "accuracy_valid": float(correct[valid].mean()) if valid.any() else float("nan"),
        "n_invalid": out.n_invalid,
        "mean_confidence": float(out.confidence[valid].mean()) if valid.any() else float("nan"),
        "ece": expected_calibration_error(out.confidence[valid], correct[valid]),
        "majority_class_rate": float(np.bincount(y[nodes]).max() / nodes.size),
        "load_s": round(loaded - start, 2),
        "annotate_s": round(done - loaded, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="embedding", choices=["cached", "embedding", "hf", "openai"])
    parser.add_argument(
        "--datasets", nargs="+", default=["citeseer", "cornell", "texas", "washington", "wisconsin"]
    )
    parser.add_argument(
        "--nodes", type=int, default=None, help="sample this many nodes with text (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="hf: folder, .gguf or 'smollm2'; openai: served model")
    parser.add_argument("--base-url", default="http://localhost:8000/v1")
    parser.add_argument("--temperature", type=float, default=0.05, help="embedding: softmax temperature")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--calibration", default="none", choices=["none", "content_free"], help="hf only")
    parser.add_argument("--max-text-chars", type=int, default=1000)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--no-cache", action="store_true", help="no persistent caches: measure from scratch")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.backend == "openai" and not args.model:
        parser.error("--backend openai needs --model")
    started = provenance.now()
    rows = [evaluate(args, name) for name in args.datasets]
    header = (
        f"{'dataset':<11} {'model':<28} {'nodes':>5} {'acc':>6} {'acc|valid':>9} {'invalid':>7} "
        f"{'conf':>5} {'ECE':>5} {'majority':>8} {'time s':>7}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['dataset']:<11} {r['model'][:28]:<28} {r['nodes']:>5} {r['accuracy']:>6.3f} "
            f"{r['accuracy_valid']:>9.3f} {r['n_invalid']:>7} {r['mean_confidence']:>5.2f} {r['ece']:>5.3f} "
            f"{r['majority_class_rate']:>8.3f} {r['load_s'] + r['annotate_s']:>7.1f}"
        )
    command = provenance.command_line(["", *(sys.argv[1:] if argv is None else argv)],
                                      module="graphspike_kd.benchmarks.annotator_accuracy")
    result = {"command": command, "arguments": vars(args), "results": rows}
    if args.output:
        result = provenance.write_json(args.output, result, command=command, started=started)
    return result


if __name__ == "__main__":
    main()
