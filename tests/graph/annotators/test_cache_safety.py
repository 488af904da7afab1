"""The annotation cache shared by processes loses nothing, leaves foreign files alone and is range-checked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from graphspike_kd.graph.annotators import AnnotationCache, AnnotatorError, CacheRecord

from .test_base import ScriptedAnnotator

ROOT = Path(__file__).resolve().parents[3]

# A writer process: 400 records through AnnotationCache.put, and every fourth one written in two halves
# under the writers' lock with a pause between them (a large record, or a slow disk, caught mid-write).
WRITER = textwrap.dedent(
    """
    import sys, time
    from graphspike_kd.graph.annotators.cache import AnnotationCache, CacheRecord, _lock, _unlock

    cache = AnnotationCache(sys.argv[1])
    for i in range(400):
        rec = CacheRecord("toy", i, "h", "writer", i % 3, 0.5, "x" * 2000)
        if i % 4:
            cache.put(rec)
            continue
        cache.put(CacheRecord("toy", 10_000 + i, "h", "writer", 0, 0.5, "warm"))  # opens the handle
        line = (rec.to_json() + "\\n").encode()
        fh = cache._handle
        _lock(fh)
        try:
            fh.write(line[:700]); fh.flush()
            time.sleep(0.002)
            fh.write(line[700:]); fh.flush()
        finally:
            _unlock(fh)
    cache.close()
    """
)


def test_concurrent_writer_and_openers_lose_nothing(tmp_path):
    path = tmp_path / "shared.jsonl"
    AnnotationCache(path).put(CacheRecord("toy", -5 + 5, "h", "main", 0, 1.0, "first"))
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    )
    mine = 0
    opens = 0
    deadline = time.monotonic() + 60
    try:
        while child.poll() is None and time.monotonic() < deadline:
            reader = AnnotationCache(path)  # an opener (reader) while the writer is mid-line
            opens += 1
            if opens % 3 == 0:  # and a second writer, appending its own records
                reader.put(CacheRecord("toy", 20_000 + mine, "h", "main", 1, 1.0, "mine"))
                mine += 1
            reader.close()
    finally:
        assert child.wait(timeout=60) == 0
    final = AnnotationCache(path)
    writer_nodes = {r.node for r in final if r.model == "writer" and r.node < 10_000}
    assert writer_nodes == set(range(400))  # every record of the other process survived
    assert sum(1 for r in final if r.model == "main") == mine + 1
    assert opens > 3  # the openers really ran during the writes
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line)["dataset"] == "toy" for line in lines[:-1])


@pytest.mark.parametrize(
    "content",
    [
        b"just some notes\nwithout a final newline",
        b'{"id": 1, "text": "a json-lines file of something else"}\n{"id": 2, "te',
        b"a single unterminated line",
        b"",
    ],
)
def test_a_file_that_is_not_a_cache_is_left_untouched(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    if content:
        with pytest.raises(ValueError, match=r"notes\.txt"):
            AnnotationCache(path)
        with pytest.raises(ValueError, match=r"notes\.txt"):
            ScriptedAnnotator(cache=path)
    assert path.read_bytes() == content


def test_a_foreign_tail_appended_to_a_cache_is_refused_not_cut(tmp_path):
    path = tmp_path / "cache.jsonl"
    ScriptedAnnotator(cache=path).annotate([0, 1])
    with open(path, "ab") as fh:
        fh.write(b"someone else's log line")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not an annotation cache"):
        ScriptedAnnotator(cache=path)
    assert path.read_bytes() == before


def test_writer_repairs_only_under_the_lock_and_keeps_a_whole_record(tmp_path):
    path = tmp_path / "cache.jsonl"
    ScriptedAnnotator(cache=path).annotate([0, 1])
    whole = CacheRecord("toy", 9, "h", "m", 0, 1.0, "no newline").to_json().encode()
    with open(path, "ab") as fh:
        fh.write(whole)  # a complete record whose newline never made it
    cache = AnnotationCache(path)
    assert len(cache) == 3 and path.read_bytes().endswith(whole)  # read, not modified
    cache.put(CacheRecord("toy", 10, "h", "m", 1, 1.0, "next"))
    cache.close()
    assert len(AnnotationCache(path)) == 4
    assert path.read_text().count("\n") == 4


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("label", 99, "label 99 for node 3; valid: -1 .. 2"),
        ("label", 3, "label 3 for node 3"),
        ("ranked", [0, 7], r"ranked classes \[0, 7\]"),
    ],
)
def test_cached_answers_are_range_checked_like_fresh_ones(tmp_path, field, value, match):
    path = tmp_path / "cache.jsonl"
    ScriptedAnnotator(cache=path).annotate([0, 1, 2, 3])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[3][field] = value  # e.g. an answer stored for a graph with more classes
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    ann = ScriptedAnnotator(cache=path)
    assert ann.annotate([0, 1, 2]).labels.tolist() == [0, 1, 2]
    with pytest.raises(AnnotatorError, match=match) as info:
        ann.annotate([3])
    assert "cache.jsonl" in str(info.value)


def test_user_answer_file_that_is_not_utf8_names_the_file(tmp_path):
    from graphspike_kd.graph.annotators import CachedAnnotator

    path = tmp_path / "answers.jsonl"
    path.write_bytes(b'{"node": 0, "label": 1}\n{"node": 1, "label": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"answers\.jsonl:2: not UTF-8"):
        CachedAnnotator(dataset_name="toy", class_names=["a", "b"], path=path)


def test_repair_after_a_record_longer_than_the_scan_block(tmp_path):
    path = tmp_path / "cache.jsonl"
    with AnnotationCache(path) as cache:
        cache.put(CacheRecord("toy", 0, "h", "m", 1, 1.0, "y" * 200_000))  # a 200 KB reply
    with open(path, "ab") as fh:
        fh.write(b'{"dataset":"toy","node":1,"pro')  # killed mid-write
    with AnnotationCache(path) as cache:
        assert len(cache) == 1
        cache.put(CacheRecord("toy", 2, "h", "m", 0, 1.0, "after"))
    reopened = AnnotationCache(path)
    assert (
        sorted(r.node for r in reopened) == [0, 2] and len(reopened.get(("toy", 0, "h", "m")).raw) == 200_000
    )
