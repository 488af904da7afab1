from __future__ import annotations

import logging

import numpy as np
import pytest

from graphspike_kd.graph.annotators import (
    AnnotationCache,
    Annotations,
    Annotator,
    AnnotatorError,
    QueryResult,
    available_annotators,
    get_annotator,
)


def test_annotations_fields_and_invalid_count():
    ann = Annotations(
        node_ids=[3, 1, 3],
        labels=[2, -1, 2],
        confidence=[0.5, 0.0, 0.5],
        raw=["a", "b", "a"],
    )
    assert ann.node_ids.dtype == np.int64 and ann.labels.dtype == np.int64
    assert ann.confidence.dtype == np.float32
    assert ann.n_invalid == 1 and len(ann) == 3
    assert ann.valid.tolist() == [True, False, True]
    # invalid answers count as wrong: y[3] = 2 matches twice, node 1 is invalid
    assert ann.accuracy(np.array([0, 7, 0, 2])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        ann.labels[0] = 5  # read-only
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass raises FrozenInstanceError
        ann.labels = np.zeros(3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": [0, 1]}, "disagree in length"),
        ({"labels": [0, -2, 1]}, ">= -1"),
        ({"confidence": [0.1, 1.5, 0.2]}, r"\[0, 1\]"),
        ({"ranked": [[0], [1]]}, "ranked must have shape"),
    ],
)
def test_annotations_reject_bad_fields(kwargs, match):
    base = {"node_ids": [0, 1, 2], "labels": [0, 1, 2], "confidence": [0.1, 0.2, 0.3], "raw": ["", "", ""]}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Annotations(**base)


class ScriptedAnnotator(Annotator):
    """Answers node n with class n % C; records every node it is asked about; can fail after N answers."""

    backend = "scripted"

    def __init__(self, *, fail_after: int | None = None, prompt_suffix: str = "", **kwargs):
        kwargs.setdefault("dataset_name", "toy")
        kwargs.setdefault("class_names", ["a", "b", "c"])
        kwargs.setdefault("model_name", "scripted-1")
        kwargs.setdefault("num_nodes", 50)
        kwargs.setdefault("progress", False)
        super().__init__(**kwargs)
        self.fail_after = fail_after
        self.prompt_suffix = prompt_suffix
        self.asked: list[int] = []

    def prompt_for(self, node: int) -> str:
        return f"classify node {node}{self.prompt_suffix}"

    def _query(self, nodes):
        for i, n in enumerate(nodes):
            if self.fail_after is not None and i == self.fail_after:
                raise AnnotatorError(f"simulated backend failure after {i} answers")
            self.asked.append(n)
            label = -1 if n % 7 == 6 else n % 3
            yield QueryResult(n, label, 0.5 if label >= 0 else 0.0, f"answer {label}")


def _cache_lines(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_interrupted_run_resumes_with_only_missing_nodes(tmp_path):
    """Acceptance: interrupted after N records, the rerun queries only the missing nodes; no dup or loss."""
    path = tmp_path / "cache.jsonl"
    nodes = np.arange(0, 40, dtype=np.int64)
    first = ScriptedAnnotator(cache=path, fail_after=13)
    with pytest.raises(AnnotatorError, match="after 13"):
        first.annotate(nodes)
    first.close()
    assert len(_cache_lines(path)) == 13  # everything answered before the failure is on disk

    second = ScriptedAnnotator(cache=path)
    out = second.annotate(nodes)
    assert second.asked == list(range(13, 40))  # exactly the missing nodes, in order
    second.close()

    records = _cache_lines(path)
    keys = [(r["dataset"], r["node"], r["prompt_hash"], r["model"]) for r in records]
    assert len(keys) == len(set(keys)) == 40  # no duplicate, no lost record
    assert sorted(r["node"] for r in records) == list(range(40))

    reference = ScriptedAnnotator().annotate(nodes)  # uninterrupted, in memory
    np.testing.assert_array_equal(out.labels, reference.labels)
    np.testing.assert_array_equal(out.confidence, reference.confidence)
    assert out.raw == reference.raw

    third = ScriptedAnnotator(cache=path)
    third.annotate(nodes[::-1])
    assert third.asked == []  # fully cached now


KILL_SCRIPT = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from tests.graph.annotators.test_base import ScriptedAnnotator

class Killed(ScriptedAnnotator):
    def _query(self, nodes):
        for i, r in enumerate(super()._query(nodes)):
            if i == 9:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally, no flush at exit
            yield r

Killed(cache=sys.argv[2], sync_every=1000).annotate(list(range(30)))
"""


def test_killed_process_loses_no_record(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    path = tmp_path / "cache.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(root), str(path)], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert [r["node"] for r in _cache_lines(path)] == list(range(9))
    rerun = ScriptedAnnotator(cache=path)
    rerun.annotate(list(range(30)))
    assert rerun.asked == list(range(9, 30))


def test_cache_key_covers_prompt_and_model(tmp_path):
    path = tmp_path / "cache.jsonl"
    ScriptedAnnotator(cache=path).annotate([1, 2])
    same = ScriptedAnnotator(cache=path)
    same.annotate([1, 2])
    assert same.asked == []
    other_prompt = ScriptedAnnotator(cache=path, prompt_suffix=" with neighbours")
    other_prompt.annotate([1, 2])
    assert other_prompt.asked == [1, 2]
    other_model = ScriptedAnnotator(cache=path, model_name="scripted-2")
    other_model.annotate([1])
    assert other_model.asked == [1]
    other_dataset = ScriptedAnnotator(cache=path, dataset_name="toy2")
    other_dataset.annotate([1])
    assert other_dataset.asked == [1]


def test_truncated_last_line_is_skipped_and_cut_by_the_next_writer(tmp_path, caplog):
    path = tmp_path / "cache.jsonl"
    ScriptedAnnotator(cache=path).annotate([0, 1, 2])
    with open(path, "ab") as fh:
        fh.write(b'{"dataset":"toy","node":3,"prompt_ha')  # a write cut short by a kill
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        rerun = ScriptedAnnotator(cache=path)
    assert "unterminated last line" in caplog.text
    assert path.read_bytes() == before  # opening only reads; the writer repairs, under the lock
    out = rerun.annotate([0, 1, 2, 3, 4])
    assert "cutting a partial last record" in caplog.text
    assert rerun.asked == [3, 4]
    assert out.labels.tolist() == [0, 1, 2, 0, 1]
    assert [r["node"] for r in _cache_lines(path)] == [0, 1, 2, 3, 4]
    assert len(AnnotationCache(path)) == 5


def test_malformed_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    ScriptedAnnotator(cache=path).annotate([0, 1])
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"cache\.jsonl:2"):
        AnnotationCache(path)


def test_invalid_answers_are_counted_and_logged_once(caplog):
    ann = ScriptedAnnotator()
    with caplog.at_level(logging.WARNING):
        out = ann.annotate([5, 6, 13, 20])  # 6, 13 and 20 are invalid (n % 7 == 6)
    assert out.labels.tolist() == [2, -1, -1, -1]
    assert out.n_invalid == 3 and out.confidence.tolist() == [0.5, 0.0, 0.0, 0.0]
    warnings = [r for r in caplog.records if "no valid class" in r.getMessage()]
    assert len(warnings) == 1 and "3 of 4" in warnings[0].getMessage()


def test_duplicates_in_request_are_queried_once():
    ann = ScriptedAnnotator()
    out = ann.annotate(np.array([4, 4, 2, 4]))
    assert ann.asked == [4, 2]
    assert out.node_ids.tolist() == [4, 4, 2, 4] and out.labels.tolist() == [1, 1, 2, 1]


@pytest.mark.parametrize("bad", [[-1], [50], [[1, 2]], [0.5]])
def test_bad_node_ids_raise(bad):
    with pytest.raises(ValueError, match="node ids out of range|1-D|integers"):
        ScriptedAnnotator().annotate(np.asarray(bad))


def test_backend_answering_wrong_node_or_label_raises():
    class Liar(ScriptedAnnotator):
        def _query(self, nodes):
            yield QueryResult(nodes[0], 7, 0.5, "label out of range")

    with pytest.raises(AnnotatorError, match="label 7"):
        Liar().annotate([0])

    class Stranger(ScriptedAnnotator):
        def _query(self, nodes):
            yield QueryResult(49, 0, 0.5, "not asked")

    with pytest.raises(AnnotatorError, match="not asked"):
        Stranger().annotate([0])


def test_get_annotator_lists_backends():
    assert {"cached", "embedding", "hf", "openai"} <= set(available_annotators())
    with pytest.raises(ValueError, match="available: .*cached.*embedding.*hf.*openai"):
        get_annotator("gpt-9")


def test_empty_request_returns_empty_annotations():
    ann = ScriptedAnnotator()
    out = ann.annotate([])
    assert len(out) == 0 and out.n_invalid == 0 and ann.asked == []
    assert out.labels.dtype == np.int64 and out.ranked is None
