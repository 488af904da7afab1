"""LLM annotators: one interface (node ids → class, confidence, raw response), four backends.

>>> from graphspike_kd.graph.annotators import get_annotator
>>> ann = get_annotator("cached", dataset=data)              # shipped predictions (Cora: GPT-3.5, TAPE)
>>> ann = get_annotator("embedding", dataset=data)           # zero-shot MiniLM cosine, offline
>>> ann = get_annotator("hf", dataset=data, model=path)      # local causal LM, log-likelihood scoring
>>> ann = get_annotator("openai", dataset=data, model="meta-llama/Llama-3.1-8B-Instruct",
...                     base_url="http://localhost:8000/v1")  # any OpenAI-compatible server (vLLM)
>>> ann = get_annotator("oracle", dataset=data, accuracy=0.7)  # simulated annotator (CPU runs, ablations)
>>> out = ann.annotate(node_ids)                             # Annotations(labels, confidence, raw, ...)

Backends are imported on first use, so importing this package pulls in neither transformers nor
sentence-transformers. All of them write through one append-only JSONL
:class:`~graphspike_kd.graph.annotators.cache.AnnotationCache` keyed by (dataset, node, prompt hash,
model); prompts and class descriptions live in :mod:`graphspike_kd.graph.annotators.prompts`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    Annotations,
    Annotator,
    AnnotatorError,
    QueryResult,
    available_annotators,
    get_annotator,
    register_annotator,
)
from .cache import AnnotationCache, CacheRecord
from .cached import CachedAnnotator

__all__ = [
    "AnnotationCache",
    "Annotations",
    "Annotator",
    "AnnotatorError",
    "CacheRecord",
    "CachedAnnotator",
    "EmbeddingAnnotator",
    "HFAnnotator",
    "OpenAIAnnotator",
    "OracleAnnotator",
    "QueryResult",
    "available_annotators",
    "get_annotator",
    "register_annotator",
]

_LAZY = {
    "EmbeddingAnnotator": "graphspike_kd.graph.annotators.embedding",
    "HFAnnotator": "graphspike_kd.graph.annotators.hf",
    "OpenAIAnnotator": "graphspike_kd.graph.annotators.openai_http",
    "OracleAnnotator": "graphspike_kd.graph.annotators.oracle",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
