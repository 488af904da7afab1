"""The ``device`` option of PKD and of the ``pkd`` CLI: CPU checks of the option and of the content-keyed
adjacency cache everywhere; ``gpu`` tests (skipped with the reason where no CUDA device exists) run the
pipeline on a CUDA device."""

from __future__ import annotations

import pytest
import torch

from graphspike_kd.benchmarks.pkd import _device_problem
from graphspike_kd.graph.annotators.oracle import OracleAnnotator
from graphspike_kd.graph.models import ADJACENCY_STORE, _AdjacencyCache, build_model
from graphspike_kd.graph.pkd import PKD, PKDConfig
from graphspike_kd.graph.splits import few_shot_split
from graphspike_kd.graph.training import TrainConfig, predict

from .test_pkd import _sbm


def _config(device: str) -> PKDConfig:
    return PKDConfig(
        hidden=8,
        train=TrainConfig(epochs=15, patience=10),
        budget_count=30,
        ngs_rounds=2,
        student_epochs_per_round=2,
        final_epochs=10,
        ppo_hidden=8,
        device=device,
    )


def test_device_option_is_validated_and_cpu_is_the_default():
    assert PKDConfig().device == "cpu"
    with pytest.raises(ValueError, match="device"):
        PKDConfig(device="not-a-device")
    assert _device_problem("cpu") is None
    assert "not a device" in _device_problem("gpu0")
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _device_problem("cuda")


def test_cpu_device_uses_the_graph_itself():
    data = _sbm(n_per_class=40)
    assert PKD(_config("cpu")).on_device(data) is data


def test_cli_rejects_an_unusable_device_before_any_work(capsys, monkeypatch):
    from graphspike_kd.benchmarks import pkd as cli

    def never(*args, **kwargs):
        raise AssertionError("the dataset was loaded before --device was checked")

    monkeypatch.setattr(cli, "load_tag_dataset", never)
    with pytest.raises(SystemExit):
        cli.main(["--dataset", "cora", "--device", "quantum"])
    assert "--device quantum" in capsys.readouterr().err


def test_adjacency_cache_key_holds_content_size_and_device():
    ADJACENCY_STORE.clear()
    data = _sbm(n_per_class=40)
    cache = _AdjacencyCache()
    key = cache.key(data.edge_index, 120)
    assert key == _AdjacencyCache().key(data.edge_index.clone(), 120)
    assert key[1:] == (120, "cpu")
    flipped = data.edge_index.flip(0).contiguous()  # same graph, other edge order: another key
    assert cache.key(flipped, 120) != key


@pytest.mark.gpu
def test_models_adjacency_and_features_on_cuda_match_cpu():
    ADJACENCY_STORE.clear()
    data = _sbm(n_per_class=40)
    for name in ("gcn", "gat", "appnp", "h2gcn", "gprgnn", "mlp"):
        torch.manual_seed(0)
        cpu = build_model(name, data.num_features, 8, 3).eval()
        gpu = build_model(name, data.num_features, 8, 3)
        gpu.load_state_dict(cpu.state_dict())
        gpu = gpu.to("cuda").eval()
        out = predict(gpu, data.x.cuda(), data.edge_index.cuda())
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), predict(cpu, data.x, data.edge_index), rtol=1e-4, atol=1e-4)
    walk = build_model("h2gcn", data.num_features, 8, 3, two_hop="walk").eval()
    ref = predict(walk, data.x, data.edge_index)
    out = predict(walk.to("cuda"), data.x.cuda(), data.edge_index.cuda())
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    devices = {key[2] for key in ADJACENCY_STORE._graphs}
    assert devices == {"cpu", "cuda:0"}


@pytest.mark.gpu
def test_pkd_fit_on_cuda_keeps_models_there_and_returns_cpu_tensors():
    data = _sbm(n_per_class=40)
    split = few_shot_split(data.y, 3, seed=0)
    annotator = OracleAnnotator(data, accuracy=0.8)
    annotator.neighbours = None  # DNS runs, on the device
    pkd = PKD(_config("cuda"))
    result = pkd.fit(data, annotator, split, seed=0)
    assert result.logits.device.type == "cpu" and result.expansion.teacher_probs.device.type == "cpu"
    assert next(result.student.parameters()).device.type == "cuda"
    assert all(next(m.parameters()).device.type == "cuda" for m in result.expansion.teacher_models)
    assert pkd.on_device(data).x.device.type == "cuda" and data.x.device.type == "cpu"
    assert pkd.evaluate(data, split, result)["test_acc"] > 0.6
    assert len(annotator.neighbours or {}) == 0  # restored after the query


@pytest.mark.gpu
def test_cli_device_cuda_runs_a_seed(tmp_path):
    from graphspike_kd.benchmarks.pkd import main

    out = tmp_path / "res.json"
    main(
        [
            "--dataset",
            "cora",
            "--seeds",
            "0",
            "--epochs",
            "5",
            "--patience",
            "5",
            "--pkd-ngs-rounds",
            "1",
            "--pkd-rows",
            "pkd",
            "--device",
            "cuda",
            "--quiet",
            "--output",
            str(out),
        ]
    )
    assert out.exists()
