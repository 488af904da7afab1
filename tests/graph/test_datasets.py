"""Facts of the shipped text-attributed graphs (counts from each data folder's SOURCE.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from graphspike_kd.graph.datasets import (
    DATA_ENV,
    ChecksumError,
    available_datasets,
    data_root,
    load_custom_tag,
    load_tag_dataset,
)


def _check_graph(data) -> None:
    ei = data.edge_index
    assert ei.dtype == torch.long and ei.dim() == 2 and ei.size(0) == 2
    assert not bool((ei[0] == ei[1]).any()), "self loops"
    pairs = set(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
    assert len(pairs) == ei.size(1), "duplicate edges"
    assert all((j, i) in pairs for i, j in pairs), "not undirected"
    assert data.y.shape == (data.num_nodes,)
    assert int(data.y.min()) == 0 and int(data.y.max()) == len(data.class_names) - 1
    assert data.x.shape[0] == data.num_nodes and data.x.dtype == torch.float32


@pytest.fixture(scope="module")
def cora():
    return load_tag_dataset("cora")


def test_cora_facts(cora):
    _check_graph(cora)
    assert cora.name == "cora" and cora.num_nodes == 2708
    assert cora.edge_index.size(1) == 2 * 5278
    assert cora.x.shape == (2708, 1433) and set(cora.x.unique().tolist()) == {0.0, 1.0}
    assert cora.texts is None
    assert cora.class_names == [
        "Theory",
        "Reinforcement_Learning",
        "Genetic_Algorithms",
        "Neural_Networks",
        "Probabilistic_Methods",
        "Case_Based",
        "Rule_Learning",
    ]
    assert torch.bincount(cora.y).tolist() == [351, 217, 418, 818, 426, 298, 180]
    assert (int(cora.train_mask.sum()), int(cora.val_mask.sum()), int(cora.test_mask.sum())) == (
        140,
        500,
        1000,
    )
    assert bool(cora.train_mask[:140].all()) and bool(cora.val_mask[140:640].all())
    assert not bool((cora.train_mask & cora.test_mask).any())


def test_cora_llm_predictions(cora):
    preds = cora.llm_predictions
    assert preds.dtype == torch.long and preds.shape == (2708, 7)
    assert cora.llm_model == "gpt-3.5-turbo (TAPE zero-shot)"
    # ranked lists of length 1/2/3/4/7, padded with -1 (SOURCE.md)
    lengths = (preds >= 0).sum(1)
    assert torch.bincount(lengths, minlength=8)[[1, 2, 3, 4, 7]].tolist() == [1353, 986, 336, 32, 1]
    assert bool((preds[:, 0] >= 0).all())
    top1 = preds[:, 0] == cora.y
    assert round(float(top1.float().mean()), 4) == 0.6769
    assert round(float(top1[cora.test_mask].float().mean()), 3) == 0.667
    assert round(float(top1[cora.train_mask].float().mean()), 3) == 0.700
    assert round(float(top1[cora.val_mask].float().mean()), 3) == 0.656


def test_citeseer_facts():
    data = load_tag_dataset("citeseer", features="none")  # TF-IDF of 3,186 abstracts is tested on WebKB
    assert "x" not in data
    data.x = torch.zeros(data.num_nodes, 1)
    _check_graph(data)
    assert data.num_nodes == 3186 and data.edge_index.size(1) == 2 * 4225
    assert data.class_names == ["AI", "ML", "IR", "DB", "Agents", "HCI"]
    counts = dict(zip(data.class_names, torch.bincount(data.y).tolist(), strict=True))
    assert counts == {"DB": 685, "IR": 641, "ML": 569, "Agents": 562, "HCI": 490, "AI": 239}
    assert len(data.texts) == 3186 and all(isinstance(t, str) and len(t) >= 32 for t in data.texts)
    assert bool((data.planetoid_idx.diff() > 0).all()), "not in Planetoid order"
    assert int(data.planetoid_idx.max()) < 3327
    assert data.llm_predictions is None and data.llm_model is None
    # the Planetoid split restricted to nodes that have text
    assert int(data.train_mask.sum()) <= 120 and int(data.test_mask.sum()) <= 1000
    assert not bool((data.train_mask & data.val_mask).any())


# SOURCE.md counts undirected edges *with* self loops (275/298/416/479);
# the loader drops the 1/18/51/20 loops.
@pytest.mark.parametrize(
    "name,nodes,edges,self_loops,counts",
    [
        ("cornell", 191, 275, 1, {"student": 83, "course": 42, "faculty": 32, "project": 17, "staff": 17}),
        ("texas", 187, 298, 18, {"student": 103, "course": 34, "faculty": 31, "project": 18, "staff": 1}),
        (
            "washington",
            229,
            416,
            51,
            {"student": 106, "course": 66, "faculty": 27, "project": 21, "staff": 9},
        ),
        (
            "wisconsin",
            265,
            479,
            20,
            {"student": 122, "course": 76, "faculty": 35, "project": 22, "staff": 10},
        ),
    ],
)
def test_webkb_facts(name, nodes, edges, self_loops, counts):
    data = load_tag_dataset(name)
    _check_graph(data)
    assert data.num_nodes == nodes
    assert data.edge_index.size(1) == 2 * (edges - self_loops)
    assert dict(zip(data.class_names, torch.bincount(data.y).tolist(), strict=True)) == counts
    assert len(data.texts) == nodes and data.train_mask is None and data.llm_predictions is None
    assert data.x.shape == (nodes, 2000) and data.x.layout == torch.sparse_csr  # TF-IDF by default
    x = data.x.to_dense()
    torch.testing.assert_close(x.norm(dim=1)[x.abs().sum(1) > 0], torch.ones(int((x.abs().sum(1) > 0).sum())))


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_tag_dataset("pubmedd")
    for name in available_datasets():
        assert name in str(info.value)


def test_cora_has_no_text_features():
    with pytest.raises(ValueError, match="no node text"):
        load_tag_dataset("cora", features="tfidf")


def _copy_root(tmp_path: Path, folder: str) -> Path:
    root = tmp_path / "data"
    shutil.copytree(data_root(folder=folder) / folder, root / folder)
    return root


def test_checksum_mismatch_names_the_file(tmp_path):
    root = _copy_root(tmp_path, "cora")
    target = root / "cora" / "tape_gpt35_zero_shot_cora.csv"
    content = target.read_bytes()
    target.write_bytes(b"4" + content[1:])  # first prediction 3 -> 4, same length
    with pytest.raises(ChecksumError, match="tape_gpt35_zero_shot_cora.csv"):
        load_tag_dataset("cora", root=root)


def test_checksum_mismatch_webkb(tmp_path):
    root = _copy_root(tmp_path, "webkb_tag")
    target = root / "webkb_tag" / "Texas.csv"
    target.write_bytes(target.read_bytes() + b"\n")
    with pytest.raises(ChecksumError, match="Texas.csv"):
        load_tag_dataset("texas", root=root)
    load_tag_dataset("cornell", root=root)  # the other files still load


def test_data_root_from_environment(tmp_path, monkeypatch):
    root = _copy_root(tmp_path, "webkb_tag")
    monkeypatch.setenv(DATA_ENV, str(root))
    assert data_root(folder="webkb_tag") == root
    assert load_tag_dataset("cornell").num_nodes == 191


def test_missing_folder_error_mentions_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="no 'cora' folder"):
        load_tag_dataset("cora", root=tmp_path)


def test_custom_tag_csv_and_jsonl(tmp_path):
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        "id,text,label\n"
        "a,graph neural networks for citation graphs,ml\n"
        'b,"deep learning, graphs and message passing",ml\n'
        "c,relational databases and query optimisation,db\n"
        "d,query planning in databases,\n"
    )
    edges = tmp_path / "edges.txt"
    edges.write_text("source target\n# comment\na b\nb a\nb c\nc c\nd c\n")
    data = load_custom_tag(nodes, edges, name="toy")
    _check_graph_partial = data.edge_index
    assert data.class_names == ["db", "ml"] and data.y.tolist() == [1, 1, 0, -1]
    assert sorted(zip(*_check_graph_partial.tolist(), strict=True)) == [
        (0, 1),
        (1, 0),
        (1, 2),
        (2, 1),
        (2, 3),
        (3, 2),
    ]
    assert data.x.shape[0] == 4 and data.texts[2].startswith("relational")

    jsonl = tmp_path / "nodes.jsonl"
    jsonl.write_text(
        '{"id": 1, "text": "graph nodes", "label": 0}\n{"id": 2, "text": "graph edges", "label": 1}\n'
    )
    e2 = tmp_path / "e.csv"
    e2.write_text("1,2\n")
    data2 = load_custom_tag(jsonl, e2, class_names=["neg", "pos"])
    assert data2.y.tolist() == [0, 1] and data2.edge_index.size(1) == 2

    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\n2,9\n")
    with pytest.raises(ValueError, match="bad.csv:2: unknown node id"):
        load_custom_tag(jsonl, bad)
