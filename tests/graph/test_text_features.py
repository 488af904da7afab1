from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from graphspike_kd.graph.text_features import (
    DEFAULT_SENTENCE_MODEL,
    sentence_embeddings,
    texts_cache_key,
    tfidf_features,
)


def test_tfidf_rows_are_normalised_and_sized():
    texts = [
        "graph neural networks",
        "neural networks for graphs",
        "relational databases",
        "database queries",
    ]
    x = tfidf_features(texts, max_features=50, min_df=1)
    assert x.layout == torch.sparse_csr
    assert x.dtype == torch.float32 and x.shape[0] == 4 and x.shape[1] <= 50
    torch.testing.assert_close(x.to_dense().norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="empty"):
        tfidf_features([])


def test_tfidf_names_the_fix_when_no_term_survives():
    texts = ["graph networks", "relational databases", "spiking neurons"]  # no word in two texts
    with pytest.raises(ValueError, match="min_df=2.*pass min_df=1"):
        tfidf_features(texts)
    with pytest.raises(ValueError, match="stop words"):
        tfidf_features(["the and of", "a an the"], min_df=1)
    assert tfidf_features(texts, min_df=1).shape[0] == 3


def test_cache_key_depends_on_texts_model_and_boundaries():
    a = texts_cache_key(["ab", "c"], "m")
    assert a == texts_cache_key(["ab", "c"], "m")
    assert a != texts_cache_key(["a", "bc"], "m")
    assert a != texts_cache_key(["ab", "c"], "other")


def test_embeddings_are_read_from_the_cache_without_loading_a_model(tmp_path, monkeypatch):
    texts = ["first node", "second node"]
    cached = np.arange(6, dtype=np.float32).reshape(2, 3)
    target = tmp_path / "embeddings" / f"{texts_cache_key(texts, 'my-model')}.npy"
    target.parent.mkdir(parents=True)
    np.save(target, cached)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # importing it would now fail
    out = sentence_embeddings(texts, model="my-model", cache_dir=tmp_path)
    assert torch.equal(out, torch.from_numpy(cached))
    np.save(target, cached[:1])
    with pytest.raises(ValueError, match="delete it to recompute"):
        sentence_embeddings(texts, model="my-model", cache_dir=tmp_path)


@pytest.mark.slow
def test_minilm_embeddings_real_model_and_cache(tmp_path):
    pytest.importorskip("sentence_transformers")
    texts = ["graph neural networks for citation graphs", "a recipe for tomato soup"]
    out = sentence_embeddings(texts, cache_dir=tmp_path)
    assert out.shape == (2, 384)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    assert (tmp_path / "embeddings" / f"{texts_cache_key(texts, DEFAULT_SENTENCE_MODEL)}.npy").exists()
    torch.testing.assert_close(sentence_embeddings(texts, cache_dir=tmp_path), out)
