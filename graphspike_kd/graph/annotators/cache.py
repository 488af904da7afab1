"""Append-only JSONL cache of annotations, shared by every annotator backend.

One line per answered query::

    {"dataset": "citeseer", "node": 17, "prompt_hash": "3f1c…", "model": "SmolLM2-135M-Instruct",
     "label": 2, "confidence": 0.61, "raw": "…", "ranked": [2, 0, 5]}

The key is ``(dataset, node, prompt_hash, model)``: change the prompt template, the neighbour context, the
class descriptions or the model and the old answers no longer match, so they are queried again (and the
old lines stay in the file, harmless). Each record is written and flushed as soon as the backend returns
it, and :meth:`AnnotationCache.sync` ``fsync``\\ s the file at batch boundaries, so a run killed midway
loses at most the record being written.

Several processes may share one file. Writers append whole lines, one ``write`` each, under an advisory
lock (``fcntl.flock``, POSIX). Opening a cache only reads it: an unterminated last line (a writer in the
middle of its write, or one killed there) is skipped in memory and the file is left as it is. The only
repair, cutting a partial record left by a killed writer, is done by a writer holding the lock, right
before it appends, and only when the file is recognisably an annotation cache (its complete lines are
records and the partial line starts like one); any other file is refused, unchanged. A malformed line
anywhere but at the end raises :class:`ValueError` naming the file and line, because it means the file
was edited or an incompatible writer shared it.

Nothing secret is ever written: records hold the answer, never the request headers or API keys.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

__all__ = ["AnnotationCache", "CacheKey", "CacheRecord"]

CacheKey = tuple[str, int, str, str]
"""``(dataset, node, prompt_hash, model)``."""


@dataclass(frozen=True)
class CacheRecord:
    """One cached answer. ``label`` is ``-1`` when the response named no valid class."""

    dataset: str
    node: int
    prompt_hash: str
    model: str
    label: int
    confidence: float
    raw: str
    ranked: tuple[int, ...] | None = None

    @property
    def key(self) -> CacheKey:
        return (self.dataset, self.node, self.prompt_hash, self.model)

    def to_json(self) -> str:
        payload: dict[str, Any] = {
            "dataset": self.dataset,
            "node": self.node,
            "prompt_hash": self.prompt_hash,
            "model": self.model,
            "label": self.label,
            "confidence": self.confidence,
            "raw": self.raw,
        }
        if self.ranked is not None:
            payload["ranked"] = list(self.ranked)
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, obj: dict[str, Any], where: str) -> CacheRecord:
        try:
            ranked = obj.get("ranked")
            record = cls(
                dataset=str(obj["dataset"]),
                node=int(obj["node"]),
                prompt_hash=str(obj["prompt_hash"]),
                model=str(obj["model"]),
                label=int(obj["label"]),
                confidence=float(obj["confidence"]),
                raw=str(obj["raw"]),
                ranked=None if ranked is None else tuple(int(r) for r in ranked),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: not a valid annotation record ({exc!r}): {obj!r:.200}") from exc
        if record.label < -1:
            raise ValueError(f"{where}: label must be >= -1 (-1 = invalid response), got {record.label}")
        if not (0.0 <= record.confidence <= 1.0) or math.isnan(record.confidence):
            raise ValueError(f"{where}: confidence must lie in [0, 1], got {record.confidence}")
        return record


class AnnotationCache:
    r"""Persistent, append-only JSONL store of :class:`CacheRecord`\ s.

    Records are keyed by ``(dataset, node, prompt_hash, model)``.

    Args:
        path (str or Path, optional): the JSONL file (created with its parent folders on first write).
            ``None`` keeps the records in memory only. (default: :obj:`None`)
        fsync (bool): ``fsync`` the file in :meth:`sync` (called by annotators after every batch) in
            addition to the per-record flush. (default: :obj:`True`)

    If the same key appears more than once in the file (e.g. two files concatenated), the last line wins.
    Writers append whole lines with one ``write`` call under an advisory lock where the platform has
    ``fcntl``, so two processes sharing a file do not interleave lines.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, fsync: bool = True) -> None:
        self.path = None if path is None else Path(path)
        self.fsync = fsync
        self._records: dict[CacheKey, CacheRecord] = {}
        self._handle: BinaryIO | None = None
        self.n_loaded = 0
        if self.path is not None and self.path.exists():
            self._load()

    # ----------------------------------------------------------------------------------------- reading
    def _load(self) -> None:
        """Read every complete record; never modify the file (an unterminated last line is skipped)."""
        assert self.path is not None
        data = self.path.read_bytes()
        if not data:
            return
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # tail is b"" when the file ends with a newline
        for lineno, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            record = _parse_line(line, f"{self.path}:{lineno}")
            self._records[record.key] = record
            self.n_loaded += 1
        if tail.strip():
            where = f"{self.path}:{len(lines)}"
            try:
                record = _parse_line(tail, where)
            except ValueError:
                if not _looks_like_record(tail):
                    raise ValueError(
                        f"{where}: not an annotation cache (this line is no cache record); "
                        "the file was left unchanged"
                    ) from None
                logger.warning(
                    "%s: skipping an unterminated last line (%d bytes): a write in progress or one that "
                    "was interrupted",
                    where,
                    len(tail),
                )
            else:
                self._records[record.key] = record
                self.n_loaded += 1

    def get(self, key: CacheKey) -> CacheRecord | None:
        return self._records.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[CacheRecord]:
        return iter(self._records.values())

    def missing(self, keys: Sequence[CacheKey]) -> list[CacheKey]:
        """The keys in ``keys`` that have no record yet, in order."""
        return [k for k in keys if k not in self._records]

    # ----------------------------------------------------------------------------------------- writing
    def put(self, record: CacheRecord) -> None:
        """Store ``record``; with a file, append its line and flush before returning."""
        if self.path is not None:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "a+b")  # noqa: SIM115 - closed in close()
            line = (record.to_json() + "\n").encode("utf-8")
            _lock(self._handle)
            try:
                self._repair_tail_locked()
                self._handle.write(line)
                self._handle.flush()
            finally:
                _unlock(self._handle)
        self._records[record.key] = record

    def _repair_tail_locked(self) -> None:
        """End the file with a newline before appending (the writers' lock is held).

        An unterminated last line can only be a writer killed mid-write, since every live writer
        finishes its line before releasing the lock. A complete record missing only its newline gets
        one; a partial record is cut off. A file that is not an annotation cache raises, untouched.
        """
        assert self._handle is not None and self.path is not None
        fd = self._handle.fileno()
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        start = _line_start(fd, size)
        tail = os.pread(fd, size - start, start)
        if start > 0:
            previous_start = _line_start(fd, start - 1)
            previous = os.pread(fd, start - 1 - previous_start, previous_start)
            if previous.strip():
                _parse_line(previous, f"{self.path}: the line before the last")  # raises if not ours
        try:
            _parse_line(tail, f"{self.path}: last line")
        except ValueError:
            if not _looks_like_record(tail):
                raise ValueError(
                    f"{self.path}: not an annotation cache (its last line is no cache record); "
                    "the file was left unchanged"
                ) from None
            logger.warning(
                "%s: cutting a partial last record (%d bytes at offset %d) left by an interrupted write",
                self.path,
                len(tail),
                start,
            )
            os.ftruncate(fd, start)
        else:
            self._handle.write(b"\n")  # a whole record that lacked only its newline
            self._handle.flush()

    def sync(self) -> None:
        """Flush, and ``fsync`` when enabled, so that records survive an OS crash as well."""
        if self._handle is not None:
            self._handle.flush()
            if self.fsync:
                os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self.sync()
            self._handle.close()
            self._handle = None

    def __enter__(self) -> AnnotationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        return f"{type(self).__name__}({where}, records={len(self)})"


def _parse_line(line: bytes, where: str) -> CacheRecord:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ValueError(
            f"{where}: malformed JSON in the annotation cache ({exc}); only the last line may be "
            "truncated. Fix or delete that line."
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object (an annotation record), got {type(obj).__name__}")
    return CacheRecord.from_dict(obj, where)


def _line_start(fd: int, end: int, block: int = 65536) -> int:
    """Offset where the line that ends at byte ``end`` (exclusive) begins, scanning backwards."""
    pos = end
    while pos > 0:
        lo = max(0, pos - block)
        cut = os.pread(fd, pos - lo, lo).rfind(b"\n")
        if cut >= 0:
            return lo + cut + 1
        pos = lo
    return 0


def _looks_like_record(fragment: bytes) -> bool:
    """Whether ``fragment`` can be the start of a line :meth:`CacheRecord.to_json` writes."""
    head = b'{"dataset":'
    fragment = fragment[: len(head)]
    return head.startswith(fragment) or fragment.startswith(head) if fragment else False


try:  # advisory locking: POSIX only
    import fcntl

    def _lock(handle: Any) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)

    def _unlock(handle: Any) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows

    def _lock(handle: Any) -> None:
        return None

    def _unlock(handle: Any) -> None:
        return None
