"""Small text-attributed graphs for the annotator tests (built in memory, nothing read from data/)."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

CITESEER_CLASSES = ["AI", "ML", "IR", "DB", "Agents", "HCI"]
TOY_TEXTS = [
    "Neural network learning with gradient descent and backpropagation for classification.",
    "Query optimization and transaction processing in relational database systems.",
    "Ranking web documents for search engines with inverted indexes.",
    "A user study of interface usability and interaction design.",
    "Negotiation protocols for autonomous software agents in multi-agent systems.",
    "Planning and logical reasoning for knowledge representation.",
    None,  # a node without text, as in Citeseer's 141 text-less Planetoid nodes
    "Support vector machines and statistical learning theory.",
]


def make_tag(
    *,
    name: str = "citeseer",
    class_names: list[str] | None = None,
    texts: list[str | None] | None = None,
    llm_predictions: torch.Tensor | None = None,
    llm_model: str | None = None,
) -> Data:
    texts = list(TOY_TEXTS) if texts is None else texts
    n = len(texts)
    src = torch.arange(n)
    dst = (src + 1) % n
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    data = Data(edge_index=edge_index, num_nodes=n)
    data.name = name
    data.class_names = list(CITESEER_CLASSES if class_names is None else class_names)
    data.texts = texts
    data.y = torch.tensor([1, 3, 2, 5, 4, 0, 0, 1][:n] + [0] * max(0, n - 8))
    data.llm_predictions = llm_predictions
    data.llm_model = llm_model
    return data


@pytest.fixture
def toy_tag() -> Data:
    return make_tag()


@pytest.fixture(autouse=True)
def _isolated_cache_root(tmp_path, monkeypatch):
    """Whatever a test forgets to pass, default caches land in its tmp folder, never in ~/.cache."""
    monkeypatch.setenv("GRAPHSPIKE_KD_CACHE", str(tmp_path / "cache-root"))
