"""PKD asks the annotator about exactly the nodes it uses: the budget, plus the shots when the posterior
denoiser runs. Counted on a recording annotator, and as HTTP requests at an OpenAI-compatible server on
127.0.0.1 (ephemeral port) driven by the ``openai`` backend."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
import torch

from graphspike_kd.graph.annotators import OpenAIAnnotator
from graphspike_kd.graph.pkd import PKD, PKDConfig
from graphspike_kd.graph.splits import few_shot_split
from graphspike_kd.graph.training import TrainConfig
from tests._local_http import start_local_server

from .test_pkd import NoisyAnnotator, _sbm

SMALL = PKDConfig(
    teachers=("gcn", "mlp"),
    hidden=8,
    train=TrainConfig(epochs=8, patience=5),
    budget_count=24,
    ngs_rounds=1,
    student_epochs_per_round=2,
    final_epochs=8,
    ppo_hidden=8,
)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(
    "protocol,shots,denoise,gate,asks_shots",
    [
        ("paper", 3, "posterior", "auto", True),  # raw and denoised teachers compared on validation
        ("paper", 3, "posterior", "off", True),
        ("strict", 3, "posterior", "auto", True),  # enough shots: denoised
        ("strict", 2, "posterior", "auto", True),  # the referee check compares the annotator on the shots
        ("strict", 1, "posterior", "auto", False),  # one shot per class: no check, raw labels
        ("paper", 3, "drop", "auto", False),  # only the posterior denoiser reads the shots' answers
        ("paper", 3, "none", "auto", False),
    ],
)
def test_fit_asks_the_budget_plus_the_shots_the_denoiser_needs(protocol, shots, denoise, gate, asks_shots):
    data = _sbm(n_per_class=25)
    split = few_shot_split(data.y, shots, protocol=protocol, seed=1)
    annotator = NoisyAnnotator(data.y, split.train_index, accuracy=0.7)
    pkd = PKD(replace(SMALL, denoise=denoise, denoise_gate=gate))
    result = pkd.fit(data, annotator, split, seed=0)
    asked = np.concatenate(annotator.asked)
    selected = result.expansion.selected.numpy()
    expected = np.concatenate([selected, split.train_index.numpy()]) if asks_shots else selected
    assert len(selected) == SMALL.budget_count
    assert len(asked) == len(expected) and len(np.unique(asked)) == len(asked)  # each node once
    assert set(asked.tolist()) == set(expected.tolist())
    # the measurements need no extra call unless asked for one
    pkd.evaluate(data, split, result)
    assert len(np.concatenate(annotator.asked)) == len(expected)
    report = pkd.evaluate(data, split, result, annotator=annotator, seed=0)
    extra = np.concatenate(annotator.asked)[len(expected) :]
    assert len(extra) == SMALL.budget_count and "llm_acc_random" in report["expansion"]
    assert bool(split.pool_mask[torch.from_numpy(extra)].all())
    assert report["expansion"]["llm_acc_random"] == pytest.approx(
        float(np.mean(annotator.answer[extra] == data.y.numpy()[extra]))
    )


class CountingServer:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint that records every request. The node's own
    text (``node-<id> ...``) comes first in the user message; the reply names the node's true class for 7 in
    10 nodes and the next class otherwise."""

    def __init__(self, y: torch.Tensor, class_names: list[str]):
        self.requests: list[int] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                node = int(re.search(r"node-(\d+)", body["messages"][-1]["content"]).group(1))
                with server.lock:
                    server.requests.append(node)
                label = int(y[node]) if node % 10 < 7 else (int(y[node]) + 1) % len(class_names)
                content = json.dumps({"Reasoning": "r", "Category": class_names[label]})
                payload = json.dumps({"choices": [{"index": 0, "message": {"content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd, port = start_local_server(Handler)
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("denoise,asks_shots", [("posterior", True), ("drop", False)])
def test_openai_annotator_gets_one_request_per_node_the_method_uses(
    monkeypatch, tmp_path, denoise, asks_shots
):
    monkeypatch.setenv("GRAPHSPIKE_KD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = _sbm(n_per_class=25)
    data.name = "counting-graph"
    data.class_names = ["Alpha", "Beta", "Gamma"]
    data.texts = [f"node-{i} a paper on topic {i % 7}" for i in range(data.num_nodes)]
    split = few_shot_split(data.y, 3, protocol="paper", seed=0)
    server = CountingServer(data.y, data.class_names)
    try:
        annotator = OpenAIAnnotator(
            data, model="counting-model", base_url=server.base_url, cache=None, progress=False, max_retries=0
        )
        pkd = PKD(replace(SMALL, denoise=denoise, dns_k=2))  # DNS context on: prompts carry neighbours
        result = pkd.fit(data, annotator, split, seed=0)
        pkd.evaluate(data, split, result)  # no request without the opt-in
    finally:
        server.close()
    selected = result.expansion.selected.tolist()
    expected = selected + (split.train_index.tolist() if asks_shots else [])
    assert (
        len(server.requests) == len(expected) == SMALL.budget_count + asks_shots * int(split.train_mask.sum())
    )
    assert sorted(server.requests) == sorted(expected)  # every node asked exactly once
    llm = result.expansion.llm_labels
    truth = torch.where(
        torch.tensor([v % 10 < 7 for v in selected]), data.y[selected], (data.y[selected] + 1) % 3
    )
    assert torch.equal(llm, truth)  # the server's answers are the ones PKD used
