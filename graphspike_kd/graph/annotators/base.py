"""The annotator interface: :class:`Annotations`, :class:`Annotator` and :func:`get_annotator`.

An annotator maps node ids to a predicted class, a confidence and the raw response::

    >>> ann = get_annotator("cached", dataset=data)        # shipped GPT-3.5 predictions of Cora
    >>> out = ann.annotate([0, 5, 7])
    >>> out.labels, out.confidence, out.n_invalid

Every backend answers through the same path (:meth:`Annotator.annotate`): the request is split into
nodes already in the :class:`~graphspike_kd.graph.annotators.cache.AnnotationCache` and missing nodes;
only the missing ones reach the backend (:meth:`Annotator._query`), and each answer is appended to the
cache and flushed the moment it arrives. A run killed midway therefore loses nothing, and rerunning the
same call queries exactly the nodes that were not answered yet.

A response that names no valid class gets label ``-1``. It is never mapped to a class; it is counted
(:attr:`Annotations.n_invalid`) and reported once per call through :mod:`logging`.
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphspike_kd._cache import cache_root

from .cache import AnnotationCache, CacheKey, CacheRecord
from .prompts import PROMPT_VERSION

logger = logging.getLogger(__name__)

__all__ = [
    "Annotations",
    "Annotator",
    "AnnotatorError",
    "QueryResult",
    "available_annotators",
    "dataset_fields",
    "get_annotator",
    "register_annotator",
]


class AnnotatorError(RuntimeError):
    """A backend could not produce an answer (server unreachable after retries, model failure, ...)."""


@dataclass(frozen=True)
class Annotations:
    """Answers for ``M`` requested nodes, in request order.

    Attributes:
        node_ids (np.ndarray): int64 ``[M]`` node ids, as requested (duplicates kept).
        labels (np.ndarray): int64 ``[M]`` predicted class ids; ``-1`` where the response named no
            valid class (or no text was available to ask about).
        confidence (np.ndarray): float32 ``[M]`` in ``[0, 1]``; ``0`` for invalid answers.
        raw (list[str]): the raw response per node (reply text, ranked class names, scores as JSON).
        ranked (np.ndarray, optional): int64 ``[M, K]`` class ids ranked best first, ``-1`` padded, for
            backends that rank classes; :obj:`None` otherwise.
        model_name (str): the model that produced the answers.
        dataset_name (str): the dataset they are about.
    """

    node_ids: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    raw: list[str]
    ranked: np.ndarray | None = None
    model_name: str = ""
    dataset_name: str = ""

    def __post_init__(self) -> None:
        node_ids = np.asarray(self.node_ids, dtype=np.int64).reshape(-1)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        m = node_ids.shape[0]
        if labels.shape[0] != m or confidence.shape[0] != m or len(self.raw) != m:
            raise ValueError(
                f"Annotations fields disagree in length: node_ids {m}, labels {labels.shape[0]}, "
                f"confidence {confidence.shape[0]}, raw {len(self.raw)}"
            )
        if m and labels.min() < -1:
            raise ValueError(f"labels must be >= -1 (-1 = invalid), got min {labels.min()}")
        if m and (not np.isfinite(confidence).all() or confidence.min() < 0 or confidence.max() > 1):
            raise ValueError(
                f"confidence must lie in [0, 1], got range [{confidence.min()}, {confidence.max()}]"
            )
        arrays: dict[str, np.ndarray] = {"node_ids": node_ids, "labels": labels, "confidence": confidence}
        if self.ranked is not None:
            ranked = np.asarray(self.ranked, dtype=np.int64)
            if ranked.ndim != 2 or ranked.shape[0] != m:
                raise ValueError(f"ranked must have shape [M={m}, K], got {tuple(ranked.shape)}")
            arrays["ranked"] = ranked
        for name, arr in arrays.items():
            arr = arr.copy()
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "raw", list(self.raw))

    def __len__(self) -> int:
        return int(self.node_ids.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """Boolean ``[M]`` mask of answers that named a valid class."""
        return self.labels >= 0

    @property
    def n_invalid(self) -> int:
        """Number of answers that named no valid class (label ``-1``)."""
        return int((self.labels < 0).sum())

    def accuracy(self, y_true: Any) -> float:
        """Fraction of the ``M`` answers equal to ``y_true[node_ids]``; an invalid answer counts as wrong.

        ``y_true`` is indexed by node id (e.g. ``data.y``), tensor or array.
        """
        y = np.asarray(y_true.cpu() if hasattr(y_true, "cpu") else y_true).reshape(-1)
        if len(self) == 0:
            raise ValueError("accuracy of an empty set of annotations is undefined")
        return float((self.labels == y[self.node_ids]).mean())

    def summary(self) -> str:
        return (
            f"{self.model_name or 'annotator'} on {self.dataset_name or 'dataset'}: {len(self)} answers, "
            f"{self.n_invalid} invalid (no valid class named)"
        )

    def __repr__(self) -> str:
        return f"Annotations(n={len(self)}, n_invalid={self.n_invalid}, model={self.model_name!r})"


@dataclass(frozen=True)
class QueryResult:
    """One backend answer for one node, before it is keyed and cached.

    ``cacheable=False`` marks an answer that must not be stored (e.g. a transient server error turned
    into an invalid label with ``on_error="invalid"``), so that a rerun asks again.
    """

    node: int
    label: int
    confidence: float
    raw: str
    ranked: tuple[int, ...] | None = None
    cacheable: bool = True


def dataset_fields(dataset: Any) -> dict[str, Any]:
    """Read ``name``, ``class_names``, ``texts`` and ``num_nodes`` from a PyG ``Data`` (or any object).

    Raises:
        ValueError: ``name`` or ``class_names`` is missing.
    """
    name = getattr(dataset, "name", None)
    class_names = getattr(dataset, "class_names", None)
    if not name:
        raise ValueError("the dataset has no `name` attribute; it is part of every cache key")
    if class_names is None or len(class_names) == 0:
        raise ValueError(f"dataset {name!r} has no `class_names`; annotators need the list of classes")
    texts = getattr(dataset, "texts", None)
    num_nodes = getattr(dataset, "num_nodes", None)
    if num_nodes is None and texts is not None:
        num_nodes = len(texts)
    return {
        "name": str(name),
        "class_names": [str(c) for c in class_names],
        "texts": texts,
        "num_nodes": num_nodes,
    }


def stable_hash(*parts: str) -> str:
    """Hex sha256 of the parts joined by NUL bytes (stable across processes and Python versions)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def default_cache_path(backend: str) -> Path:
    """``<cache_root()>/annotations/<backend>.jsonl``: where LLM backends persist answers by default."""
    return cache_root() / "annotations" / f"{backend}.jsonl"


def resolve_cache(cache: Any, backend: str) -> AnnotationCache:
    """``"default"`` → :func:`default_cache_path`; a path → that file; :obj:`None` → memory only."""
    if isinstance(cache, AnnotationCache):
        return cache
    if isinstance(cache, str) and cache == "default":
        return AnnotationCache(default_cache_path(backend))
    return AnnotationCache(cache)


class Annotator(abc.ABC):
    """Base class of every annotator backend.

    Subclasses implement :meth:`prompt_for` (the exact model input for a node, which is hashed into the
    cache key together with :meth:`config_fingerprint`) and :meth:`_query` (answer a list of uncached
    nodes, yielding one :class:`QueryResult` per node as soon as it is known).

    Args:
        dataset_name (str): dataset name, part of every cache key.
        class_names (Sequence[str]): the ``C`` classes; valid labels are ``0 .. C-1``.
        model_name (str): model identifier, part of every cache key.
        num_nodes (int, optional): number of nodes; requests outside ``[0, num_nodes)`` raise.
        cache (AnnotationCache or path, optional): where answers persist. A path opens (or creates) a JSONL
            file; ``"default"`` uses :func:`default_cache_path` (``$GRAPHSPIKE_KD_CACHE`` or
            ``~/.cache/graphspike_kd``); :obj:`None` keeps answers in memory for the lifetime of the
            annotator. (default: :obj:`None`; the LLM backends default to ``"default"``)
        progress (bool): show a tqdm bar while querying. (default: :obj:`True`)
        sync_every (int): ``fsync`` the cache after this many new records (each record is flushed
            anyway). (default: :obj:`64`)
    """

    #: registry name of the backend ("cached", "embedding", "hf", "openai")
    backend: str = ""

    def __init__(
        self,
        *,
        dataset_name: str,
        class_names: Sequence[str],
        model_name: str,
        num_nodes: int | None = None,
        cache: AnnotationCache | str | os.PathLike[str] | None = None,
        progress: bool = True,
        sync_every: int = 64,
    ) -> None:
        if not class_names:
            raise ValueError("class_names is empty")
        self.dataset_name = str(dataset_name)
        self.class_names = [str(c) for c in class_names]
        self.model_name = str(model_name)
        self.num_nodes = None if num_nodes is None else int(num_nodes)
        self.cache = resolve_cache(cache, self.backend)
        self.progress = progress
        self.sync_every = max(1, int(sync_every))
        #: number of nodes sent to the backend so far (cache hits excluded)
        self.n_queried = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --------------------------------------------------------------------------------- to implement
    @abc.abstractmethod
    def prompt_for(self, node: int) -> str:
        """The exact input the backend sends for ``node`` (text, neighbour context, template)."""

    def config_fingerprint(self) -> str:
        """Settings besides the prompt that change the answer (class list, temperature, ...)."""
        return "\x1f".join(self.class_names)

    @abc.abstractmethod
    def _query(self, nodes: list[int]) -> Iterable[QueryResult]:
        """Answer ``nodes`` (none of them cached), yielding one result per node in any order."""

    # ------------------------------------------------------------------------------------- the API
    def prompt_hash(self, node: int) -> str:
        return stable_hash(PROMPT_VERSION, self.backend, self.config_fingerprint(), self.prompt_for(node))

    def cache_key(self, node: int) -> CacheKey:
        return (self.dataset_name, int(node), self.prompt_hash(node), self.model_name)

    def annotate(self, node_ids: Sequence[int] | np.ndarray) -> Annotations:
        """Annotate ``node_ids`` (1-D; duplicates allowed), querying the backend only for uncached nodes.

        Raises:
            ValueError: ``node_ids`` is not 1-D integer or holds ids outside ``[0, num_nodes)``.
            AnnotatorError: the backend failed; every answer received before the failure is cached.
        """
        nodes = self._check_nodes(node_ids)
        unique = list(dict.fromkeys(nodes.tolist()))
        keys = {n: self.cache_key(n) for n in unique}
        todo = [n for n in unique if keys[n] not in self.cache]
        for n in unique:
            cached = self.cache.get(keys[n])
            if cached is not None:
                self._check_cached(cached)
        transient: dict[int, QueryResult] = {}
        if todo:
            self._run(todo, keys, transient)
        labels, confidence, raw, ranked = [], [], [], []
        for n in nodes.tolist():
            rec: CacheRecord | QueryResult | None = self.cache.get(keys[n]) or transient.get(n)
            if rec is None:
                raise AnnotatorError(f"{type(self).__name__}: the backend returned no answer for node {n}")
            labels.append(rec.label)
            confidence.append(rec.confidence if rec.label >= 0 else 0.0)
            raw.append(rec.raw)
            ranked.append(rec.ranked)
        ranked_arr = None
        if any(r is not None for r in ranked):
            width = max(len(r) for r in ranked if r is not None)
            ranked_arr = np.full((len(ranked), max(width, 1)), -1, dtype=np.int64)
            for i, r in enumerate(ranked):
                if r:
                    ranked_arr[i, : len(r)] = r
        out = Annotations(
            node_ids=nodes,
            labels=np.asarray(labels, dtype=np.int64),
            confidence=np.asarray(confidence, dtype=np.float32),
            raw=raw,
            ranked=ranked_arr,
            model_name=self.model_name,
            dataset_name=self.dataset_name,
        )
        if out.n_invalid:
            logger.warning(
                "%s: %d of %d answers named no valid class (label -1)", self, out.n_invalid, len(out)
            )
        return out

    def _run(self, todo: list[int], keys: dict[int, CacheKey], transient: dict[int, QueryResult]) -> None:
        from tqdm.auto import tqdm

        expected = set(todo)
        bar = tqdm(
            total=len(todo),
            desc=f"annotate[{self.backend}:{self.dataset_name}]",
            disable=not self.progress,
            leave=False,
        )
        self.n_queried += len(todo)
        written = 0
        results = self._query(list(todo))
        try:
            for result in results:
                node = int(result.node)
                if node not in expected:
                    raise AnnotatorError(
                        f"{type(self).__name__} answered node {node}, which was not asked "
                        "or was answered twice"
                    )
                expected.discard(node)
                self._check_result(result)
                if result.cacheable:
                    dataset, _, phash, model = keys[node]
                    self.cache.put(
                        CacheRecord(
                            dataset,
                            node,
                            phash,
                            model,
                            int(result.label),
                            float(result.confidence),
                            result.raw,
                            result.ranked,
                        )
                    )
                    written += 1
                    if written % self.sync_every == 0:
                        self.cache.sync()
                else:
                    transient[node] = result
                bar.update(1)
        finally:
            close = getattr(results, "close", None)
            if close is not None:  # stop a generator backend (and its thread pool) now, not at GC
                close()
            bar.close()
            self.cache.sync()
        if expected:
            raise AnnotatorError(
                f"{type(self).__name__} returned no answer for {len(expected)} node(s), "
                f"e.g. {sorted(expected)[:5]}"
            )

    def _check_result(self, r: QueryResult) -> None:
        self._check_answer(r.label, r.confidence, r.ranked, f"{type(self).__name__} returned", r.node)

    def _check_cached(self, rec: CacheRecord) -> None:
        """A cached answer must be valid for this annotator's classes, exactly as a fresh one must."""
        where = f"the cache {self.cache.path or '(in memory)'} holds"
        self._check_answer(rec.label, rec.confidence, rec.ranked, where, rec.node)

    def _check_answer(
        self, label: int, confidence: float, ranked: Sequence[int] | None, who: str, node: int
    ) -> None:
        if not (-1 <= label < self.num_classes):
            raise AnnotatorError(
                f"{who} label {label} for node {node}; valid: -1 .. {self.num_classes - 1} "
                f"({self.num_classes} classes)"
            )
        if not (0.0 <= confidence <= 1.0):
            raise AnnotatorError(f"{who} confidence {confidence} for node {node}; valid: [0, 1]")
        if ranked is not None and any(not (0 <= int(c) < self.num_classes) for c in ranked):
            raise AnnotatorError(
                f"{who} ranked classes {list(ranked)[:10]} for node {node}; valid ids: "
                f"0 .. {self.num_classes - 1} ({self.num_classes} classes)"
            )

    def _check_nodes(self, node_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        if hasattr(node_ids, "detach"):
            node_ids = node_ids.detach().cpu().numpy()  # a torch tensor
        arr = np.asarray(node_ids)
        if arr.ndim != 1:
            raise ValueError(f"node_ids must be 1-D, got shape {tuple(arr.shape)}")
        if arr.size == 0:
            return arr.astype(np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"node_ids must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.min() < 0 or (self.num_nodes is not None and arr.max() >= self.num_nodes):
            bad = arr[(arr < 0) | (arr >= (self.num_nodes or np.iinfo(np.int64).max))]
            raise ValueError(
                f"node ids out of range [0, {self.num_nodes}) for dataset {self.dataset_name!r}: "
                f"{bad[:5].tolist()}"
            )
        return arr

    def close(self) -> None:
        """Close the cache file (answers already on disk stay there)."""
        self.cache.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dataset={self.dataset_name!r}, model={self.model_name!r})"


# ------------------------------------------------------------------------------------------- registry
_BACKENDS: dict[str, str] = {
    "cached": "graphspike_kd.graph.annotators.cached:CachedAnnotator",
    "embedding": "graphspike_kd.graph.annotators.embedding:EmbeddingAnnotator",
    "hf": "graphspike_kd.graph.annotators.hf:HFAnnotator",
    "openai": "graphspike_kd.graph.annotators.openai_http:OpenAIAnnotator",
    "oracle": "graphspike_kd.graph.annotators.oracle:OracleAnnotator",
}
_EXTRA: dict[str, type[Annotator]] = {}


def register_annotator(name: str, cls: type[Annotator]) -> None:
    """Make ``cls`` available as ``get_annotator(name, ...)``."""
    key = name.lower()
    if key in _BACKENDS or (key in _EXTRA and _EXTRA[key] is not cls):
        raise ValueError(f"an annotator named {key!r} is already registered")
    _EXTRA[key] = cls


def available_annotators() -> list[str]:
    """Sorted names accepted by :func:`get_annotator`."""
    return sorted([*_BACKENDS, *_EXTRA])


def get_annotator(name: str, **kwargs: Any) -> Annotator:
    """Build the annotator backend ``name`` ("cached", "embedding", "hf", "openai", "oracle") with ``kwargs``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
    """
    key = str(name).lower()
    if key in _EXTRA:
        return _EXTRA[key](**kwargs)
    if key not in _BACKENDS:
        raise ValueError(f"unknown annotator {name!r}; available: {', '.join(available_annotators())}")
    module_name, cls_name = _BACKENDS[key].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**kwargs)


class NodeTextPrompting:
    """What the prompting backends (``hf``, ``openai``) share: a node's text and its neighbour context.

    Expects ``texts`` (list of str or None), ``neighbours`` (None, a mapping node -> ids, or a callable)
    and ``max_neighbours`` on the instance.
    """

    texts: Sequence[str | None]
    neighbours: Any
    max_neighbours: int

    def context_nodes(self, node: int) -> list[int]:
        """Neighbour ids for the prompt: de-duplicated, never the node itself, at most ``max_neighbours``."""
        if self.neighbours is None:
            return []
        found = self.neighbours(node) if callable(self.neighbours) else self.neighbours.get(node, ())
        ids = [int(v) for v in (found.tolist() if hasattr(found, "tolist") else found)]
        return [v for v in dict.fromkeys(ids) if v != node][: self.max_neighbours]

    def _text(self, node: int) -> str | None:
        text = self.texts[node]
        return None if text is None or not str(text).strip() else str(text)
