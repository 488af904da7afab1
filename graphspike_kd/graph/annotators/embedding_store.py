"""On-disk store of text embeddings keyed by ``sha256(model, text)``.

Each call of :meth:`EmbeddingStore.put` that adds new vectors writes one ``.npz`` shard
(``keys``: fixed-width ASCII hashes, ``vectors``: float32 ``[n, d]``) atomically (temporary file +
``os.replace``), so a killed run leaves only complete shards and the next run re-encodes only the texts
it has not seen. Shards are plain arrays, loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .base import stable_hash

__all__ = ["EmbeddingStore"]


class EmbeddingStore:
    """Text → vector store for one model, persisted under ``root/<model slug>/`` (memory if ``root`` is None).

    Args:
        root (str or Path, optional): parent folder of the per-model shard folders.
        model_name (str): the encoder's name; part of every key and of the folder name.
    """

    def __init__(self, root: str | os.PathLike[str] | None, model_name: str) -> None:
        self.model_name = model_name
        self.folder = None if root is None else Path(root) / re.sub(r"[^A-Za-z0-9._-]+", "_", model_name)
        self._vectors: dict[str, np.ndarray] = {}
        if self.folder is not None and self.folder.is_dir():
            for shard in sorted(self.folder.glob("*.npz")):
                with np.load(shard, allow_pickle=False) as z:
                    keys, vectors = z["keys"], z["vectors"]
                    if keys.shape[0] != vectors.shape[0]:
                        raise ValueError(f"{shard}: {keys.shape[0]} keys but {vectors.shape[0]} vectors")
                    for k, v in zip(keys.tolist(), vectors, strict=True):
                        self._vectors[k] = v

    def key(self, text: str) -> str:
        return stable_hash(self.model_name, text)

    def __len__(self) -> int:
        return len(self._vectors)

    def embed(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """float32 ``[len(texts), d]`` embeddings, calling ``encode`` only on texts not stored yet."""
        keys = [self.key(t) for t in texts]
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in self._vectors and k not in todo:
                todo[k] = t
        if todo:
            vectors = np.asarray(encode(list(todo.values())), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(todo):
                raise ValueError(f"encoder returned shape {vectors.shape} for {len(todo)} texts")
            self._put(list(todo), vectors)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys]).astype(np.float32, copy=False)

    def _put(self, keys: list[str], vectors: np.ndarray) -> None:
        for k, v in zip(keys, vectors, strict=True):
            self._vectors[k] = v
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = stable_hash(*keys)[:32] + ".npz"
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, keys=np.asarray(keys, dtype="U64"), vectors=vectors)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.folder or 'memory'}, vectors={len(self)})"
