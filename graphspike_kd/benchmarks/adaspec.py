"""AdaSPEC vs plain token KD (DistillSpec-style forward KL) for a speculative-decoding draft, on CPU.

Everything is built offline: the corpus is the docstrings of a fixed list of Python standard-library
modules (collected with ``inspect``; real English technical prose), the tokenizer is byte-level
(vocabulary 256), and three GPT-2 models are built from configs (``transformers``, no download):

- target P: 4 layers, width 128, trained with cross-entropy;
- draft initialisation: 1 layer, width 32, briefly pre-trained with cross-entropy (the "small pretrained
  model" of the paper);
- reference R = the draft initialisation distilled from P with token-level forward KL. As in the paper,
  this DistillSpec model is also the baseline draft;
- AdaSPEC draft Q = the draft initialisation trained with :func:`~graphspike_kd.common.losses.adaspec_loss`
  (top k = 0.4 tokens by ΔL per micro-batch) for the same number of steps.

Measured on held-out docstrings: teacher-forced acceptance (greedy: argmax agreement; sampled:
1 − TV(P, Q)), the acceptance rate of actual speculative decoding runs (gamma = 4, greedy and sampled),
and the token KL(P ‖ Q).

    python -m graphspike_kd.benchmarks.adaspec --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import inspect
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from graphspike_kd.benchmarks import provenance
from graphspike_kd.common.losses import (
    acceptance_rate,
    adaspec_loss,
    shift_for_causal_lm,
    speculative_decoding_acceptance,
    token_kd_loss,
    token_kl,
)

STDLIB_MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions",
    "functools", "gzip", "hashlib", "heapq", "html", "http.client", "inspect", "io", "ipaddress",
    "itertools", "json", "logging", "math", "operator", "os", "pathlib", "pprint", "queue", "random", "re",
    "sched", "secrets", "shlex", "shutil", "socket", "statistics", "string", "struct", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "typing", "unittest",
    "urllib.parse", "uuid", "warnings", "weakref", "zipfile",
)


def stdlib_docstrings(min_chars: int = 80) -> list[str]:
    """Docstrings of the modules in ``STDLIB_MODULES`` and of their public classes / functions (ASCII only,
    de-duplicated, in a deterministic order)."""
    seen: set[str] = set()
    docs: list[str] = []
    for name in STDLIB_MODULES:
        mod = importlib.import_module(name)
        objs = [mod] + [obj for attr, obj in sorted(vars(mod).items())
                        if not attr.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))]
        for obj in objs:
            doc = inspect.getdoc(obj)
            if not doc or len(doc) < min_chars or doc in seen or not doc.isascii():
                continue
            seen.add(doc)
            docs.append(doc)
    return docs


def _require_transformers():
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the AdaSPEC experiment needs transformers: pip install graphspike_kd[llm]"
        ) from exc


def build_gpt2(n_layer: int, n_embd: int, n_head: int, seq_len: int, seed: int):
    transformers = _require_transformers()
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=seq_len, n_embd=n_embd, n_layer=n_layer,
                                  n_head=n_head, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(cfg)
    model.eval()
    return model


def encode_windows(docs: list[str], seq_len: int) -> torch.Tensor:
    """Byte-encode the concatenated docstrings and cut them into ``[n, seq_len]`` windows."""
    data = "\n\n".join(docs).encode("ascii")
    n = len(data) // seq_len
    arr = np.frombuffer(data[: n * seq_len], dtype=np.uint8).astype(np.int64)
    return torch.from_numpy(arr.reshape(n, seq_len).copy())


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


def train(model, data: torch.Tensor, steps: int, *, lr: float, batch: int, gen: torch.Generator, loss_fn,
          desc: str, progress: bool) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        ids = data[torch.randint(0, data.shape[0], (batch,), generator=gen)]
        loss = loss_fn(model, ids)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def ce_loss(model, ids):
    logits, labels = shift_for_causal_lm(_logits(model, ids), ids)
    return F.cross_entropy(logits.reshape(-1, 256), labels.reshape(-1))


@torch.no_grad()
def evaluate(draft, target, test: torch.Tensor, prompts: list[torch.Tensor], args, gen) -> dict[str, float]:
    q, labels = shift_for_causal_lm(_logits(draft, test), test)
    p, _ = shift_for_causal_lm(_logits(target, test), test)
    out = {
        "tf_greedy": acceptance_rate(q, p, labels, mode="greedy"),
        "tf_sampled": acceptance_rate(q, p, labels, mode="sampled"),
        "token_kl": float(token_kl(q, p, labels).mean()),
    }
    for mode in ("greedy", "sampled"):
        res = speculative_decoding_acceptance(
            lambda ids: _logits(target, ids), lambda ids: _logits(draft, ids), prompts, gamma=args.gamma,
            max_new_tokens=args.new_tokens, mode=mode, generator=gen,
        )
        out[f"sd_{mode}"] = res["acceptance_rate"]
        out[f"sd_{mode}_tokens_per_call"] = res["tokens_per_target_call"]
    return out


def run_seed(seed: int, docs: list[str], args: argparse.Namespace, progress: bool) -> dict:
    gen = torch.Generator().manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(docs))
    n_test = max(1, len(docs) // 10)
    test_docs = [docs[i] for i in order[:n_test]]
    train_docs = [docs[i] for i in order[n_test:]]
    train_ids = encode_windows(train_docs, args.seq_len)
    test_ids = encode_windows(test_docs, args.seq_len)[: args.eval_windows]
    prompts = [w[:16] for w in test_ids[: args.prompts]]
    target = build_gpt2(4, 128, 4, args.seq_len, seed)
    t_loss = train(target, train_ids, args.target_steps, lr=3e-3, batch=args.batch, gen=gen, loss_fn=ce_loss,
                   desc="target", progress=progress)
    for p in target.parameters():
        p.requires_grad_(False)
    draft_init = build_gpt2(1, 32, 2, args.seq_len, seed + 1)
    train(draft_init, train_ids, args.draft_pretrain_steps, lr=3e-3, batch=args.batch, gen=gen,
          loss_fn=ce_loss, desc="draft pretrain", progress=progress)

    def kd(model, ids):
        with torch.no_grad():
            p_logits = _logits(target, ids)
        q_logits, labels = shift_for_causal_lm(_logits(model, ids), ids)
        return token_kd_loss(q_logits, shift_for_causal_lm(p_logits, ids)[0], labels)

    reference = copy.deepcopy(draft_init)
    train(reference, train_ids, args.kd_steps, lr=args.kd_lr, batch=args.batch, gen=gen, loss_fn=kd,
          desc="token KD (reference)", progress=progress)
    for p in reference.parameters():
        p.requires_grad_(False)

    def ada(model, ids):
        with torch.no_grad():
            p_logits = shift_for_causal_lm(_logits(target, ids), ids)[0]
            r_logits = shift_for_causal_lm(_logits(reference, ids), ids)[0]
        q_logits, labels = shift_for_causal_lm(_logits(model, ids), ids)
        return adaspec_loss(q_logits, p_logits, r_logits, labels, k=args.k)

    adaspec_draft = copy.deepcopy(draft_init)
    train(adaspec_draft, train_ids, args.kd_steps, lr=args.kd_lr, batch=args.batch, gen=gen, loss_fn=ada,
          desc="AdaSPEC", progress=progress)
    results = {}
    for name, model in (("draft_init", draft_init), ("token_kd", reference), ("adaspec", adaspec_draft)):
        results[name] = evaluate(model, target, test_ids, prompts, args, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        results["target_test_ce"] = float(ce_loss(target, test_ids))
    results["target_final_train_ce"] = float(np.mean(t_loss[-20:]))
    return results


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m graphspike_kd.benchmarks.adaspec", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--k", type=float, default=0.4, help="AdaSPEC kept fraction (paper: 0.4)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=16, help="micro-batch (paper: 16)")
    p.add_argument("--target-steps", type=int, default=600)
    p.add_argument("--draft-pretrain-steps", type=int, default=150)
    p.add_argument("--kd-steps", type=int, default=300, help="steps of token KD and of AdaSPEC each")
    p.add_argument("--kd-lr", type=float, default=3e-3)
    p.add_argument("--eval-windows", type=int, default=256, help="held-out windows (teacher forced)")
    p.add_argument("--prompts", type=int, default=16, help="prompts for the speculative decoding runs")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--gamma", type=int, default=4, help="draft tokens per speculative round")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/adaspec.json"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    _require_transformers()
    torch.set_num_threads(1)
    start = time.time()
    docs = stdlib_docstrings()
    corpus = "\n\n".join(docs).encode("ascii")
    runs = [run_seed(s, docs, args, not args.quiet) for s in args.seeds]
    metrics = ("tf_greedy", "tf_sampled", "sd_greedy", "sd_sampled", "sd_greedy_tokens_per_call", "token_kl")
    summary = {}
    for name in ("draft_init", "token_kd", "adaspec"):
        summary[name] = {m: [r[name][m] for r in runs] for m in metrics}
    report = {
        "corpus": {"source": "inspect.getdoc over Python stdlib modules", "modules": list(STDLIB_MODULES),
                   "python": platform.python_version(), "docstrings": len(docs), "bytes": len(corpus),
                   "sha256": hashlib.sha256(corpus).hexdigest()},
        "models": {"target": "GPT-2 4x128", "draft": "GPT-2 1x32", "vocab": "bytes (256)"},
        "k": args.k, "seeds": args.seeds, "results": summary,
        "target_test_ce": [r["target_test_ce"] for r in runs],
        "wall_time_s": round(time.time() - start, 1),
        "command": provenance.command_line(["", *(sys.argv[1:] if argv is None else argv)],
                                           module="graphspike_kd.benchmarks.adaspec"),
    }
    print(f"corpus: {len(docs)} docstrings, {len(corpus)} bytes; target test CE "
          f"{np.mean(report['target_test_ce']):.3f} nats/byte")
    header = ["draft", "TF greedy", "TF sampled", "SD greedy", "SD sampled", "tok/call", "KL(P||Q)"]
    print(f"{header[0]:<11}" + "".join(f"{h:>17}" for h in header[1:]))
    for name, r in summary.items():
        cells = [f"{np.mean(r[m]):.4f} ± {np.std(r[m]):.4f}" for m in metrics]
        print(f"{name:<11}" + "".join(f"{c:>17}" for c in cells))
    report = provenance.write_json(args.output, report, command=report["command"], started=start)
    print(f"wrote {args.output} ({report['wall_time_s']} s)")
    return report


if __name__ == "__main__":
    main()
