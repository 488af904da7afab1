from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from graphspike_kd.graph.annotators import CachedAnnotator, get_annotator

from .conftest import make_tag


def _ranked_tag():
    preds = torch.tensor(
        [
            [1, -1, -1],
            [3, 2, -1],
            [2, 0, 1],
            [-1, -1, -1],  # the LLM named nothing usable
            [5, -1, -1],
            [0, 4, -1],
            [0, -1, -1],
            [1, 0, -1],
        ]
    )
    return make_tag(llm_predictions=preds, llm_model="gpt-3.5-turbo (TAPE zero-shot)")


def test_shipped_predictions_labels_confidence_ranked(caplog):
    data = _ranked_tag()
    ann = get_annotator("cached", dataset=data)
    assert isinstance(ann, CachedAnnotator)
    assert ann.model_name == "gpt-3.5-turbo (TAPE zero-shot)" and ann.dataset_name == "citeseer"
    with caplog.at_level(logging.WARNING):
        out = ann.annotate(torch.arange(8))
    assert out.labels.tolist() == [1, 3, 2, -1, 5, 0, 0, 1]
    # confidence = 1 / (number of ranked classes); 0 for the invalid row
    np.testing.assert_allclose(out.confidence, [1, 1 / 2, 1 / 3, 0, 1, 1 / 2, 1, 1 / 2], rtol=1e-6)
    assert out.ranked.shape == (8, 3) and out.ranked[1].tolist() == [3, 2, -1]
    assert out.n_invalid == 1 and "1 of 8" in caplog.text
    assert out.raw[1] == "ranked: DB, IR"
    assert out.accuracy(data.y) == pytest.approx(np.mean(out.labels == data.y.numpy()))


def test_missing_predictions_is_a_clear_error():
    with pytest.raises(ValueError, match="no shipped LLM predictions"):
        get_annotator("cached", dataset=make_tag())


def test_malformed_predictions_raise():
    with pytest.raises(ValueError, match="row 1"):
        get_annotator("cached", dataset=make_tag(llm_predictions=torch.tensor([[0], [6]] + [[0]] * 6)))
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        get_annotator("cached", dataset=make_tag(llm_predictions=torch.zeros(8, dtype=torch.long)))


def test_user_jsonl_names_ids_and_invalid(tmp_path):
    path = tmp_path / "answers.jsonl"
    lines = [
        {"node": 0, "label": "Machine Learning"},  # display name
        {"node": 1, "label": "db", "confidence": 0.7},  # raw name, any case
        {"node": 2, "label": 2, "raw": "IR, surely"},
        {"node": 3, "label": "Quantum Biology"},  # no such class -> invalid, never guessed
        {"node": 4, "label": None},
        {"node": 5, "ranked": ["AI", "ML"]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ann = get_annotator("cached", dataset=make_tag(), path=path)
    assert ann.model_name == "jsonl:answers.jsonl"
    out = ann.annotate([0, 1, 2, 3, 4, 5])
    assert out.labels.tolist() == [1, 3, 2, -1, -1, 0]
    np.testing.assert_allclose(out.confidence, [1.0, 0.7, 1.0, 0.0, 0.0, 0.5])
    assert out.raw[2] == "IR, surely" and out.raw[3] == "Quantum Biology"
    assert out.n_invalid == 2
    assert ann.available_nodes.tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="no stored answer for 1"):
        ann.annotate([6])
    lenient = get_annotator("cached", dataset=make_tag(), path=path, missing="invalid")
    assert lenient.annotate([6, 0]).labels.tolist() == [-1, 1]


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"node": 0, "label": 9}', "label id 9"),
        ('{"node": 99, "label": 0}', "node 99"),
        ('{"label": 0}', "'node' key"),
        ('{"node": 0}', "'label' or 'ranked'"),
        ("{oops", "malformed JSON"),
        ('{"node": 0, "label": 0, "confidence": 2}', "outside"),
    ],
)
def test_user_jsonl_errors_name_file_and_line(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"node": 1, "label": 0}\n' + line + "\n")
    with pytest.raises(ValueError, match=match) as info:
        CachedAnnotator(make_tag(), path=path)
    assert "bad.jsonl:2" in str(info.value)


def test_cached_backend_writes_through_a_persistent_cache(tmp_path):
    cache = tmp_path / "c.jsonl"
    data = _ranked_tag()
    get_annotator("cached", dataset=data, cache=cache).annotate([0, 1])
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    assert [x["node"] for x in lines] == [0, 1] and lines[1]["ranked"] == [3, 2]
    assert all(x["dataset"] == "citeseer" and x["model"] == data.llm_model for x in lines)
    # different shipped predictions -> a different prompt hash, so the old record is not reused
    other = make_tag(llm_predictions=torch.tensor([[4]] * 8), llm_model=data.llm_model)
    out = get_annotator("cached", dataset=other, cache=cache).annotate([0])
    assert out.labels.tolist() == [4]
