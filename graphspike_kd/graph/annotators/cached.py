"""``cached`` backend: answers that already exist (shipped LLM predictions or a user JSONL file).

Shipped predictions (``data.llm_predictions``, e.g. TAPE's GPT-3.5 zero-shot ranks for Cora) are a
LongTensor ``[N, K]`` of class ids ranked best first, ``-1`` padded. The label is the first id; a row
with no id at all is an invalid answer (``-1``).

Confidence rule (documented, deterministic): a ranked list of ``L`` classes gives its top class
confidence ``1 / L``. The LLM listing a single class is a confident answer (1.0); listing three
hedges between them (1/3). The rule keeps the LLM's own signal of doubt without inventing a
probability model for it.

User JSONL files hold one object per line::

    {"node": 12, "label": "Neural_Networks"}                       # class name (raw or display name)
    {"node": 13, "label": 3, "confidence": 0.8, "raw": "..."}      # or class id, optional confidence
    {"node": 14, "label": null}                                     # the LLM gave no usable answer
    {"node": 15, "ranked": [3, 0]}                                  # a ranked list (confidence 1/L)

A label name that matches no class, ``null`` or ``-1`` is an invalid answer (``-1``), counted, never
mapped; a numeric label outside ``-1 .. C-1`` or a malformed line raises, naming file and line. Without
``confidence`` a hard label gets 1.0.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Annotator, QueryResult, dataset_fields
from .cache import AnnotationCache
from .prompts import class_lookup, normalise_name

__all__ = ["CachedAnnotator", "ranked_confidence"]


def ranked_confidence(num_ranked: int) -> float:
    """Top-class confidence of a ranked list of ``num_ranked`` classes: ``1 / num_ranked`` (0 if empty)."""
    return 0.0 if num_ranked <= 0 else 1.0 / num_ranked


class CachedAnnotator(Annotator):
    """Serve predictions that already exist: ``data.llm_predictions`` or a user JSONL file.

    Args:
        dataset (torch_geometric.data.Data, optional): supplies ``name``, ``class_names``, ``num_nodes``
            and, when ``path`` is not given, ``llm_predictions`` and ``llm_model``.
        path (str or Path, optional): a user JSONL file of answers (format in the module docstring).
            (default: :obj:`None`)
        class_names (Sequence[str], optional): needed when ``dataset`` is not given.
        dataset_name (str, optional): overrides ``dataset.name``.
        model_name (str, optional): overrides ``dataset.llm_model`` / ``"jsonl:<file name>"``.
        missing (str): what to do for a requested node that has no stored answer: ``"error"`` raises a
            :class:`ValueError` listing such nodes, ``"invalid"`` returns label ``-1`` (not cached).
            (default: :obj:`"error"`)
        cache: see :class:`~graphspike_kd.graph.annotators.base.Annotator` (default: in memory).

    Raises:
        ValueError: ``dataset.llm_predictions`` is absent or malformed, or the JSONL file is malformed.
    """

    backend = "cached"

    def __init__(
        self,
        dataset: Any = None,
        *,
        path: str | os.PathLike[str] | None = None,
        class_names: Sequence[str] | None = None,
        dataset_name: str | None = None,
        model_name: str | None = None,
        num_nodes: int | None = None,
        missing: str = "error",
        cache: AnnotationCache | str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> None:
        if missing not in ("error", "invalid"):
            raise ValueError(f"missing must be 'error' or 'invalid', got {missing!r}")
        fields: dict[str, Any] = {}
        if dataset is not None:
            fields = dataset_fields(dataset)
        name = dataset_name or fields.get("name")
        classes = list(class_names) if class_names is not None else fields.get("class_names")
        if not name or not classes:
            raise ValueError("CachedAnnotator needs a dataset, or dataset_name and class_names")
        n = num_nodes if num_nodes is not None else fields.get("num_nodes")
        self.missing = missing
        self._table: dict[int, QueryResult] = {}
        if path is None:
            if dataset is None:
                raise ValueError("CachedAnnotator needs a dataset with llm_predictions or a JSONL path")
            preds = getattr(dataset, "llm_predictions", None)
            if preds is None:
                raise ValueError(
                    f"dataset {name!r} has no shipped LLM predictions (data.llm_predictions is None); pass a "
                    "JSONL file with path=..., or use another backend ('embedding', 'hf', 'openai')"
                )
            model = model_name or str(getattr(dataset, "llm_model", None) or "shipped-llm-predictions")
            self._source = self._load_ranked(preds, classes, name)
        else:
            path = Path(path)
            model = model_name or f"jsonl:{path.name}"
            self._source = self._load_jsonl(path, classes, name, n)
        super().__init__(
            dataset_name=name,
            class_names=classes,
            model_name=model,
            num_nodes=n,
            cache=cache,
            progress=progress,
        )

    # ------------------------------------------------------------------------------------------ sources
    def _load_ranked(self, preds: Any, classes: list[str], name: str) -> str:
        arr = np.asarray(preds.detach().cpu().numpy() if hasattr(preds, "detach") else preds)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{name}: llm_predictions must be an integer [N, K] tensor of ranked class ids, "
                f"got shape {tuple(arr.shape)} dtype {arr.dtype}"
            )
        bad = (arr < -1) | (arr >= len(classes))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(
                f"{name}: llm_predictions row {row} holds ids outside -1..{len(classes) - 1}: {arr[row]}"
            )
        for node, row in enumerate(arr.tolist()):
            ranked = tuple(r for r in row if r >= 0)
            label = ranked[0] if ranked else -1
            raw = "ranked: " + ", ".join(classes[r] for r in ranked) if ranked else "ranked: (none)"
            self._table[node] = QueryResult(node, label, ranked_confidence(len(ranked)), raw, ranked)
        digest = hashlib.sha256(np.ascontiguousarray(arr, dtype=np.int64).tobytes()).hexdigest()
        return "llm_predictions:" + digest

    def _load_jsonl(self, path: Path, classes: list[str], name: str, num_nodes: int | None) -> str:
        if not path.is_file():
            raise FileNotFoundError(f"annotation file not found: {path}")
        lookup = class_lookup(name, classes)
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ValueError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{where}: malformed JSON ({exc})") from exc
            if not isinstance(obj, dict) or "node" not in obj:
                raise ValueError(f"{where}: expected an object with a 'node' key, got {line[:120]!r}")
            node = obj["node"]
            if not isinstance(node, int) or node < 0 or (num_nodes is not None and node >= num_nodes):
                raise ValueError(f"{where}: node {node!r} is not an id in [0, {num_nodes})")
            if node in self._table:
                raise ValueError(f"{where}: node {node} appears twice in the file")
            ranked = obj.get("ranked")
            if ranked is not None:
                ranked = tuple(self._label_id(r, lookup, len(classes), where) for r in ranked)
                ranked = tuple(r for r in ranked if r >= 0)
            if "label" in obj:
                label = self._label_id(obj["label"], lookup, len(classes), where)
            elif ranked is not None:
                label = ranked[0] if ranked else -1
            else:
                raise ValueError(f"{where}: a line needs 'label' or 'ranked'")
            if "confidence" in obj and obj["confidence"] is not None:
                conf = float(obj["confidence"])
                if not 0.0 <= conf <= 1.0:
                    raise ValueError(f"{where}: confidence {conf} is outside [0, 1]")
            else:
                conf = ranked_confidence(len(ranked)) if ranked is not None and "label" not in obj else 1.0
            raw = str(obj.get("raw", obj.get("label", ranked)))
            self._table[node] = QueryResult(node, label, conf if label >= 0 else 0.0, raw, ranked or None)
        return "jsonl:" + hashlib.sha256(data).hexdigest()

    @staticmethod
    def _label_id(value: Any, lookup: dict[str, int], num_classes: int, where: str) -> int:
        if value is None:
            return -1
        if isinstance(value, bool):
            raise ValueError(f"{where}: label {value!r} is neither a class id nor a class name")
        if isinstance(value, int):
            if not -1 <= value < num_classes:
                raise ValueError(f"{where}: label id {value} is outside -1..{num_classes - 1}")
            return value
        if isinstance(value, str):
            # an unknown name is an invalid answer, never a guess
            return lookup.get(normalise_name(value), -1)
        raise ValueError(f"{where}: label {value!r} is neither a class id nor a class name")

    # ------------------------------------------------------------------------------------ Annotator API
    @property
    def available_nodes(self) -> np.ndarray:
        """Sorted ids of the nodes that have a stored answer."""
        return np.asarray(sorted(self._table), dtype=np.int64)

    def prompt_for(self, node: int) -> str:
        return self._source

    def _query(self, nodes: list[int]) -> Iterable[QueryResult]:
        absent = [n for n in nodes if n not in self._table]
        if absent and self.missing == "error":
            raise ValueError(
                f"{self.model_name} has no stored answer for {len(absent)} requested node(s) of "
                f"{self.dataset_name!r}, e.g. {absent[:10]}; annotate only `available_nodes` "
                "or pass missing='invalid'"
            )
        for n in nodes:
            if n in self._table:
                yield self._table[n]
            else:
                yield QueryResult(n, -1, 0.0, "no stored answer", None, cacheable=False)
