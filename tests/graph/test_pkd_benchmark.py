"""Smoke tests of ``python -m graphspike_kd.benchmarks.pkd`` (a few epochs; numbers are not checked) and of
its command-line checks."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

import graphspike_kd.benchmarks.pkd as bench
from graphspike_kd._cache import CACHE_ENV
from graphspike_kd.benchmarks.pkd import main, majority_vote, output_problem, resolve_workers
from graphspike_kd.graph.datasets import data_root

CONTRACT_METHODS = {"gcn_fewshot", "llm_only", "gcn_llm_labels", "teacher_majority_vote", "best_teacher"}


@pytest.mark.parametrize("protocol", ["paper", "strict"])
def test_pkd_benchmark_writes_contract_json(tmp_path, capsys, protocol):
    out = tmp_path / "res.json"
    argv = [
        "--dataset",
        "cora",
        "--seeds",
        "0",
        "1",
        "--shots",
        "1",
        "--protocol",
        protocol,
        "--epochs",
        "5",
        "--teachers",
        "gcn",
        "mlp",
        "--budget",
        "50",
        "--pkd-rows",
        "--quiet",
        "--output",
        str(out),
    ]
    payload = main(argv)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(payload))
    assert {"dataset", "shots", "protocol", "seeds", "methods", "wall_time_s"} <= set(saved)
    assert saved["dataset"] == "cora" and saved["shots"] == 1 and saved["protocol"] == protocol
    assert saved["seeds"] == [0, 1]
    assert CONTRACT_METHODS <= set(saved["methods"])
    assert "pkd" not in saved["methods"]  # PKD rows switched off (--pkd-rows with no names)
    for m in saved["methods"].values():
        assert len(m["acc"]) == 2 and all(0.0 <= a <= 1.0 for a in m["acc"])
        assert m["mean"] == pytest.approx(sum(m["acc"]) / 2)
    # the cached GPT-3.5 answers: llm_only is the top-1 accuracy on the test nodes of each split
    assert 0.6 < saved["methods"]["llm_only"]["mean"] < 0.75
    if protocol == "strict":
        assert saved["methods"]["llm_only"]["acc"] == [pytest.approx(0.667, abs=2e-3)] * 2
    assert saved["per_seed"][0]["budget"] == 50 and saved["per_seed"][0]["train_nodes"] == 7
    printed = capsys.readouterr().out
    assert "gcn_fewshot" in printed and "±" in printed


def test_majority_vote_ties_go_to_the_most_probable_class():
    probs = torch.tensor(
        [
            [[0.6, 0.4, 0.0], [0.1, 0.1, 0.8]],
            [[0.1, 0.9, 0.0], [0.1, 0.1, 0.8]],
            [[0.0, 0.45, 0.55], [0.2, 0.7, 0.1]],
        ]
    )
    # node 0: one vote each, class 1 has the highest mean probability; node 1: class 2 wins 2 to 1
    assert majority_vote(probs).tolist() == [1, 2]


def test_seeds_in_worker_processes_give_the_sequential_results():
    argv = ["--dataset", "cora", "--seeds", "0", "1", "--shots", "1", "--epochs", "3", "--teachers", "gcn",
            "mlp", "--budget", "30", "--pkd-rows", "pkd", "pkd_no_denoise", "--pkd-ngs-rounds", "1",
            "--quiet"]
    sequential = main([*argv, "--workers", "1"])
    parallel = main([*argv, "--workers", "2"])
    assert parallel["workers"] == 2 and sequential["workers"] == 1
    assert parallel["methods"] == sequential["methods"]
    assert parallel["per_seed"] == sequential["per_seed"]
    assert "llm_acc_random" not in sequential["per_seed"][0]["pkd"]["expansion"]  # opt-in only


def test_workers_refused_for_annotators_with_a_disk_cache(tmp_path):
    llm = SimpleNamespace(cache=SimpleNamespace(path=tmp_path / "hf.jsonl"), backend="hf")
    with pytest.raises(SystemExit, match="disk cache"):
        resolve_workers(2, llm, num_seeds=5)
    assert resolve_workers(None, llm, num_seeds=5) == 1  # default: sequential
    memory = SimpleNamespace(cache=SimpleNamespace(path=None), backend="cached")
    assert resolve_workers(8, memory, num_seeds=3) == 3  # never more workers than seeds
    assert 1 <= resolve_workers(None, memory, num_seeds=5) <= 5


@pytest.mark.parametrize("bad", ["parent_is_a_file", "is_a_folder"])
def test_bad_output_fails_before_any_work(tmp_path, monkeypatch, capsys, bad):
    def no_work(*args, **kwargs):
        raise AssertionError("the dataset was loaded before --output was checked")

    monkeypatch.setattr(bench, "load_tag_dataset", no_work)
    if bad == "parent_is_a_file":
        (tmp_path / "plain").write_text("not a folder")
        out = tmp_path / "plain" / "res.json"
    else:
        out = tmp_path / "folder"
        out.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["--dataset", "cora", "--quiet", "--output", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--output {out}" in err and ("folder" in err)
    assert output_problem(tmp_path / "new" / "deeper" / "res.json") is None  # missing folders are created
    assert (tmp_path / "new" / "deeper").is_dir() and not (tmp_path / "new" / "deeper" / "res.json").exists()


def test_root_and_cache_dir(tmp_path, monkeypatch, capsys):
    outer = tmp_path / "outer-cache"
    monkeypatch.setenv(CACHE_ENV, str(outer))
    cache = tmp_path / "run-cache"
    argv = ["--dataset", "cora", "--seeds", "0", "--shots", "1", "--epochs", "2", "--teachers", "gcn", "mlp",
            "--budget", "20", "--pkd-rows", "--quiet", "--workers", "1", "--annotator", "oracle",
            "--annotator-option", "cache=default", "--root", str(data_root()), "--cache-dir", str(cache)]
    payload = main(argv)
    assert payload["num_nodes"] == 2708 and payload["annotator"] == "oracle"
    assert list(cache.rglob("*.jsonl")), "the annotator's answers did not go to --cache-dir"
    assert not outer.exists()
    assert os.environ[CACHE_ENV] == str(outer)  # restored after the run
    with pytest.raises(SystemExit):
        main(["--dataset", "cora", "--root", str(tmp_path / "nowhere")])
    assert "--root" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        main(["--dataset", "cora", "--cache-dir", str(tmp_path / "file")])


@pytest.mark.parametrize("confidence", ["0", "1", "1.5"])
def test_referee_confidence_checked_before_any_work(confidence, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(bench, "load_tag_dataset", no_work)
    with pytest.raises(SystemExit) as exc:
        main(["--dataset", "texas", "--protocol", "strict", "--pkd-referee-confidence", confidence])
    assert exc.value.code == 2
    assert f"--pkd-referee-confidence must be in (0, 1), got {float(confidence)}" in capsys.readouterr().err
