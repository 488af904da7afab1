"""Trainer and ``benchmarks.snn`` reliability: resume fingerprint, paths checked before work, atomic JSON,
T = 0 / NaN inputs / NaN parameters, nonsensical CLI values, any user model, sharded evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from graphspike_kd.benchmarks import snn
from graphspike_kd.spiking.data.digits import load_digits_split
from graphspike_kd.spiking.models import SpikingVGG
from graphspike_kd.spiking.neurons import LIF, PLIF
from graphspike_kd.spiking.ratebp import RateBPNeuron
from graphspike_kd.spiking.train import (
    DistInfo,
    ShardSampler,
    TrainConfig,
    Trainer,
    missing_pieces,
    step_logits,
    write_json_atomic,
)
from tests.spiking.test_train import CFG, _data


def _model(seed=0, neuron=None):
    torch.manual_seed(seed)
    return SpikingVGG(CFG, in_channels=1, num_classes=10, T=2, neuron=neuron)


def _user_model(seed=0):
    """A plain time-major nn.Sequential with our LIF: [T, N, 1, 8, 8] -> per-step logits [T, N, 10]."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(start_dim=2), nn.Linear(64, 128), LIF(tau=2.0, step_mode="m"),
                         nn.Linear(128, 10))


# ------------------------------------------------------------------------------------------- resume
def test_changed_config_resume_is_refused_naming_the_change(tmp_path):
    kw = dict(method="vanilla", T=2, epochs=3, batch_size=16, lr=0.1, progress=False,
              checkpoint_dir=str(tmp_path / "ck"))
    Trainer(_model(), TrainConfig(**kw), device="cpu").fit(_data(), _data(16, 1), until_epoch=1)
    with pytest.raises(ValueError, match=r"lr: checkpoint 0.1, now 5.0.*--resume-override lr"):
        Trainer(_model(), TrainConfig(**{**kw, "lr": 5.0}, resume=True), device="cpu")
    with pytest.raises(ValueError, match="weight_decay: checkpoint 0.0005, now 0.01"):
        Trainer(_model(), TrainConfig(**{**kw, "weight_decay": 1e-2}, resume=True), device="cpu")
    # the same settings resume; only the non-fingerprinted ones may change
    same = Trainer(_model(), TrainConfig(**{**kw, "num_workers": 0, "progress": False}, resume=True),
                   device="cpu")
    assert same.start_epoch == 1 and same.config_overrides == []


def test_resume_override_applies_and_records_the_new_value(tmp_path):
    kw = dict(method="vanilla", T=2, epochs=3, batch_size=16, lr=0.1, progress=False,
              checkpoint_dir=str(tmp_path / "ck"))
    Trainer(_model(), TrainConfig(**kw), device="cpu").fit(_data(), _data(16, 1), until_epoch=1)
    resumed = Trainer(_model(), TrainConfig(**{**kw, "lr": 0.05}, resume=True, resume_overrides=["lr"]),
                      device="cpu")
    # cosine over 3 epochs, restored after epoch 1: lr = 0.05 * (1 + cos(pi / 3)) / 2
    expected = 0.05 * (1 + math.cos(math.pi / 3)) / 2
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    out = resumed.fit(_data(), _data(16, 1))
    assert out["history"][1]["lr"] == pytest.approx(expected)
    assert out["resumed_from_epoch"] == 1
    assert out["config_overrides"] == [{"from_epoch": 2, "changes": {"lr": {"checkpoint": 0.1, "now": 0.05}}}]
    with pytest.raises(ValueError, match="cannot change on resume"):
        TrainConfig(method="vanilla", resume_overrides=["method"])
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig(method="vanilla", resume_overrides=["learning_rate"])


def test_cli_resume_with_changed_lr_is_refused_then_recorded(tmp_path):
    base = ["--dataset", "digits", "--method", "vanilla", "--T", "2", "--seeds", "0", "--epochs", "2",
            "--max-steps-per-epoch", "1", "--quiet", "--checkpoint-dir", str(tmp_path / "ck")]
    snn.main(base)
    with pytest.raises(SystemExit, match="lr: checkpoint 0.1, now 5.0"):
        snn.main([*base, "--resume", "--lr", "5.0"])
    # a finished checkpoint with a longer schedule: epochs and lr overridden, recorded in the JSON
    out = tmp_path / "r.json"
    snn.main([*base, "--resume", "--lr", "0.05", "--epochs", "3", "--resume-override", "lr", "epochs",
              "--output", str(out)])
    run = json.loads(out.read_text())["runs"]["vanilla T=2 seed=0"]
    assert run["resumed_from_epoch"] == 2 and run["config"]["lr"] == 0.05
    assert run["config_overrides"][0]["changes"]["lr"] == {"checkpoint": 0.1, "now": 0.05}
    assert run["config_overrides"][0]["changes"]["epochs"] == {"checkpoint": 2, "now": 3}


# -------------------------------------------------------------------------------------------- paths
@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_bad_output_path_fails_before_any_training(tmp_path, monkeypatch, where):
    def no_training(*args, **kwargs):
        raise AssertionError("training started before the output path was checked")

    monkeypatch.setattr(snn.Trainer, "fit", no_training)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    bad = blocker / "out.json" if where == "under_a_file" else tmp_path
    with pytest.raises(SystemExit, match="--output"):
        snn.main(["--dataset", "digits", "--epochs", "1", "--quiet", "--output", str(bad)])
    with pytest.raises(SystemExit, match="--plot"):
        snn.main(["--dataset", "digits", "--epochs", "1", "--quiet", "--plot", str(blocker / "c.png")])
    with pytest.raises(SystemExit, match="--checkpoint-dir"):
        snn.main(["--dataset", "digits", "--epochs", "1", "--quiet", "--checkpoint-dir", str(blocker)])
    with pytest.raises(ValueError, match="checkpoint_dir"):
        Trainer(_model(), TrainConfig(checkpoint_dir=str(blocker / "ck")), device="cpu")


def test_json_is_written_atomically(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):  # not serialisable: the old file stays whole, no temporary file left
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


# ---------------------------------------------------------------------------------- T, NaN, values
def test_zero_time_steps_raise_value_error():
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        TrainConfig(T=0)
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        step_logits(_model().eval(), torch.rand(2, 1, 8, 8), 0)
    trainer = Trainer(_user_model(), TrainConfig(T=2, progress=False, frames=True), device="cpu")
    empty = TensorDataset(torch.rand(4, 0, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="T >= 1"):
        trainer.fit(empty, empty)


def test_nan_inputs_and_parameters_raise_value_error():
    x, y = _data(16).tensors
    x = x.clone()
    x[3, 0, 2, 2] = float("nan")
    trainer = Trainer(_model(), TrainConfig(T=2, progress=False), device="cpu")
    with pytest.raises(ValueError, match="non-finite values"):
        trainer.fit(TensorDataset(x, y), _data(8))
    model = _model(neuron={"kind": "plif", "tau": 2.0})
    plif = next(m for m in model.modules() if isinstance(m, PLIF))
    with torch.no_grad():
        plif.w.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"\.w has non-finite values"):
        Trainer(model, TrainConfig(T=2, progress=False), device="cpu")
    # documented opt-out
    Trainer(model, TrainConfig(T=2, progress=False, check_finite=False), device="cpu")


BAD_CLI = [("--max-steps-per-epoch", "0"), ("--threads", "0"), ("--epochs", "0"), ("--epochs", "-1"),
           ("--batch-size", "0"), ("--lr", "0"), ("--lr", "-0.1"), ("--lr", "nan"), ("--T", "0"),
           ("--weight-decay", "-1"), ("--grad-scale", "0"), ("--seeds", "-1"), ("--step-size", "0")]


@pytest.mark.parametrize("flag,value", BAD_CLI)
def test_nonsensical_cli_values_are_rejected(flag, value, capsys):
    with pytest.raises(SystemExit):
        snn.parse_args([flag, value])
    assert flag in capsys.readouterr().err


def test_cli_grad_scale_takes_the_paper_scale_by_name():
    assert snn.parse_args(["--grad-scale", "1/T"]).grad_scale == "1/T"
    assert snn.parse_args(["--grad-scale", "0.5"]).grad_scale == 0.5
    assert snn.parse_args([]).grad_scale is None


def test_nonsensical_config_values_are_rejected():
    for bad in (dict(max_steps_per_epoch=0), dict(lr=0.0), dict(lr=float("inf")), dict(epochs=0),
                dict(batch_size=0), dict(momentum=1.0), dict(weight_decay=-1.0), dict(num_workers=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


# ---------------------------------------------------------------------------------------- any model
def test_user_sequential_model_trains_with_bptt():
    train, test = load_digits_split()
    model = _user_model()
    cfg = TrainConfig(method="vanilla", T=4, epochs=3, batch_size=32, lr=0.01, optimizer="adam",
                      progress=False)
    out = Trainer(model, cfg, device="cpu").fit(train, test)
    assert out["final_test_acc"] >= 88.0  # percent; chance is 10 (92.8 when written)
    assert set(out["test_acc_at_steps"]) == {"1", "2", "3", "4"}


def test_user_model_with_timestep_kd_and_grad_scale():
    cfg = TrainConfig(method="s2w", T=2, epochs=1, batch_size=16, progress=False, grad_scale=2.0)
    trainer = Trainer(_user_model(), cfg, device="cpu")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    out = trainer.fit(_data(), _data(16, 1))
    assert "train_kd" in out["history"][0]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_grad_scale_scales_the_bptt_gradient():
    from graphspike_kd.spiking.train import make_sequence_step_function, make_step_function

    x, y = _data(8).tensors
    seq = x.unsqueeze(0).expand(2, *x.shape)
    cases = ((_model, make_step_function, x), (_user_model, make_sequence_step_function, seq))
    for model_fn, make, inp in cases:
        grads = {}
        for scale in (None, 3.0):
            model = model_fn()
            out = make(TrainConfig(method="vanilla", T=2, grad_scale=scale))(model, inp, y, 2)
            out["loss"].backward()
            grads[scale] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        for a, b in zip(grads[None], grads[3.0], strict=True):
            torch.testing.assert_close(b, 3.0 * a)


def test_missing_pieces_are_named():
    missing = missing_pieces(_user_model(), "ratebp")
    assert any("forward(x, T=...)" in m for m in missing)
    assert any("no RateBPNeuron" in m for m in missing)
    with pytest.raises(ValueError, match=r"lacks: .*forward\(x, T=\.\.\.\).*RateBPNeuron"):
        Trainer(_user_model(), TrainConfig(method="ratebp", progress=False), device="cpu")
    assert any("ESDNet" in m for m in missing_pieces(_user_model(), "esd"))
    assert missing_pieces(_user_model(), "vanilla") == []
    assert missing_pieces(_model(), "ratebp") == []


# ------------------------------------------------------------------------------------------ parallel
def test_shard_sampler_covers_every_sample_once():
    for n, world in ((10, 3), (7, 2), (1, 4)):
        shards = [list(ShardSampler(n, r, world)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        assert [len(ShardSampler(n, r, world)) for r in range(world)] == [len(s) for s in shards]


def test_default_device_follows_local_rank(monkeypatch):
    assert DistInfo(1, 2, 1).default_device() == torch.device("cpu") or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert DistInfo(1, 2, 1).default_device() == torch.device("cuda:1")


def test_init_distributed_sets_the_cuda_device(monkeypatch):
    from graphspike_kd.spiking import train

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(i))
    monkeypatch.setattr(train.dist, "is_initialized", lambda: True)  # no process group in this test
    info = train.init_distributed()
    assert info == DistInfo(1, 2, 1) and calls == [1]


def test_cli_backend_reaches_the_neurons():
    args = snn.parse_args(["--backend", "cpp", "--neuron", "synergy"])
    model = snn.build_model(args, "vanilla", 2, (1, 8, 8))
    neurons = [m.neuron for m in model.modules() if isinstance(m, RateBPNeuron)]
    assert neurons and all(n.backend == "cpp" for n in neurons)
    default = snn.build_model(snn.parse_args([]), "vanilla", 2, (1, 8, 8))
    assert all(m.neuron.backend == "torch" for m in default.modules() if isinstance(m, RateBPNeuron))


class _RateUserModel(nn.Module):
    """A user model with the pieces rate-BP needs: forward(x, T) on static [N, 64], RateBPNeuron neurons
    (convert_to_ratebp), only linear layers between them; returns time-averaged logits [N, 10]."""

    def __init__(self):
        super().__init__()
        from graphspike_kd.spiking.ratebp import convert_to_ratebp

        self.fc1 = nn.Linear(64, 64)
        self.lif = LIF(tau=2.0, step_mode="m")
        self.fc2 = nn.Linear(64, 10)
        convert_to_ratebp(self)

    def forward(self, x, T=None):
        steps = 4 if T is None else T
        c = self.fc1(x.flatten(1))
        s = self.lif(c.unsqueeze(0).expand(steps, *c.shape))
        return self.fc2(s).mean(0)


def test_user_model_with_the_pieces_trains_with_ratebp():
    train, test = load_digits_split()
    torch.manual_seed(0)
    model = _RateUserModel()
    assert missing_pieces(model, "ratebp") == []
    cfg = TrainConfig(method="ratebp", T=4, epochs=3, batch_size=32, lr=0.01, optimizer="adam",
                      progress=False)
    out = Trainer(model, cfg, device="cpu").fit(train, test)
    assert out["final_test_acc"] >= 80.0  # percent; chance is 10
    assert set(out["test_acc_at_steps"]) == {"1", "2", "3", "4"}  # evaluated on the first t steps
