"""``python -m graphspike_kd.benchmarks.snn`` end to end: digits and a written DVS-format release."""

from __future__ import annotations

import json

from graphspike_kd.benchmarks import snn


def test_digits_cli_writes_json_and_png(tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "c.png"
    res = snn.main(["--dataset", "digits", "--method", "w2s", "--T", "2", "--seeds", "0", "--epochs", "1",
                    "--max-steps-per-epoch", "2", "--neuron", "synergy", "--quiet", "--output", str(out),
                    "--plot", str(png)])
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"w2s"}
    assert data["methods"]["w2s"]["2"]["acc"] == res["methods"]["w2s"]["2"]["acc"]
    assert data["command"].startswith("python -m graphspike_kd.benchmarks.snn")
    assert {"git_commit", "dirty", "packages", "torch_threads", "platform", "date_utc"} <= set(
        data["provenance"])
    assert data["provenance"]["command"] == data["command"]
    assert data["accuracy_unit"] == "percent" and 0.0 <= data["methods"]["w2s"]["2"]["acc"][0] <= 100.0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert set(data["methods"]["w2s"]["2"]["acc_at_steps_mean"]) == {"1", "2"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "w2s" in snn.format_table(res)


def test_cifar10dvs_cli_on_written_release(tmp_path):
    root = tmp_path / "release"
    res = snn.main(["--dataset", "cifar10dvs", "--root", str(root), "--write-synthetic", "2",
                    "--split", "random_9to1", "--method", "s2w",
                    "--T", "2", "--epochs", "1", "--batch-size", "4", "--model", "small",
                    "--max-steps-per-epoch", "1", "--integrate-workers", "0", "--quiet"])
    assert len(list(root.rglob("*.aedat"))) == 20
    assert (root / ".cache" / "frames" / "frames2_number_spikingjelly_128x128").is_dir()
    assert res["data"]["split"] == "random_9to1" and res["data"]["test_samples"] == 2
    assert res["paper_cifar10dvs_vgg9_T5"] == {"vanilla": 73.97, "s2w": 78.93, "w2s": 79.33}


def test_digits_esd_on_small3_passes_beta_and_taps_two_stages(tmp_path, monkeypatch):
    """The rate-BP / ESD comparison's model (three stages: ESD gets two branches) and the ``--esd-beta``
    ablation reaching every ESD step through the trainer."""
    from graphspike_kd.spiking import train

    seen: list[float] = []
    real = train.esd_step_loss

    def spy(model, x, y, T, **kwargs):
        seen.append(kwargs["beta"])
        assert len(model.branches) == 2
        return real(model, x, y, T, **kwargs)

    monkeypatch.setattr(train, "esd_step_loss", spy)
    out = tmp_path / "esd.json"
    res = snn.main(["--dataset", "digits", "--method", "esd", "--model", "small3", "--esd-beta", "0",
                    "--T", "2", "--seeds", "0", "--epochs", "1", "--max-steps-per-epoch", "2", "--quiet",
                    "--output", str(out)])
    assert seen == [0.0, 0.0]  # two batches, each with the ablation's beta
    saved = json.loads(out.read_text())
    assert saved["esd_beta"] == 0.0 and saved["model"] == "small3"
    assert saved["methods"]["esd"]["2"]["acc"] == res["methods"]["esd"]["2"]["acc"]


def test_unknown_model_name_is_rejected_with_the_choices(capsys):
    import pytest

    with pytest.raises(SystemExit):
        snn.parse_args(["--model", "small4"])
    err = capsys.readouterr().err
    assert "small4" in err and "small3" in err and "resnet18" in err
