"""Throughput of the ``openai`` annotator against a local OpenAI-compatible server with fixed latency.

A threaded HTTP/1.1 server on 127.0.0.1 (its own Python process, so that it does not share the client's GIL)
answers every ``POST /v1/chat/completions`` after sleeping ``--latency`` seconds, with a valid JSON
answer and token logprobs. The client annotates ``--nodes`` distinct nodes of a synthetic
text-attributed graph (no cache, so every node is one request) and the figure is annotations per
second = nodes / wall-clock seconds of ``annotate``. Configurations, run in interleaved rounds:

- ``keepalive_c32``: the defaults (keep-alive connection pool, concurrency 32);
- ``keepalive_c4``: concurrency 4;
- ``close_c32``: concurrency 32 against the same server speaking HTTP/1.0, i.e. a new connection per
  request (what a server without keep-alive costs).

The ideal at concurrency ``c`` is ``c / latency`` annotations per second (320/s at 32 and 100 ms).

    python benchmarks/annotator_throughput.py          # writes benchmarks/results/annotator_throughput.json
    python benchmarks/annotator_throughput.py --nodes 256 --rounds 1 --latency 0.02 --out /tmp/t.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graphspike_kd.benchmarks import provenance  # noqa: E402

CLASSES = ["AI", "ML", "IR", "DB", "Agents", "HCI"]
CONFIGS = {  # name -> (server speaks HTTP/1.1, concurrency)
    "keepalive_c32": (True, 32),
    "keepalive_c4": (True, 4),
    "close_c32": (False, 32),
}


def serve(latency: float, http11: bool) -> None:
    """Run a latency-``latency`` OpenAI-compatible chat server until killed; print its port first."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pieces = [('{"', -0.01), ("Category", -0.01), ('":', -0.01), (' "', -0.02), ("ML", -0.3)]
    pieces += [('"}', -0.01)]
    content = "".join(t for t, _ in pieces)
    logprobs = {"content": [{"token": t, "logprob": lp, "top_logprobs": []} for t, lp in pieces]}
    payload = json.dumps(
        {
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs}
            ]
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if http11 else "HTTP/1.0"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(latency)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self._headers_buffer.append(b"\r\n")  # headers and body in one write, as real servers do
            self.wfile.write(b"".join(self._headers_buffer) + payload)
            self._headers_buffer = []

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    httpd = Server(("127.0.0.1", 0), Handler)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever(poll_interval=0.05)


def start_server(latency: float, http11: bool) -> tuple[subprocess.Popen, str]:
    """The server in its own Python process (so that it does not share the client's GIL) and its URL."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(latency), str(int(http11))],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"the benchmark server did not start (said {line!r})")
    return proc, f"http://127.0.0.1:{int(line)}/v1"


def make_data(n: int):
    import torch
    from torch_geometric.data import Data

    data = Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=n)
    data.name = "throughput"
    data.class_names = CLASSES
    data.texts = [f"Paper {i}: learning algorithms for classification, variant {i % 97}." for i in range(n)]
    return data


def run_once(url: str, data, concurrency: int, offset: int, n: int) -> tuple[float, int, float]:
    from graphspike_kd.graph.annotators import get_annotator

    ann = get_annotator(
        "openai",
        dataset=data,
        model="bench",
        base_url=url,
        concurrency=concurrency,
        cache=None,
        progress=False,
        timeout=30.0,
        max_retries=2,
    )
    nodes = list(range(offset, offset + n))
    start = time.perf_counter()
    out = ann.annotate(nodes)
    elapsed = time.perf_counter() - start
    ann.close()
    return n / elapsed, int(out.n_invalid), float(out.confidence.mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1600, help="annotations per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every configuration")
    parser.add_argument("--latency", type=float, default=0.1, help="server seconds per request")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "annotator_throughput.json"
    )
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)  # fail on a bad --out before any work
    started = provenance.now()

    servers, urls = {}, {}
    for http11 in sorted({CONFIGS[c][0] for c in args.configs}):
        servers[http11], urls[http11] = start_server(args.latency, http11)
    data = make_data(args.nodes * args.rounds * len(args.configs))
    rates: dict[str, list[float]] = {c: [] for c in args.configs}
    invalid = 0
    offset = 0
    confidences: list[float] = []
    try:
        for r in range(args.rounds):
            order = args.configs[r % len(args.configs) :] + args.configs[: r % len(args.configs)]
            for name in order:
                http11, conc = CONFIGS[name]
                rate, bad, conf = run_once(urls[http11], data, conc, offset, args.nodes)
                confidences.append(conf)
                offset += args.nodes
                invalid += bad
                rates[name].append(rate)
                print(f"round {r} {name}: {rate:.1f} annotations/s", flush=True)
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
    result = {
        "benchmark": "annotator_throughput",
        "command": provenance.command_line(
            ["benchmarks/annotator_throughput.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "latency_s": args.latency,
        "nodes_per_measurement": args.nodes,
        "rounds": args.rounds,
        "invalid_answers": invalid,
        "mean_confidence": round(statistics.fmean(confidences), 4),
        "expected_confidence": round(math.exp(-0.3), 4),  # the server's logprob of the category token
        "configs": {
            name: {
                "http11_keepalive": CONFIGS[name][0],
                "concurrency": CONFIGS[name][1],
                "ideal_per_s": CONFIGS[name][1] / args.latency,
                "per_s_rounds": [round(x, 1) for x in rates[name]],
                "per_s_median": round(statistics.median(rates[name]), 1),
            }
            for name in args.configs
        },
        "goal": ">= 250 annotations/s at concurrency 32 and 100 ms latency",
    }
    result = provenance.write_json(
        args.out, result, command=result["command"], started=started, repo_dir=ROOT
    )
    print(json.dumps(result["configs"], indent=2))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(float(sys.argv[2]), sys.argv[3] == "1")
    else:
        main()
