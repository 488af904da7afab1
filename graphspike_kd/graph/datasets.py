"""Text-attributed graphs (TAGs) shipped in ``data/``: Cora, Citeseer and the four WebKB graphs, plus a
loader for user-supplied TAGs.

Every file is verified against its SHA-256 (listed in the dataset's ``SOURCE.md``) before it is parsed; a
mismatch raises :class:`ChecksumError` naming the file. Nothing is downloaded and nothing is unpickled.

Where the data lives (first match wins):

1. the ``root`` argument of :func:`load_tag_dataset`;
2. the ``GRAPHSPIKE_KD_DATA`` environment variable (a folder holding ``cora/``, ``citeseer_tag/``, ...);
3. the package data of an installed wheel (``graphspike_kd/_data``);
4. the ``data/`` folder of a source checkout (next to the ``graphspike_kd`` package).

Every dataset is returned as a :class:`TextAttributedGraph` (a PyG :class:`~torch_geometric.data.Data`)
with ``x``, ``edge_index`` (undirected, deduplicated, no self loops), ``y``, ``class_names``, ``texts``,
``name``, and, where they exist, the Planetoid split masks and the shipped LLM predictions.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, is_undirected, remove_self_loops, to_undirected

DATA_ENV = "GRAPHSPIKE_KD_DATA"

#: Dataset name -> folder under the data root.
_FOLDERS = {
    "cora": "cora",
    "citeseer": "citeseer_tag",
    "cornell": "webkb_tag",
    "texas": "webkb_tag",
    "washington": "webkb_tag",
    "wisconsin": "webkb_tag",
}

#: SHA-256 of every file the loaders read (copied from each folder's SOURCE.md).
SHA256 = {
    "cora/linqs_cora.zip": "7f9bab9197e7754a60ae99924f551bdd2a9ed881c9576bac22251ccd1d0cad0e",
    "cora/linqs_cora.zip:cora/cora/cora.content": "b8ebed0fd45e53995abafd1b70cf6a9fcc8f86abc5826d69b97fe6ca46e9c8ee",  # noqa: E501
    "cora/linqs_cora.zip:cora/cora/cora.cites": "ec1a372391b7f0f60a6aff0084e8abd8f19f0faa7e1f2441a41c492042d5945e",  # noqa: E501
    "cora/cora_planetoid_nodes.csv": "a04deee5dc2d5ebe33f25a0961d42b3158504c075221473a19df02a8e4c5ed82",
    "cora/tape_gpt35_zero_shot_cora.csv": "25e630adc28842ba0e063aedd5aa9de85ac93e4ed748515cfa943c4381054947",
    "citeseer_tag/citeseer_texts.txt": "9070723640766aaa09875ce72397a4325feecac968ed9fb44152820b651f1f17",
    "citeseer_tag/citeseer.cites": "cd9730630eaaa745058c2cd2cce6b9afb79ca71278a479aebec55f4cf5eb7f30",
    "citeseer_tag/citeseer_planetoid_nodes.csv": "f66cf3d2dc71c65ec1f67efce1c03f86a0ad7d9ae23095904d0cfdc16beaa016",  # noqa: E501
    "webkb_tag/Cornell.csv": "9df54de8059186c5a374e8dd56076f8f3422658ad48316aba684d8ffe45b95fb",
    "webkb_tag/Texas.csv": "4769410dd18a93bf0dcda643f01061a388466130232d5d458d8669b2cf06d2a6",
    "webkb_tag/Washington.csv": "85c7ac53ff8e11c83e2d4b64f557b72233e3184ae5429056c64e4ce7a6c9b143",
    "webkb_tag/Wisconsin.csv": "49f2d7bfe9449dde2d9c583bc8a642f300b2b3de73e10e409d20cd742a5d85a8",
}

#: TAPE's GPT-3.5 zero-shot predictions index this alphabetical list of Cora classes.
_TAPE_CORA_CLASSES = (
    "Case_Based",
    "Genetic_Algorithms",
    "Neural_Networks",
    "Probabilistic_Methods",
    "Reinforcement_Learning",
    "Rule_Learning",
    "Theory",
)
CORA_LLM_MODEL = "gpt-3.5-turbo (TAPE zero-shot)"

#: WebKB classes, alphabetical (the CSV files number them differently from one file to the next).
WEBKB_CLASSES = ("course", "faculty", "project", "staff", "student")

_FEATURES = ("default", "bow", "tfidf", "minilm", "none")


class ChecksumError(ValueError):
    """A shipped data file does not have the SHA-256 recorded in the loader (and its SOURCE.md)."""


class TextAttributedGraph(Data):
    """A PyG :class:`~torch_geometric.data.Data` for text-attributed graphs.

    Attributes that a dataset may not have read as ``None`` instead of raising: ``texts`` (list of
    str), ``llm_predictions`` (LongTensor ``[N, K]`` of class ids ranked best first, padded with ``-1``),
    ``llm_model`` (str), ``train_mask`` / ``val_mask`` / ``test_mask`` (the Planetoid split, bool ``[N]``).
    ``class_names`` (list of str, indexed by the ids in ``y``) and ``name`` are always set.
    """

    _OPTIONAL = frozenset({"texts", "llm_predictions", "llm_model", "train_mask", "val_mask", "test_mask"})

    def __getattr__(self, key: str):
        try:
            return super().__getattr__(key)
        except AttributeError:
            if key in TextAttributedGraph._OPTIONAL:
                return None
            raise

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.class_names)


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_tag_dataset`."""
    return list(_FOLDERS)


def _candidate_roots() -> list[tuple[str, Path]]:
    candidates = []
    env = os.environ.get(DATA_ENV)
    if env:
        candidates.append((f"${DATA_ENV}", Path(env)))
    package_dir = Path(__file__).resolve().parents[1]
    candidates.append(("package data", package_dir / "_data"))
    candidates.append(("source checkout", package_dir.parent / "data"))
    return candidates


def data_root(root: str | os.PathLike | None = None, *, folder: str = "cora") -> Path:
    """The folder that holds the shipped datasets (see the module docstring for the search order).

    Raises:
        FileNotFoundError: no candidate holds ``folder``; the message lists every place that was tried.
    """
    if root is not None:
        path = Path(root)
        if not (path / folder).is_dir():
            raise FileNotFoundError(f"data root {path} has no '{folder}' folder (root= was given explicitly)")
        return path
    tried = []
    for label, path in _candidate_roots():
        if (path / folder).is_dir():
            return path
        tried.append(f"{label}: {path}")
    raise FileNotFoundError(
        f"cannot find the shipped dataset folder '{folder}'. "
        "Tried: " + "; ".join(tried) + f". Set {DATA_ENV} "
        "to a folder holding the repository's data/ contents (cora/, citeseer_tag/, webkb_tag/) "
        "or pass root="
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(data: bytes, key: str, where: str) -> bytes:
    expected = SHA256[key]
    actual = _sha256(data)
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {where}: sha256 {actual}, expected {expected}. The file is corrupt or "
            "was modified; restore it from the repository (its SOURCE.md gives the origin)."
        )
    return data


def _read_verified(root: Path, relpath: str) -> bytes:
    path = root / relpath
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path} (expected under data root {root})")
    return _check(path.read_bytes(), relpath, str(path))


def _undirected(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> Tensor:
    edge_index = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = to_undirected(edge_index, num_nodes=num_nodes)
    return coalesce(edge_index, num_nodes=num_nodes)


def _split_masks(splits: Sequence[str], num_nodes: int) -> dict[str, Tensor]:
    array = np.asarray(splits)
    return {f"{s}_mask": torch.from_numpy(array == s) for s in ("train", "val", "test")}


def _pad_ranks(ranked: Sequence[Sequence[int]]) -> Tensor:
    width = max(1, max(len(r) for r in ranked))
    out = torch.full((len(ranked), width), -1, dtype=torch.long)
    for i, r in enumerate(ranked):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


# ----------------------------------------------------------------------------------------------------- Cora
def _load_cora(root: Path) -> TextAttributedGraph:
    zip_path = root / "cora" / "linqs_cora.zip"
    archive = _read_verified(root, "cora/linqs_cora.zip")
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        members = {}
        for member in ("cora/cora/cora.content", "cora/cora/cora.cites"):
            members[member] = _check(zf.read(member), f"cora/linqs_cora.zip:{member}", f"{zip_path}:{member}")

    ids, class_of_row, rows = [], [], []
    for line in members["cora/cora/cora.content"].splitlines():
        parts = line.split(b"\t")
        ids.append(parts[0].decode())
        class_of_row.append(parts[-1].decode())
        rows.append(b"".join(parts[1:-1]))
    bow = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), -1) - ord("0")
    row_of_id = {paper_id: i for i, paper_id in enumerate(ids)}

    table = list(csv.DictReader(io.StringIO(_read_verified(root, "cora/cora_planetoid_nodes.csv").decode())))
    n = len(table)
    linqs_row = np.empty(n, dtype=np.int64)
    y = np.empty(n, dtype=np.int64)
    names: dict[int, str] = {}
    splits = []
    for rec in table:
        i, row = int(rec["planetoid_idx"]), int(rec["linqs_row"])
        if ids[row] != rec["linqs_paper_id"] or class_of_row[row] != rec["label_name"]:
            raise ValueError(f"cora_planetoid_nodes.csv row {i} disagrees with cora.content row {row}")
        linqs_row[i], y[i] = row, int(rec["label_planetoid"])
        names[y[i]] = rec["label_name"]
        splits.append(rec["split"])
    planetoid_of_row = np.empty(n, dtype=np.int64)
    planetoid_of_row[linqs_row] = np.arange(n)

    cites = np.array(
        [
            [row_of_id[a] for a in line.split()]
            for line in members["cora/cora/cora.cites"].decode().splitlines()
        ]
    )
    edge_index = _undirected(planetoid_of_row[cites[:, 0]], planetoid_of_row[cites[:, 1]], n)

    class_names = [names[c] for c in range(len(names))]
    tape_to_label = [class_names.index(name) for name in _TAPE_CORA_CLASSES]
    tape_lines = _read_verified(root, "cora/tape_gpt35_zero_shot_cora.csv").decode().splitlines()
    if len(tape_lines) != n:
        raise ValueError(f"tape_gpt35_zero_shot_cora.csv has {len(tape_lines)} lines, expected {n}")
    ranked_by_row = [[tape_to_label[int(t)] for t in line.split(",") if t.strip()] for line in tape_lines]
    llm_predictions = _pad_ranks([ranked_by_row[r] for r in linqs_row])

    return TextAttributedGraph(
        x=torch.from_numpy(bow[linqs_row].astype(np.float32)),
        edge_index=edge_index,
        y=torch.from_numpy(y),
        class_names=class_names,
        name="cora",
        llm_predictions=llm_predictions,
        llm_model=CORA_LLM_MODEL,
        **_split_masks(splits, n),
    )


# ------------------------------------------------------------------------------------------------- Citeseer
def _load_citeseer(root: Path) -> TextAttributedGraph:
    lines = _read_verified(root, "citeseer_tag/citeseer_texts.txt").decode("utf-8").split("\n")
    if len(lines) % 3:
        raise ValueError(f"citeseer_texts.txt has {len(lines)} lines, not a multiple of 3")
    text_of_id = {lines[i]: (lines[i + 1], lines[i + 2]) for i in range(0, len(lines), 3)}

    table = csv.DictReader(
        io.StringIO(_read_verified(root, "citeseer_tag/citeseer_planetoid_nodes.csv").decode())
    )
    kept = sorted((int(rec["planetoid_idx"]), rec) for rec in table if rec["linqs_paper_id"] in text_of_id)
    n = len(kept)
    index_of_id = {rec["linqs_paper_id"]: i for i, (_, rec) in enumerate(kept)}
    names: dict[int, str] = {}
    y, texts, splits, planetoid_idx = [], [], [], []
    for idx, rec in kept:
        text, class_name = text_of_id[rec["linqs_paper_id"]]
        if class_name != rec["label_name"]:
            raise ValueError(f"citeseer: text label {class_name!r} != Planetoid label {rec['label_name']!r}")
        y.append(int(rec["label_planetoid"]))
        names[y[-1]] = class_name
        texts.append(text)
        splits.append(rec["split"])
        planetoid_idx.append(idx)

    pairs = [
        (index_of_id[a], index_of_id[b])
        for a, b in (
            ln.split("\t")
            for ln in _read_verified(root, "citeseer_tag/citeseer.cites").decode().split("\n")
            if ln.strip()
        )
        if a in index_of_id and b in index_of_id
    ]
    src, dst = np.array(pairs).T
    return TextAttributedGraph(
        edge_index=_undirected(src, dst, n),
        y=torch.tensor(y),
        class_names=[names[c] for c in range(len(names))],
        texts=texts,
        name="citeseer",
        planetoid_idx=torch.tensor(planetoid_idx),
        num_nodes=n,
        **_split_masks(splits, n),
    )


# ---------------------------------------------------------------------------------------------------- WebKB
def _load_webkb(root: Path, name: str) -> TextAttributedGraph:
    relpath = f"webkb_tag/{name.capitalize()}.csv"
    raw = _read_verified(root, relpath).decode("utf-8")
    csv.field_size_limit(sys.maxsize)
    records = list(csv.DictReader(io.StringIO(raw, newline="")))
    n = len(records)
    src, dst, y, texts = [], [], [], []
    for i, rec in enumerate(records):
        if int(rec["node_id"]) != i:
            raise ValueError(f"{root / relpath}: node_id {rec['node_id']} on data row {i}, expected {i}")
        if rec["category"] not in WEBKB_CLASSES:
            raise ValueError(f"{root / relpath}: unknown category {rec['category']!r} on row {i}")
        y.append(WEBKB_CLASSES.index(rec["category"]))
        texts.append(rec["raw_text"])
        for j in json.loads(rec["neighbor_ids"]):
            if not 0 <= int(j) < n:
                raise ValueError(f"{root / relpath}: neighbour id {j} of node {i} is out of range [0, {n})")
            src.append(i)
            dst.append(int(j))
    return TextAttributedGraph(
        edge_index=_undirected(np.array(src), np.array(dst), n),
        y=torch.tensor(y),
        class_names=list(WEBKB_CLASSES),
        texts=texts,
        name=name,
        num_nodes=n,
    )


# ------------------------------------------------------------------------------------------------- features
def _attach_features(
    data: TextAttributedGraph,
    features: str,
    *,
    tfidf_max_features: int,
    cache_dir: str | os.PathLike | None,
    show_progress: bool,
) -> TextAttributedGraph:
    from graphspike_kd.graph import text_features

    if features not in _FEATURES:
        raise ValueError(f"unknown features={features!r}; valid: {', '.join(_FEATURES)}")
    if features == "none":
        return data
    if data.texts is None:
        if features not in ("default", "bow"):
            raise ValueError(
                f"{data.name} has no node text (only its bag of words is obtainable), "
                f"so features={features!r} "
                "is impossible; use features='bow'"
            )
        return data
    if features == "bow":
        raise ValueError(f"{data.name} ships no bag-of-words matrix; use features='tfidf' or 'minilm'")
    texts = [t if t is not None else "" for t in data.texts]  # a node without text: an empty document
    if features in ("default", "tfidf"):
        data.x = text_features.tfidf_features(texts, max_features=tfidf_max_features)
    else:
        data.x = text_features.sentence_embeddings(texts, cache_dir=cache_dir, show_progress=show_progress)
    return data


def load_tag_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    features: str = "default",
    tfidf_max_features: int = 2000,
    cache_dir: str | os.PathLike | None = None,
    show_progress: bool = False,
) -> TextAttributedGraph:
    """Load a shipped text-attributed graph.

    ============  ======  ====================  =======  ==========================================
    name          nodes   undirected edges      classes  notes
    ============  ======  ====================  =======  ==========================================
    cora          2,708   5,278                 7        1,433-d bag of words, no text; Planetoid
                                                         order, labels and split; GPT-3.5 predictions
    citeseer      3,186   4,225                 6        title + abstract; the text nodes of Planetoid
                                                         Citeseer in Planetoid order, labels and split
    cornell       191     275                   5        WebKB page text (CS-TAG)
    texas         187     298                   5
    washington    229     416                   5
    wisconsin     265     479                   5
    ============  ======  ====================  =======  ==========================================

    Args:
        name (str): one of :func:`available_datasets` (case-insensitive).
        root (path, optional): data root holding ``cora/``, ``citeseer_tag/``, ``webkb_tag/``.
            (default: ``$GRAPHSPIKE_KD_DATA``, then the package data, then the checkout's ``data/``)
        features (str, optional): ``"default"`` (bag of words for Cora, TF-IDF for text datasets),
            ``"bow"``, ``"tfidf"``, ``"minilm"`` (MiniLM sentence embeddings; needs the ``text`` extra,
            cached on disk) or ``"none"`` (no ``x``: text datasets then skip the feature computation).
            (default: ``"default"``)
        tfidf_max_features (int, optional): TF-IDF vocabulary size. (default: ``2000``)
        cache_dir (path, optional): embedding cache folder. (default: ``$GRAPHSPIKE_KD_CACHE`` or
            ``~/.cache/graphspike_kd``)
        show_progress (bool, optional): progress bar while embedding. (default: ``False``)

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names) or ``features``.
        ChecksumError: a data file does not match its recorded SHA-256 (the message names the file).
        FileNotFoundError: the data folder or a file is missing.
    """
    key = name.lower()
    if key not in _FOLDERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(available_datasets())}")
    if features not in _FEATURES:
        raise ValueError(f"unknown features={features!r}; valid: {', '.join(_FEATURES)}")
    if key == "cora" and features in ("tfidf", "minilm"):
        raise ValueError(
            f"cora has no node text (only its bag of words is obtainable), so features={features!r} "
            "is impossible; use features='bow'"
        )
    base = data_root(root, folder=_FOLDERS[key])
    if key == "cora":
        data = _load_cora(base)
    elif key == "citeseer":
        data = _load_citeseer(base)
    else:
        data = _load_webkb(base, key)
    return _attach_features(
        data,
        features,
        tfidf_max_features=tfidf_max_features,
        cache_dir=cache_dir,
        show_progress=show_progress,
    )


# ---------------------------------------------------------------------------------------------- user TAGs
def _decode(raw: bytes, path: Path) -> str:
    """``raw`` as UTF-8 text; a decoding error names the file, the line and the byte offset."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8"
        ) from None


def _read_node_records(path: Path) -> list[tuple[int, dict]]:
    """``(line number, record)`` per node of a CSV/TSV (with a header) or JSONL file."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv", ".tsv"):
        raise ValueError(f"{path}: node file must end in .csv, .tsv or .jsonl, got {suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"node file not found: {path}")
    text = _decode(path.read_bytes(), path)
    records: list[tuple[int, dict]] = []
    if suffix in (".jsonl", ".ndjson"):
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                raise ValueError(f"{path}:{lineno}: not a JSON object ({msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            records.append((lineno, obj))
        return records
    csv.field_size_limit(sys.maxsize)
    reader = csv.DictReader(
        io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",", strict=True
    )
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise ValueError(f"{path}:1: malformed header ({exc})") from None
    if not header:
        return records
    while True:
        start = reader.line_num + 1  # the physical line this row starts on
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            hint = "; a quote opened on this line is never closed" if "end of data" in str(exc) else ""
            raise ValueError(f"{path}:{start}: malformed CSV row ({exc}){hint}") from None
        if None in row:  # more fields than the header
            raise ValueError(
                f"{path}:{start}: {len(row[None])} field(s) more than the header's {len(header)}: "
                f"{row[None]!r:.80}"
            )
        records.append((start, row))
    return records


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())


def _label_ids(
    raw_labels: Sequence[Any], class_names: Sequence[str] | None, where: Callable[[int], str]
) -> tuple[list[int], list[str]]:
    """Map raw labels (class names, integer ids, or None / ``""`` / ``-1`` = unlabelled) to ids.

    Without ``class_names``, integer labels are used as they are (classes ``"0" .. "C-1"``) and string
    labels are sorted alphabetically.
    """
    labels = [
        None if lab is None or (isinstance(lab, str) and not lab.strip()) or str(lab).strip() == "-1" else lab
        for lab in raw_labels
    ]
    if class_names is None:
        present = [lab for lab in labels if lab is not None]
        if present and all(_is_int(lab) for lab in present):
            class_names = [str(c) for c in range(max(int(lab) for lab in present) + 1)]
        else:
            class_names = sorted({str(lab) for lab in present})
    class_names = [str(c) for c in class_names]
    position = {c: i for i, c in enumerate(class_names)}
    y = []
    for i, lab in enumerate(labels):
        if lab is None:
            y.append(-1)
        elif str(lab) in position:
            y.append(position[str(lab)])
        elif _is_int(lab) and 0 <= int(lab) < len(class_names):
            y.append(int(lab))
        else:
            raise ValueError(f"{where(i)}: label {lab!r} is not in class_names {class_names}")
    return y, class_names


def _node_text(value: Any, allow_missing: bool, where: str, field: str) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        if allow_missing:
            return None
        raise ValueError(
            f"{where}: no text (field {field!r} is missing, empty or null); fix the row, or pass "
            "allow_missing_text=True to keep the node without text"
        )
    raise ValueError(f"{where}: text field {field!r} must be a string, got {type(value).__name__}")


def load_custom_tag(
    nodes: str | os.PathLike,
    edges: str | os.PathLike,
    *,
    name: str = "custom",
    id_field: str = "id",
    text_field: str = "text",
    label_field: str = "label",
    class_names: Sequence[str] | None = None,
    features: str = "tfidf",
    tfidf_max_features: int = 2000,
    cache_dir: str | os.PathLike | None = None,
    allow_missing_text: bool = False,
) -> TextAttributedGraph:
    """Load a user-supplied text-attributed graph.

    ``nodes`` is a CSV/TSV (with a header) or a JSONL file with one node per record, holding ``id_field``
    (any string or int, unique), ``text_field`` and ``label_field``. A label is either a class name or an
    integer class id; an empty or missing label (or ``-1``) marks an unlabelled node (``y = -1``). Node
    order follows the file. ``edges`` is a text file with two node ids per line, separated by a comma, tab
    or spaces; blank lines and lines starting with ``#`` are skipped, and a first line whose ids are not
    node ids is taken as a header. Edges are made undirected, deduplicated and stripped of self loops.

    Every file must be UTF-8. A node without text (a missing, empty or null text field), a CSV row with
    more fields than the header and a quote that is never closed are errors naming ``file:line``.

    Args:
        nodes (path): the node file (``.csv``, ``.tsv``, ``.jsonl`` or ``.ndjson``).
        edges (path): the edge list.
        name (str, optional): the dataset name (part of every annotation cache key). (default: ``"custom"``)
        id_field, text_field, label_field (str, optional): record fields. (default: ``"id"``, ``"text"``,
            ``"label"``)
        class_names (list of str, optional): the class list; integer labels index it. Without it, string
            labels are sorted alphabetically and integer labels are used as they are. (default: ``None``)
        features (str, optional): ``"tfidf"`` or ``"minilm"``. (default: ``"tfidf"``)
        tfidf_max_features (int, optional): TF-IDF vocabulary size. (default: ``2000``)
        cache_dir (path, optional): embedding cache folder for ``"minilm"``. (default: ``None``)
        allow_missing_text (bool, optional): keep nodes without text (``texts[i] = None``; annotators
            answer them as invalid) instead of raising. (default: ``False``)

    Raises:
        ValueError: a malformed file (the message names ``file:line``), an unknown label or node id.
        FileNotFoundError: a file does not exist.
    """
    nodes, edges = Path(nodes), Path(edges)
    if features not in ("tfidf", "minilm"):
        raise ValueError(f"unknown features={features!r} for a user TAG; valid: tfidf, minilm")
    records = _read_node_records(nodes)
    if not records:
        raise ValueError(f"{nodes}: no node records")
    ids, texts = [], []
    for lineno, rec in records:
        where = f"{nodes}:{lineno}"
        if rec.get(id_field) is None or str(rec[id_field]).strip() == "":
            raise ValueError(f"{where}: no node id in field {id_field!r} (fields: {sorted(map(str, rec))})")
        ids.append(str(rec[id_field]).strip())
        texts.append(_node_text(rec.get(text_field), allow_missing_text, where, text_field))
    index: dict[str, int] = {}
    for i, node_id in enumerate(ids):
        if node_id in index:
            raise ValueError(
                f"{nodes}:{records[i][0]}: node id {node_id!r} repeats line {records[index[node_id]][0]}"
            )
        index[node_id] = i
    y, class_names = _label_ids(
        [rec.get(label_field) for _, rec in records], class_names, lambda i: f"{nodes}:{records[i][0]}"
    )

    src, dst = [], []
    if not edges.is_file():
        raise FileNotFoundError(f"edge file not found: {edges}")
    for lineno, line in enumerate(_decode(edges.read_bytes(), edges).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").replace("\t", " ").split()
        if len(parts) < 2:
            raise ValueError(f"{edges}:{lineno}: expected two node ids, got {line!r}")
        a, b = parts[0], parts[1]
        if a not in index or b not in index:
            if not src and lineno == 1:
                continue  # header line
            raise ValueError(f"{edges}:{lineno}: unknown node id {a if a not in index else b!r}")
        src.append(index[a])
        dst.append(index[b])
    n = len(records)
    edge_index = _undirected(np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), n)
    data = TextAttributedGraph(
        edge_index=edge_index,
        y=torch.tensor(y, dtype=torch.long),
        class_names=class_names,
        texts=texts,
        name=name,
        num_nodes=n,
    )
    return _attach_features(
        data, features, tfidf_max_features=tfidf_max_features, cache_dir=cache_dir, show_progress=False
    )


# ------------------------------------------------------------------------------------ users' graph objects
_ADAPTER_FEATURES = ("auto", "keep", "tfidf", "minilm")


def check_tag_graph(data: Any) -> None:
    """Check the layout every loader and adapter of this module returns, which the PKD pipeline reads.

    ``name`` (non-empty str); ``class_names`` (``C`` distinct strings); ``x`` float ``[N, F]``, finite;
    ``edge_index`` long ``[2, E]``, ids in ``[0, N)``, undirected, without self loops or duplicates;
    ``y`` long ``[N]`` in ``-1 .. C-1`` (``-1`` = unlabelled); ``texts`` None or ``N`` entries, each a
    non-empty str or None; split masks, where present, bool ``[N]``.

    Raises:
        ValueError: the first violation found, naming the attribute.
    """
    name = getattr(data, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"the graph needs a non-empty `name` (a str, part of annotation cache keys), got {name!r}"
        )
    classes = getattr(data, "class_names", None)
    if not classes or len(set(map(str, classes))) != len(classes):
        raise ValueError(f"{name}: `class_names` must be a non-empty list of distinct names, got {classes!r}")
    n = data.num_nodes
    x = getattr(data, "x", None)
    if not isinstance(x, Tensor) or x.dim() != 2 or x.size(0) != n or x.size(1) == 0:
        shape = None if not isinstance(x, Tensor) else tuple(x.shape)
        raise ValueError(f"{name}: `x` must be a [{n}, F] feature tensor with F >= 1, got {shape}")
    # sparse features (TF-IDF is CSR): their stored values are what can be non-finite
    stored = x.values() if x.layout == torch.sparse_csr else x._values() if x.is_sparse else x
    if not x.is_floating_point() or not bool(torch.isfinite(stored).all()):
        raise ValueError(f"{name}: `x` must hold finite floating-point values (dtype {x.dtype})")
    ei = data.edge_index
    if not isinstance(ei, Tensor) or ei.dtype != torch.long or ei.dim() != 2 or ei.size(0) != 2:
        raise ValueError(f"{name}: `edge_index` must be a long [2, E] tensor")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise ValueError(f"{name}: `edge_index` holds node ids outside [0, {n})")
    if bool((ei[0] == ei[1]).any()):
        raise ValueError(f"{name}: `edge_index` has self loops")
    if ei.size(1) and (not is_undirected(ei, num_nodes=n) or coalesce(ei, num_nodes=n).size(1) != ei.size(1)):
        raise ValueError(f"{name}: `edge_index` must be undirected and without duplicate edges")
    y = getattr(data, "y", None)
    if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != (n,):
        raise ValueError(
            f"{name}: `y` must be a long [{n}] tensor, got {None if y is None else (y.dtype, tuple(y.shape))}"
        )
    if y.numel() and (int(y.min()) < -1 or int(y.max()) >= len(classes)):
        raise ValueError(f"{name}: `y` must lie in -1 .. {len(classes) - 1}")
    texts = getattr(data, "texts", None)
    if texts is not None:
        if len(texts) != n:
            raise ValueError(f"{name}: {len(texts)} texts for {n} nodes")
        bad = next(
            (i for i, t in enumerate(texts) if t is not None and not (isinstance(t, str) and t.strip())), None
        )
        if bad is not None:
            raise ValueError(f"{name}: texts[{bad}] is {texts[bad]!r}; use None for a node without text")
    for mask_name in ("train_mask", "val_mask", "test_mask"):
        mask = getattr(data, mask_name, None)
        if mask is not None and (
            not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (n,)
        ):
            raise ValueError(f"{name}: `{mask_name}` must be a bool [{n}] tensor")


def _finish_adapter(
    data: TextAttributedGraph,
    features: str,
    *,
    tfidf_max_features: int,
    cache_dir: str | os.PathLike | None,
) -> TextAttributedGraph:
    if features not in _ADAPTER_FEATURES:
        raise ValueError(f"unknown features={features!r}; valid: {', '.join(_ADAPTER_FEATURES)}")
    has_x = isinstance(data.get("x"), Tensor) if "x" in data else False
    if features == "keep" or (features == "auto" and has_x):
        if not has_x:
            raise ValueError(f"{data.name}: features='keep' but the graph has no `x`")
        data.x = data.x.float()
    else:
        if data.texts is None:
            raise ValueError(f"{data.name}: no `x` and no texts to compute features={features!r} from")
        mode = "tfidf" if features == "auto" else features
        data = _attach_features(
            data, mode, tfidf_max_features=tfidf_max_features, cache_dir=cache_dir, show_progress=False
        )
    check_tag_graph(data)
    return data


def from_pyg(
    data: Data,
    *,
    texts: Sequence[str | None] | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    features: str = "auto",
    tfidf_max_features: int = 2000,
    cache_dir: str | os.PathLike | None = None,
) -> TextAttributedGraph:
    """A PyG :class:`~torch_geometric.data.Data` as a :class:`TextAttributedGraph`, ready for PKD.

    The edges are made undirected, deduplicated and stripped of self loops; ``y`` is flattened (OGB's
    ``[N, 1]``) to a long ``[N]`` with ``-1`` for unlabelled nodes (negative or NaN labels); the split
    masks and ``llm_predictions`` are kept. The input is not modified.

    Args:
        data (Data): with ``edge_index`` and ``y``; ``x`` optional (see ``features``).
        texts (list of str or None, optional): one text per node (None: a node without text).
            (default: ``data.texts`` if it exists)
        class_names (list of str, optional): class ``i``'s name. (default: ``data.class_names``, else
            ``"0" .. "C-1"``; LLM annotators need real names)
        name (str, optional): the dataset name, part of every annotation cache key.
            (default: ``data.name``, else ``"pyg"``)
        features (str, optional): ``"auto"`` (``data.x`` if present, else TF-IDF of the texts), ``"keep"``
            (``data.x``, required), ``"tfidf"`` or ``"minilm"`` (computed from the texts).
            (default: ``"auto"``)
        tfidf_max_features (int, optional), cache_dir (path, optional): as in :func:`load_tag_dataset`.

    Raises:
        ValueError: a missing or malformed attribute, named (see :func:`check_tag_graph`).
    """
    n = int(data.num_nodes)
    if getattr(data, "edge_index", None) is None:
        raise ValueError("from_pyg needs `edge_index`")
    y = getattr(data, "y", None)
    if y is None:
        raise ValueError("from_pyg needs labels `y` (use -1 for unlabelled nodes)")
    y = torch.as_tensor(y).reshape(-1)
    if y.numel() != n:
        raise ValueError(f"`y` has {y.numel()} entries for {n} nodes")
    if y.is_floating_point():
        y = torch.nan_to_num(y, nan=-1.0)
        if not bool((y == y.round()).all()):
            raise ValueError("`y` holds non-integer class ids")
    y = y.long().clamp(min=-1)
    if texts is None:
        texts = getattr(data, "texts", None)
    if texts is not None:
        texts = [None if t is None or not str(t).strip() else str(t) for t in texts]
        if len(texts) != n:
            raise ValueError(f"{len(texts)} texts for {n} nodes")
    if class_names is None:
        class_names = getattr(data, "class_names", None)
    if class_names is None:
        class_names = [str(c) for c in range(int(y.max()) + 1 if y.numel() and int(y.max()) >= 0 else 0)]
    graph_name = name or getattr(data, "name", None) or "pyg"
    ei = torch.as_tensor(data.edge_index).long()
    if ei.dim() != 2 or ei.size(0) != 2:
        raise ValueError(f"`edge_index` must be [2, E], got {tuple(ei.shape)}")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise ValueError(f"`edge_index` holds node ids outside [0, {n})")
    out = TextAttributedGraph(
        edge_index=_undirected(ei[0].numpy(), ei[1].numpy(), n),
        y=y,
        class_names=[str(c) for c in class_names],
        texts=texts,
        name=str(graph_name),
        num_nodes=n,
    )
    x = getattr(data, "x", None)
    if x is not None:
        out.x = torch.as_tensor(x).clone()
    for key in ("train_mask", "val_mask", "test_mask", "llm_predictions", "llm_model"):
        value = getattr(data, key, None)
        if value is not None:
            out[key] = value.clone() if isinstance(value, Tensor) else value
    return _finish_adapter(out, features, tfidf_max_features=tfidf_max_features, cache_dir=cache_dir)


def from_networkx(
    graph: Any,
    *,
    text_attr: str = "text",
    label_attr: str = "label",
    x_attr: str | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "networkx",
    features: str = "auto",
    tfidf_max_features: int = 2000,
    cache_dir: str | os.PathLike | None = None,
    allow_missing_text: bool = False,
) -> TextAttributedGraph:
    """A networkx graph whose nodes carry a text and a label, as a :class:`TextAttributedGraph`.

    Node ``i`` of the result is the ``i``-th node of ``graph.nodes`` (``data.node_ids`` keeps the
    original node keys). Directed graphs are made undirected; self loops and parallel edges are dropped.
    A label is a class name or an integer id; a missing label, None, ``""`` or ``-1`` marks an
    unlabelled node (``y = -1``).

    Args:
        graph (networkx.Graph): any networkx graph class.
        text_attr (str, optional): node attribute holding the text. (default: ``"text"``)
        label_attr (str, optional): node attribute holding the label. (default: ``"label"``)
        x_attr (str, optional): node attribute holding a feature vector (then used as ``x`` with
            ``features="auto"``). (default: ``None``)
        class_names (list of str, optional): the class list (integer labels index it); without it, as in
            :func:`load_custom_tag`. (default: ``None``)
        name (str, optional): the dataset name. (default: ``"networkx"``)
        features (str, optional): as in :func:`from_pyg`. (default: ``"auto"``)
        allow_missing_text (bool, optional): keep nodes without text instead of raising.
            (default: ``False``)

    Raises:
        ValueError: a node without text (named), an unknown label, or ragged feature vectors.
    """
    keys = list(graph.nodes)
    if not keys:
        raise ValueError("the networkx graph has no nodes")
    index = {k: i for i, k in enumerate(keys)}
    attrs = [graph.nodes[k] for k in keys]
    texts = [
        _node_text(a.get(text_attr), allow_missing_text, f"node {k!r}", text_attr)
        for k, a in zip(keys, attrs, strict=True)
    ]
    y, names = _label_ids([a.get(label_attr) for a in attrs], class_names, lambda i: f"node {keys[i]!r}")
    pairs = np.array([(index[u], index[v]) for u, v in graph.edges()], dtype=np.int64).reshape(-1, 2)
    data = TextAttributedGraph(
        edge_index=_undirected(pairs[:, 0], pairs[:, 1], len(keys)),
        y=torch.tensor(y, dtype=torch.long),
        class_names=names,
        texts=texts,
        name=name,
        num_nodes=len(keys),
        node_ids=keys,
    )
    if x_attr is not None:
        rows = []
        for k, a in zip(keys, attrs, strict=True):
            if a.get(x_attr) is None:
                raise ValueError(f"node {k!r} has no feature vector {x_attr!r}")
            rows.append(torch.as_tensor(a[x_attr], dtype=torch.float32).reshape(-1))
        if len({r.numel() for r in rows}) != 1:
            raise ValueError(f"the {x_attr!r} feature vectors differ in length")
        data.x = torch.stack(rows)
    return _finish_adapter(data, features, tfidf_max_features=tfidf_max_features, cache_dir=cache_dir)


def from_tag_dataset(
    dataset: Any,
    *,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    features: str = "auto",
    tfidf_max_features: int = 2000,
    cache_dir: str | os.PathLike | None = None,
) -> TextAttributedGraph:
    """A PyG :class:`~torch_geometric.datasets.TAGDataset` (e.g. ogbn-arxiv with raw texts) for PKD.

    Reads the dataset's graph (``dataset[0]``), its node texts (``dataset.text``), its name and, where it
    has one, its split (``dataset.get_idx_split()``: ``train``, ``valid``/``val`` and ``test`` index
    tensors, turned into ``train_mask``, ``val_mask`` and ``test_mask``), then goes through
    :func:`from_pyg`. Nothing is downloaded here: build the TAGDataset first.

    Args:
        dataset (TAGDataset): or any dataset with ``text`` and a graph at index 0.
        class_names (list of str, optional): class names (a TAGDataset has none; OGB ships them
            separately). (default: ``"0" .. "C-1"``)
        name (str, optional): the dataset name. (default: ``dataset.name``)
        features, tfidf_max_features, cache_dir: as in :func:`from_pyg`.
    """
    texts = getattr(dataset, "text", None)
    if texts is None:
        raise ValueError("the dataset has no node texts (`text`); a TAGDataset needs them")
    data = dataset[0] if len(dataset) else None
    if data is None:
        raise ValueError("the dataset holds no graph")
    data = copy.copy(data)
    split = dataset.get_idx_split() if hasattr(dataset, "get_idx_split") else None
    if split:
        n = int(data.num_nodes)
        for key, mask_name in (
            ("train", "train_mask"),
            ("valid", "val_mask"),
            ("val", "val_mask"),
            ("test", "test_mask"),
        ):
            if key in split and split[key] is not None:
                mask = torch.zeros(n, dtype=torch.bool)
                mask[torch.as_tensor(split[key]).long().reshape(-1)] = True
                data[mask_name] = mask
    return from_pyg(
        data,
        texts=list(texts),
        class_names=class_names,
        name=name or str(getattr(dataset, "name", "") or "tag_dataset"),
        features=features,
        tfidf_max_features=tfidf_max_features,
        cache_dir=cache_dir,
    )
