r"""The one SNN trainer: BPTT, rate-BP, ESD and timestep self-distillation (Strong2Weak / Weak2Strong).

A training method is a per-batch *step function* ``step(model, x, target, T) -> dict`` whose ``"loss"`` is
back-propagated and whose ``"logits"`` (``[N, C]``) give the training accuracy; every other scalar entry is
logged. The step functions come from the modules that define the methods, so this file holds the loop only:

============================  =================================================  ===================
``method``                    step function                                      gradient
============================  =================================================  ===================
``"vanilla"``                 :func:`graphspike_kd.spiking.ratebp.bptt_loss`     BPTT
``"ratebp"``                  :func:`graphspike_kd.spiking.ratebp.ratebp_loss`   rate-BP
``"esd"``                     :func:`graphspike_kd.spiking.esd.esd_step_loss`    rate-BP (ESD runs on it)
``"s2w"``, ``"w2s"`` and the  :func:`timestep_kd_step_loss` (per-step logits +   BPTT
other variants of             :func:`graphspike_kd.spiking.timestep_kd.
:data:`TIMESTEP_METHODS`      timestep_kd_loss`)
============================  =================================================  ===================

Composition follows the papers: ESD is built on rate-BP; Strong2Weak / Weak2Strong need the per-timestep
outputs, which only a ``T``-step forward with a graph has, so they train with BPTT (the rate-BP rate pass
has no time axis; combining them raises ``ValueError``).

Infrastructure: AMP on CUDA (``torch.autocast`` fp16 + ``GradScaler``; off on CPU), data parallelism under
``torchrun`` (NCCL on CUDA, gloo on CPU; see :func:`init_distributed`), checkpoints with resume (plain
``torch.save`` of state dicts, loaded with ``torch.load(..., weights_only=True)``), tqdm bars, a JSON-ready
history and a PNG training curve (:func:`plot_history`).

Data parallelism. The step functions run several passes and call sub-modules directly (the rate-BP spike
pass, ESD's ``exits``), which bypass ``DistributedDataParallel``'s forward hooks; so instead of wrapping the
model, every rank averages the gradients with one flattened ``all_reduce`` after ``backward`` (the same
synchronous data-parallel update DDP performs), starts from rank 0's parameters, and averages BatchNorm
running statistics before each evaluation. Each rank reads its own shard of the training set
(``DistributedSampler``); the effective batch is ``batch_size * world_size``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from graphspike_kd.spiking.esd import ESDNet, esd_step_loss
from graphspike_kd.spiking.neurons import reset_net
from graphspike_kd.spiking.ratebp import bptt_loss, ratebp_loss, set_mode
from graphspike_kd.spiking.timestep_kd import METHODS as TIMESTEP_METHODS
from graphspike_kd.spiking.timestep_kd import timestep_kd_loss

#: Training methods accepted by :class:`TrainConfig`.
METHODS = ("vanilla", "ratebp", "esd", *TIMESTEP_METHODS)

StepFunction = Callable[[nn.Module, Tensor, Tensor, int], dict[str, Any]]


# ----------------------------------------------------------------------------------------- per-step logits
def _logit_layer(model: nn.Module) -> nn.Linear:
    inner = model.backbone if isinstance(model, ESDNet) else model
    head = getattr(inner, "head", None)
    fc = getattr(head, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no head.fc Linear layer; timestep distillation needs a model of "
            "graphspike_kd.spiking.models (its head applies fc to every time step, [T*N, F] -> [T*N, C])"
        )
    return fc


@contextlib.contextmanager
def capture_step_logits(model: nn.Module) -> Iterator[list[Tensor]]:
    """Collect the classifier's per-step logits ``[T*N, C]`` (before the mean over time) while inside."""
    captured: list[Tensor] = []
    handle = _logit_layer(model).register_forward_hook(lambda mod, inp, out: captured.append(out))
    try:
        yield captured
    finally:
        handle.remove()


def step_logits(model: nn.Module, x: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """Plain ``T``-step forward (with graph) returning ``(per-step logits [T, N, C], mean logits [N, C])``."""
    set_mode(model, "plain")
    reset_net(model)
    with capture_step_logits(model) as captured:
        logits = model(x, T=T)
    if len(captured) != 1:
        raise RuntimeError(f"expected the classifier to run once per forward, it ran {len(captured)} times")
    n = logits.shape[0]
    flat = captured[0]
    if flat.shape[0] != T * n:
        raise RuntimeError(f"classifier output has {flat.shape[0]} rows, expected T*N = {T}*{n}")
    return flat.view(T, n, -1), logits


def timestep_kd_step_loss(model: nn.Module, x: Tensor, target: Tensor, T: int | None = None, *,
                          method: str = "s2w", **kwargs: Any) -> dict[str, Any]:
    """One BPTT batch with timestep self-distillation: per-step logits, then
    :func:`~graphspike_kd.spiking.timestep_kd.timestep_kd_loss` (``kwargs`` go to it)."""
    steps = x.shape[0] if x.dim() == 5 else T
    if steps is None:
        raise ValueError("timestep_kd_step_loss: static input needs T")
    per_step, logits = step_logits(model, x, int(steps))
    out: dict[str, Any] = timestep_kd_loss(per_step, target, method, **kwargs)
    out["logits"] = logits
    return out


# ----------------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything the trainer needs besides the model and the data (JSON-serialisable).

    Args:
        method (str): one of :data:`METHODS`. (default: ``"vanilla"``)
        T (int): time steps (for frames, the frame count must match). (default: ``4``)
        epochs (int): (default: ``10``)
        batch_size (int): per process. (default: ``64``)
        lr, momentum, weight_decay: SGD settings (``optimizer="adam"`` ignores momentum). (defaults 0.1, 0.9,
            5e-4)
        optimizer (str): ``"sgd"`` or ``"adam"``. (default: ``"sgd"``)
        no_decay_on_bn_bias (bool): no weight decay on BN parameters and biases (official rate-BP).
            (default: ``True``)
        schedule (str): ``"cosine"`` (to 0 over ``epochs``; rate-BP / ESD) or ``"step"`` (``gamma`` every
            ``step_size`` epochs; Synergy: 0.1 every 30). (default: ``"cosine"``)
        kd_weight, kd_temperature, kd_detach_teacher: timestep KD :math:`\\lambda`, :math:`\\alpha`, detach.
            (defaults 1.0, 2.0, True)
        esd_alpha, esd_beta, esd_temperature: ESD weights. (defaults 1.0, 0.3, 3.0)
        grad_scale (float or None): factor on the loss gradient of rate-BP and ESD (``method="ratebp"`` /
            ``"esd"``); ``None`` = the official :math:`1/T`. (default: ``None``)
        lean (bool): rate-BP spike pass one step at a time (memory flat in ``T``). (default: ``False``)
        steps_per_call (int or None): rate-BP spike pass ``c`` steps at a time (memory bounded by ``c``
            steps); ``None`` = all ``T`` at once, or one with ``lean``. (default: ``None``)
        amp (bool): mixed precision when on CUDA (ignored on CPU). (default: ``True``)
        seed (int): data order and augmentation seed. (default: ``0``)
        eval_steps (list of int or None): also evaluate with the first ``t`` steps for each ``t`` (low
            latency); ``None`` = ``1..T`` for ``T <= 8`` else only ``T``. (default: ``None``)
        checkpoint_dir (str or None): write ``last.pt`` there after every epoch. (default: ``None``)
        resume (bool): continue from ``checkpoint_dir/last.pt`` if it exists. (default: ``False``)
        max_steps_per_epoch (int or None): stop each epoch after that many batches (smoke tests).
        progress (bool): tqdm bars (rank 0 only). (default: ``True``)
        num_workers (int): DataLoader workers. (default: ``0``)
    """

    method: str = "vanilla"
    T: int = 4
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    no_decay_on_bn_bias: bool = True
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    kd_weight: float = 1.0
    kd_temperature: float = 2.0
    kd_detach_teacher: bool = True
    esd_alpha: float = 1.0
    esd_beta: float = 0.3
    esd_temperature: float = 3.0
    grad_scale: float | None = None
    lean: bool = False
    steps_per_call: int | None = None
    amp: bool = True
    seed: int = 0
    eval_steps: list[int] | None = None
    checkpoint_dir: str | None = None
    resume: bool = False
    max_steps_per_epoch: int | None = None
    progress: bool = True
    num_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"TrainConfig: method must be one of {METHODS}, got {self.method!r}")
        if self.T < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"TrainConfig: T, epochs, batch_size must be >= 1, got {self.T}, {self.epochs}, "
                             f"{self.batch_size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"TrainConfig: optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"TrainConfig: schedule must be 'cosine', 'step' or 'constant', "
                             f"got {self.schedule!r}")
        if self.lean and self.method not in ("ratebp", "esd"):
            raise ValueError(f"TrainConfig: lean=True is a rate-BP option; method {self.method!r} "
                             "trains with BPTT")
        if self.grad_scale is not None:
            if self.method not in ("ratebp", "esd"):
                raise ValueError(f"TrainConfig: grad_scale is a rate-BP option; method {self.method!r} "
                                 "trains with BPTT")
            if not (math.isfinite(self.grad_scale) and self.grad_scale > 0):
                raise ValueError(f"TrainConfig: grad_scale must be finite and > 0, got {self.grad_scale}")
        if self.steps_per_call is not None:
            if self.method not in ("ratebp", "esd"):
                raise ValueError(f"TrainConfig: steps_per_call is a rate-BP option; method {self.method!r} "
                                 "trains with BPTT")
            if self.steps_per_call < 1 or (self.lean and self.steps_per_call != 1):
                raise ValueError(f"TrainConfig: steps_per_call must be >= 1 (and 1 with lean=True), got "
                                 f"{self.steps_per_call}")

    def resolved_eval_steps(self) -> list[int]:
        if self.eval_steps is not None:
            bad = [t for t in self.eval_steps if not 1 <= t <= self.T]
            if bad:
                raise ValueError(f"TrainConfig: eval_steps must lie in [1, T={self.T}], got {bad}")
            return sorted(set(self.eval_steps) | {self.T})
        return list(range(1, self.T + 1)) if self.T <= 8 else [self.T]


def make_step_function(config: TrainConfig) -> StepFunction:
    """The per-batch loss of ``config.method`` (see the module table)."""
    m = config.method
    if m == "vanilla":
        return bptt_loss
    if m == "ratebp":
        return partial(ratebp_loss, lean=config.lean, steps_per_call=config.steps_per_call,
                       grad_scale=config.grad_scale)
    if m == "esd":
        return partial(esd_step_loss, lean=config.lean, steps_per_call=config.steps_per_call,
                       alpha=config.esd_alpha, beta=config.esd_beta, temperature=config.esd_temperature,
                       grad_scale=config.grad_scale)
    return partial(timestep_kd_step_loss, method=m, weight=config.kd_weight,
                   temperature=config.kd_temperature, detach_teacher=config.kd_detach_teacher)


# ------------------------------------------------------------------------------------------ distributed
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device | None = None) -> DistInfo:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``PORT``); NCCL on CUDA, gloo otherwise. Without those variables: a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        use_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local)


def _broadcast_state(model: nn.Module) -> None:
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def _allreduce_gradients(model: nn.Module, world: int) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def _average_buffers(model: nn.Module, world: int) -> None:
    with torch.no_grad():
        for b in model.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b.div_(world)


# ------------------------------------------------------------------------------------------ optimisation
def _param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    if not config.no_decay_on_bn_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
            (no_decay if is_bn or name == "bias" else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer,
                   config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


# ------------------------------------------------------------------------------------------------ trainer
def _to_time_major(x: Tensor) -> Tensor:
    """A DataLoader batch of frames is ``[N, T, C, H, W]``; the models take ``[T, N, C, H, W]``."""
    return x.transpose(0, 1).contiguous() if x.dim() == 5 else x


def _scalar_terms(out: dict[str, Any]) -> dict[str, float]:
    terms = {}
    for k, v in out.items():
        if k in ("logits", "spike_logits", "exit_logits", "confidence") or not isinstance(v, Tensor):
            continue
        if v.dim() == 0 and v.is_floating_point():
            terms[k] = float(v.detach())
    return terms


class Trainer:
    """Train ``model`` with ``config`` (module docstring); :meth:`fit` returns the results dict.

    Args:
        model (nn.Module): a model of :mod:`graphspike_kd.spiking.models` (an
            :class:`~graphspike_kd.spiking.esd.ESDNet` for ``method="esd"``).
        config (TrainConfig): the settings.
        device (torch.device or str, optional): default CUDA when available, else CPU.
        dist_info (DistInfo, optional): from :func:`init_distributed`; default single process.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, *, device: torch.device | str | None = None,
                 dist_info: DistInfo | None = None) -> None:
        if config.method == "esd" and not isinstance(model, ESDNet):
            raise ValueError(f"method 'esd' needs an ESDNet (backbone + branches), "
                             f"got {type(model).__name__}")
        if config.method in TIMESTEP_METHODS:
            _logit_layer(model)
        self.config = config
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.dist = dist_info or DistInfo()
        self.model = model.to(self.device)
        self.step_fn = make_step_function(config)
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = make_scheduler(self.optimizer, config)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        if self.dist.enabled:
            _broadcast_state(self.model)
        if config.resume:
            if not config.checkpoint_dir:
                raise ValueError("TrainConfig.resume=True needs checkpoint_dir")
            path = Path(config.checkpoint_dir) / "last.pt"
            if path.exists():
                self.load_checkpoint(path)

    # ------------------------------------------------------------------------------------- checkpoints
    def _fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {"method": c.method, "T": c.T, "epochs": c.epochs, "model": type(self.model).__name__}

    def save_checkpoint(self, path: str | os.PathLike, epoch: int) -> None:
        """Atomically write the model / optimiser / scheduler / scaler state dicts, history and RNG."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "history": self.history,
            "fingerprint": self._fingerprint(),
            "config": json.loads(json.dumps(asdict(self.config))),
            "torch_rng": torch.get_rng_state(),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a :meth:`save_checkpoint` file (``torch.load(..., weights_only=True)``); training resumes
        at the next epoch."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("fingerprint") != self._fingerprint():
            raise ValueError(f"{path}: checkpoint was written for {state.get('fingerprint')}, this run is "
                             f"{self._fingerprint()}; use another checkpoint_dir or resume=False")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        torch.set_rng_state(state["torch_rng"].cpu())

    # -------------------------------------------------------------------------------------------- loops
    def _loader(self, dataset: Dataset, *, train: bool, epoch: int = 0) -> DataLoader:
        sampler = None  # evaluation: every rank reads the whole test set (identical models and numbers)
        if train:  # this rank's shard, reshuffled per epoch from (seed, epoch): resumable without RNG state
            sampler = DistributedSampler(dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                         shuffle=True, seed=self.config.seed, drop_last=False)
            sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_size=self.config.batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda")

    def train_epoch(self, dataset: Dataset, epoch: int) -> dict[str, float]:
        from tqdm.auto import tqdm

        c = self.config
        self.model.train()
        loader = self._loader(dataset, train=True, epoch=epoch)
        sums: dict[str, float] = {}
        correct = seen = batches = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{c.epochs} [{c.method}]", leave=False,
                   disable=not (c.progress and self.dist.is_main))
        for i, (x, y) in enumerate(bar):
            if c.max_steps_per_epoch is not None and i >= c.max_steps_per_epoch:
                break
            x = _to_time_major(x.to(self.device, non_blocking=True))
            y = y.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
                out = self.step_fn(self.model, x, y, c.T)
            loss = out["loss"]
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(f"non-finite training loss {float(loss)} at epoch {epoch + 1}, "
                                         f"batch {i} "
                                         f"(method {c.method!r}, lr {self.optimizer.param_groups[0]['lr']})")
            self.scaler.scale(loss).backward()
            if self.dist.enabled:
                _allreduce_gradients(self.model, self.dist.world_size)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for k, v in _scalar_terms(out).items():
                sums[k] = sums.get(k, 0.0) + v
            correct += int((out["logits"].detach().argmax(-1) == y).sum())
            seen += y.shape[0]
            batches += 1
            shown = float(out.get("ce", loss).detach())
            bar.set_postfix(loss=f"{shown:.3f}", acc=f"{correct / max(seen, 1):.3f}")
        bar.close()
        stats = {f"train_{k}": v / max(batches, 1) for k, v in sums.items()}
        stats["train_acc"] = correct / max(seen, 1)
        if self.dist.enabled:
            t = torch.tensor([stats["train_acc"] * seen, seen], dtype=torch.float64)
            dist.all_reduce(t)
            stats["train_acc"] = float(t[0] / t[1].clamp(min=1))
        return stats

    @torch.no_grad()
    def evaluate(self, dataset: Dataset, steps: list[int] | None = None) -> dict[int, float]:
        """Accuracy of the plain SNN (eval-mode BN) using the first ``t`` time steps, for each ``t``."""
        c = self.config
        steps = steps or [c.T]
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("Trainer.evaluate: the test set is empty (check the split and the data folder)")
        if self.dist.enabled:
            _average_buffers(self.model, self.dist.world_size)
        self.model.eval()
        set_mode(self.model, "plain")
        correct = dict.fromkeys(steps, 0)
        total = 0
        for x, y in self._loader(dataset, train=False):
            x = _to_time_major(x.to(self.device, non_blocking=True))
            y = y.to(self.device, non_blocking=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
                per_step, _ = step_logits(self.model, x, c.T)
            csum = per_step.float().cumsum(0)
            for t in steps:
                correct[t] += int((csum[t - 1].argmax(-1) == y).sum())
            total += y.shape[0]
        reset_net(self.model)
        return {t: correct[t] / max(total, 1) for t in steps}

    def fit(self, train_set: Dataset, test_set: Dataset, *, until_epoch: int | None = None) -> dict[str, Any]:
        """Train for the remaining epochs (resuming if a checkpoint was loaded), or only up to epoch
        ``until_epoch`` (a time-limited job that a later ``resume=True`` run continues); returns
        ``{"history", "final_test_acc", "best_test_acc", "test_acc_at_steps", "wall_time_s"}``."""
        c = self.config
        steps = c.resolved_eval_steps()
        t0 = time.perf_counter()
        stop = c.epochs if until_epoch is None else min(int(until_epoch), c.epochs)
        for epoch in range(self.start_epoch, stop):
            te = time.perf_counter()
            stats = self.train_epoch(train_set, epoch)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            acc = self.evaluate(test_set, steps)
            record = {"epoch": epoch + 1, "lr": lr, **stats, "test_acc": acc[c.T],
                      "test_acc_at_steps": {str(t): a for t, a in acc.items()},
                      "epoch_time_s": time.perf_counter() - te}
            self.history.append(record)
            if c.checkpoint_dir and self.dist.is_main:
                self.save_checkpoint(Path(c.checkpoint_dir) / "last.pt", epoch)
            if self.dist.enabled:
                dist.barrier()
            self.start_epoch = epoch + 1
        if not self.history:
            raise RuntimeError("Trainer.fit: no epoch ran (the checkpoint is already at the last epoch?)")
        last = self.history[-1]
        return {
            "history": self.history,
            "final_test_acc": last["test_acc"],
            "best_test_acc": max(h["test_acc"] for h in self.history),
            "test_acc_at_steps": last["test_acc_at_steps"],
            "wall_time_s": time.perf_counter() - t0,
        }


# ---------------------------------------------------------------------------------------------- outputs
def plot_history(histories: dict[str, list[dict[str, Any]]], path: str | os.PathLike,
                 title: str = "") -> None:
    """Write a PNG with test accuracy and training loss per epoch, one line per run name."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"plot_history needs matplotlib: pip install graphspike_kd[dev] ({exc})") from exc
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for name, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        ax_acc.plot(epochs, [100 * h["test_acc"] for h in hist], label=name)
        key = "train_ce" if all("train_ce" in h for h in hist) else "train_loss"
        ax_loss.plot(epochs, [h.get(key, math.nan) for h in hist], label=name)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title=title or "test accuracy")
    ax_loss.set(xlabel="epoch", ylabel="training cross-entropy", title="training loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy(logits: Tensor, target: Tensor) -> float:
    """Top-1 accuracy of ``[N, C]`` logits."""
    return float((logits.argmax(-1) == target).float().mean())


__all__ = [
    "METHODS",
    "TIMESTEP_METHODS",
    "DistInfo",
    "TrainConfig",
    "Trainer",
    "accuracy",
    "capture_step_logits",
    "init_distributed",
    "make_optimizer",
    "make_scheduler",
    "make_step_function",
    "plot_history",
    "step_logits",
    "timestep_kd_step_loss",
]
