"""The SNN trainer: every method runs, per-step logits, checkpoint resume, 2-process gloo data parallelism."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
from torch.utils.data import TensorDataset

from graphspike_kd.spiking.esd import ESDNet
from graphspike_kd.spiking.models import SpikingVGG
from graphspike_kd.spiking.train import (
    DistInfo,
    TrainConfig,
    Trainer,
    init_distributed,
    make_step_function,
    step_logits,
)

CFG = [4, 8, "A", 8, "A"]


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return TensorDataset(x, y)


def _model(seed=0, esd=False):
    torch.manual_seed(seed)
    m = SpikingVGG(CFG, in_channels=1, num_classes=10, T=2)
    return ESDNet(m, 10, (1, 8, 8)) if esd else m


def test_step_logits_are_the_per_step_readout():
    model = _model().eval()
    x = torch.rand(3, 1, 8, 8)
    per_step, logits = step_logits(model, x, 3)
    assert per_step.shape == (3, 3, 10)
    torch.testing.assert_close(per_step.mean(0), logits)
    frames = torch.rand(2, 3, 1, 8, 8)
    per_step, logits = step_logits(model, frames, 2)
    torch.testing.assert_close(per_step.mean(0), logits)


@pytest.mark.parametrize("method", ["vanilla", "ratebp", "esd", "s2w", "w2s", "w2s_cascade"])
def test_every_method_trains(method):
    cfg = TrainConfig(method=method, T=2, epochs=1, batch_size=16, lr=0.05, progress=False)
    trainer = Trainer(_model(esd=method == "esd"), cfg, device="cpu")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    out = trainer.fit(_data(), _data(16, seed=1))
    hist = out["history"][0]
    assert set(out["test_acc_at_steps"]) == {"1", "2"} and 0.0 <= out["final_test_acc"] <= 100.0
    assert all(k in hist for k in ("train_loss", "train_acc", "lr", "test_acc"))
    if method in ("s2w", "w2s", "w2s_cascade"):
        assert "train_kd" in hist and hist["train_kd"] >= 0.0
    if method == "esd":
        assert "train_sd" in hist
    changed = any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert changed


def test_config_and_model_errors():
    with pytest.raises(ValueError, match="method must be one of"):
        TrainConfig(method="bptt")
    with pytest.raises(ValueError, match="lean=True is a rate-BP option"):
        TrainConfig(method="s2w", lean=True)
    with pytest.raises(ValueError, match="lacks: an ESDNet"):
        Trainer(_model(), TrainConfig(method="esd", progress=False), device="cpu")
    with pytest.raises(ValueError, match="lacks: a head.fc"):
        Trainer(_NoHead(), TrainConfig(method="s2w", progress=False), device="cpu")
    # a time-major model returning [N, C] has no per-step logits: the first batch says so
    trainer = Trainer(_Pooled(), TrainConfig(method="s2w", T=2, progress=False), device="cpu")
    with pytest.raises(ValueError, match="needs per-step logits"):
        trainer.fit(_data(8), _data(8))


class _NoHead(torch.nn.Module):
    """Takes T but has no head.fc: no per-step readout."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x, T=None):
        return self.fc(x.flatten(1))


class _Pooled(torch.nn.Module):
    """Time-major, but averages over time itself: [T, N, 1, 8, 8] -> [N, 10]."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(2)).mean(0)


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    train, test = _data(), _data(16, seed=1)
    kw = dict(method="s2w", T=2, epochs=2, batch_size=16, lr=0.05, progress=False)
    straight = Trainer(_model(), TrainConfig(**kw), device="cpu")
    straight.fit(train, test)

    ckpt = tmp_path / "ckpt"
    first = Trainer(_model(), TrainConfig(**kw, checkpoint_dir=str(ckpt)), device="cpu")
    first.fit(train, test, until_epoch=1)  # a time-limited job: stops after epoch 1 of 2
    state = torch.load(ckpt / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and len(state["history"]) == 1

    resumed = Trainer(_model(seed=123), TrainConfig(**kw, checkpoint_dir=str(ckpt), resume=True),
                      device="cpu")
    assert resumed.start_epoch == 1
    out = resumed.fit(train, test)
    assert len(out["history"]) == 2
    pairs = zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        torch.testing.assert_close(a, b, msg=name, rtol=0, atol=0)
    with pytest.raises(ValueError, match="T: checkpoint 2, now 3"):
        Trainer(_model(), TrainConfig(**{**kw, "T": 3}, checkpoint_dir=str(ckpt), resume=True), device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed(torch.device("cpu"))
    assert info == DistInfo(rank, world, rank)
    cfg = TrainConfig(method="vanilla", T=2, epochs=1, batch_size=8, lr=0.05, progress=False,
                      max_steps_per_epoch=2)
    trainer = Trainer(_model(seed=rank), cfg, device="cpu", dist_info=info)  # different init: rank 0 wins
    out = trainer.fit(_data(64), _data(17, seed=1))
    flat = torch.cat([t.detach().reshape(-1).double() for t in trainer.model.state_dict().values()
                      if t.is_floating_point()])
    # the sharded, all-reduced evaluation equals one process evaluating the whole test set
    single = Trainer(trainer.model, cfg, device="cpu").evaluate(_data(17, seed=1), [1, 2])
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"sum": float(flat.sum()), "sq": float((flat**2).sum()), "acc": out["final_test_acc"],
                   "at_steps": out["test_acc_at_steps"], "single": {str(k): v for k, v in single.items()}}, f)
    torch.distributed.destroy_process_group()


def test_two_process_gloo_data_parallel(tmp_path):
    import torch.multiprocessing as mp

    # fork: the children inherit the imported modules (spawn would re-import torch, ~10 s per process)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1  # identical parameters and buffers after 2 synchronised steps on different shards
    assert r0["at_steps"] == r0["single"]  # sharded evaluation (9 + 8 samples) = whole-set evaluation
    init = _model(seed=0).state_dict()
    flat0 = torch.cat([t.reshape(-1).double() for t in init.values() if t.is_floating_point()])
    assert r0["sum"] != pytest.approx(float(flat0.sum()), abs=1e-9)  # training moved them


@pytest.mark.gpu
def test_amp_on_cuda_runs_every_method():
    for method in ("vanilla", "ratebp", "s2w"):
        cfg = TrainConfig(method=method, T=2, epochs=1, batch_size=16, progress=False)
        trainer = Trainer(_model(), cfg, device="cuda")
        assert trainer.use_amp and trainer.scaler.is_enabled()
        out = trainer.fit(_data(), _data(16, seed=1))
        assert 0.0 <= out["final_test_acc"] <= 100.0


def test_steps_per_call_is_a_ratebp_option():
    with pytest.raises(ValueError, match="steps_per_call is a rate-BP option"):
        TrainConfig(method="vanilla", steps_per_call=2)
    with pytest.raises(ValueError, match="steps_per_call must be >= 1"):
        TrainConfig(method="ratebp", steps_per_call=0)
    with pytest.raises(ValueError, match="and 1 with lean=True"):
        TrainConfig(method="esd", lean=True, steps_per_call=2)
    step = make_step_function(TrainConfig(method="ratebp", steps_per_call=2))
    assert step.keywords["steps_per_call"] == 2


@pytest.mark.parametrize("method", ["ratebp", "esd"])
def test_grad_scale_replaces_the_official_one_over_T(method):
    """``grad_scale`` replaces the official 1/T on the gradient; the loss value is unchanged."""
    x, y = _data(8).tensors
    grads = {}
    for scale in ("1/T", 1.0):
        model = _model(esd=method == "esd")
        step = make_step_function(TrainConfig(method=method, T=2, grad_scale=scale))
        out = step(model, x, y, 2)
        out["loss"].backward()
        grads[scale] = (out["loss"].detach().item(),
                        [p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert grads["1/T"][0] == grads[1.0][0]  # same loss value
    assert len(grads["1/T"][1]) == len(grads[1.0][1]) > 0
    for official, unscaled in zip(grads["1/T"][1], grads[1.0][1], strict=True):
        torch.testing.assert_close(unscaled, 2.0 * official)  # 1 instead of 1/T, T = 2


def test_grad_scale_defaults_by_method():
    """None = the measured default: 1 for rate-BP, the paper's 1/T for ESD, 1 for BPTT methods; "1/T" is
    the papers' scale passed to the official path (grad_scale=None of ratebp_loss / esd_step_loss)."""
    assert TrainConfig(method="ratebp").resolved_grad_scale() == 1.0
    assert TrainConfig(method="esd").resolved_grad_scale() == "1/T"
    assert TrainConfig(method="vanilla").resolved_grad_scale() == 1.0
    assert make_step_function(TrainConfig(method="ratebp")).keywords["grad_scale"] == 1.0
    assert make_step_function(TrainConfig(method="ratebp", grad_scale="1/T")).keywords["grad_scale"] is None
    assert make_step_function(TrainConfig(method="esd")).keywords["grad_scale"] is None
    with pytest.raises(ValueError, match="grad_scale must be None, '1/T'"):
        TrainConfig(method="ratebp", grad_scale="1/N")


def test_grad_scale_values():
    with pytest.raises(ValueError, match="finite and > 0"):
        TrainConfig(method="ratebp", grad_scale=0.0)
    with pytest.raises(ValueError, match="finite and > 0"):
        TrainConfig(method="esd", grad_scale=float("nan"))
