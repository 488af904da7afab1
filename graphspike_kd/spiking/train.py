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

Any model. A model whose ``forward`` takes a ``T`` keyword (the models of
:mod:`graphspike_kd.spiking.models`, :class:`~graphspike_kd.spiking.esd.ESDNet`) is called as
``model(x, T=T)`` with static ``[N, ...]`` or frames ``[T, N, ...]`` and returns time-averaged logits
``[N, C]``. Any other ``nn.Module`` follows the **time-major convention**: it is called as
``model(x_seq)`` with ``x_seq = [T, N, ...]`` (a static sample is repeated over the ``T`` steps: direct
encoding; frames are passed as they are) after :func:`~graphspike_kd.spiking.neurons.reset_net`, and
returns per-step logits ``[T, N, C]`` (the readout is their mean over time) or logits ``[N, C]``. Such a
model trains with ``"vanilla"`` (BPTT) and, when it returns ``[T, N, C]``, with the timestep methods.
Rate-BP and ESD need pieces a plain module lacks (a ``T`` keyword,
:class:`~graphspike_kd.spiking.ratebp.RateBPNeuron` neurons, rate-BP BatchNorms, an
:class:`~graphspike_kd.spiking.esd.ESDNet`); :func:`missing_pieces` lists what is missing and
:class:`Trainer` raises with that list. A DataLoader batch of 5 dimensions is frames ``[N, T, C, H, W]``
(``TrainConfig.frames=None``); set ``frames=True`` / ``False`` for other layouts (``[N, T, ...]`` /
static).

Accuracy is a **percentage** (0-100) everywhere: :meth:`Trainer.evaluate`, :meth:`Trainer.fit`, the history,
:func:`accuracy` and the benchmark's JSON.

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
(``DistributedSampler``); the effective batch is ``batch_size * world_size`` (``batch_size`` is per process;
keep ``batch_size * world_size`` equal to the single-process batch to keep the number of optimiser steps per
epoch, which is what the benchmark's ``--batch-size`` does: it is the global batch). Evaluation is sharded
too (rank ``r`` reads samples ``r, r + W, ...``, no duplicates) and the correct counts are all-reduced.
:func:`init_distributed` selects ``cuda:LOCAL_RANK`` on CUDA and :class:`Trainer` defaults to that device.

Reliability. The checkpoint records the whole :class:`TrainConfig` (:data:`NOT_FINGERPRINTED` fields aside);
``resume=True`` with a changed setting raises ``ValueError`` naming the changes, unless each changed field
is listed in ``resume_overrides``: the new value then applies from the resumed epoch (learning rate,
momentum, weight decay and schedule length are re-applied to the restored optimiser and scheduler) and
:meth:`Trainer.fit` reports the change under ``"config_overrides"``. With ``check_finite=True`` (the
default; it costs one reduction per batch, below the timing noise on digits) every input batch and the
parameters (at the start and after every epoch) must be finite, else ``ValueError`` names the batch or the
parameter, and non-finite gradients raise ``FloatingPointError``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from graphspike_kd._atomic import atomic_savefig, atomic_write_text
from graphspike_kd.spiking.esd import ESDNet, esd_step_loss
from graphspike_kd.spiking.neurons import reset_net
from graphspike_kd.spiking.ratebp import bptt_loss, check_rate_compatible, ratebp_loss, scale_grad, set_mode
from graphspike_kd.spiking.timestep_kd import METHODS as TIMESTEP_METHODS
from graphspike_kd.spiking.timestep_kd import timestep_kd_loss

#: Training methods accepted by :class:`TrainConfig`.
METHODS = ("vanilla", "ratebp", "esd", *TIMESTEP_METHODS)

#: The rate-BP / ESD papers' gradient scale (their official code): the loss gradient times :math:`1/T`.
GRAD_SCALE_PAPER = "1/T"

#: ``TrainConfig.grad_scale=None`` per method (others: 1). Chosen by measurement on digits (3-stage VGG and
#: ResNet-18, T = 4, ten seeds, 5 and 20 epochs; the table is in docs/results-spiking.md): rate-BP trains
#: better with 1 after a short budget and equally after a long one; ESD does not, so it keeps the paper's
#: :math:`1/T`.
DEFAULT_GRAD_SCALE: dict[str, float | str] = {"ratebp": 1.0, "esd": GRAD_SCALE_PAPER}

#: :class:`TrainConfig` fields left out of the checkpoint fingerprint: they do not change what is trained.
NOT_FINGERPRINTED = ("checkpoint_dir", "resume", "resume_overrides", "progress", "num_workers", "eval_steps",
                     "check_finite", "extra")

#: Fields a resume can never change (the restored optimiser, scheduler and model would not fit them).
NOT_OVERRIDABLE = ("method", "optimizer", "no_decay_on_bn_bias", "schedule")

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


def _check_steps(T: Any, where: str) -> int:
    if isinstance(T, bool) or not isinstance(T, int | Tensor) or int(T) < 1:
        raise ValueError(f"{where}: the number of time steps T must be an int >= 1, got {T!r}")
    return int(T)


def step_logits(model: nn.Module, x: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """Plain ``T``-step forward (with graph) returning ``(per-step logits [T, N, C], mean logits [N, C])``."""
    T = _check_steps(T, "step_logits")
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


# ------------------------------------------------------------------------------------------- any model
def takes_T(model: nn.Module) -> bool:
    """Whether ``model.forward`` accepts a ``T`` keyword (then it is called as ``model(x, T=T)`` with
    static ``[N, ...]`` or frames ``[T, N, ...]``); otherwise the time-major convention applies (module
    docstring)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "T" in params


def to_sequence(x: Tensor, T: int, frames: bool) -> Tensor:
    """The time-major input of the convention: frames ``[T, N, ...]`` unchanged (their ``T`` must match),
    a static batch ``[N, ...]`` repeated over ``T`` steps (direct encoding, a view)."""
    T = _check_steps(T, "to_sequence")
    if frames:
        if x.shape[0] != T:
            raise ValueError(f"frames have {x.shape[0]} time steps but T = {T}")
        return x
    return x.unsqueeze(0).expand(T, *x.shape)


def sequence_forward(model: nn.Module, x_seq: Tensor) -> tuple[Tensor | None, Tensor]:
    """Run a time-major model on ``x_seq = [T, N, ...]`` from a reset state; returns
    ``(per-step logits [T, N, C] or None, logits [N, C])`` (per-step logits averaged over time)."""
    if x_seq.dim() < 2 or x_seq.shape[0] < 1:
        raise ValueError(f"sequence_forward: input must be [T, N, ...] with T >= 1, got {tuple(x_seq.shape)}")
    steps, n = x_seq.shape[:2]
    set_mode(model, "plain")
    reset_net(model)
    out = model(x_seq)
    if not isinstance(out, Tensor):
        raise TypeError(f"{type(model).__name__} returned {type(out).__name__}; the trainer needs a tensor "
                        "of per-step logits [T, N, C] or logits [N, C]")
    if out.dim() == 3 and tuple(out.shape[:2]) == (steps, n):
        return out, out.mean(0)
    if out.dim() == 2 and out.shape[0] == n:
        return None, out
    raise ValueError(f"{type(model).__name__} mapped input {tuple(x_seq.shape)} to {tuple(out.shape)}; the "
                     f"time-major convention needs per-step logits [T={steps}, N={n}, C] or logits "
                     f"[N={n}, C]")


def _factor(grad_scale: float | str | None, steps: int) -> float | None:
    if grad_scale is None:
        return None
    return 1.0 / steps if grad_scale == GRAD_SCALE_PAPER else float(grad_scale)


def sequence_bptt_loss(model: nn.Module, x_seq: Tensor, target: Tensor, T: int | None = None, *,
                       grad_scale: float | str | None = None) -> dict[str, Any]:
    """One BPTT batch of a time-major model: cross-entropy of the time-averaged logits. Returns
    ``{"loss", "ce", "logits"}``; ``grad_scale`` (a number or ``"1/T"``) multiplies the loss gradient
    (value unchanged)."""
    _, logits = sequence_forward(model, x_seq)
    value = torch.nn.functional.cross_entropy(logits, target)
    factor = _factor(grad_scale, x_seq.shape[0])
    loss = value if factor is None else scale_grad(value, factor)
    return {"loss": loss, "ce": value.detach(), "logits": logits}


def sequence_timestep_kd_loss(model: nn.Module, x_seq: Tensor, target: Tensor, T: int | None = None, *,
                              method: str = "s2w", grad_scale: float | str | None = None,
                              **kwargs: Any) -> dict[str, Any]:
    """Timestep self-distillation for a time-major model returning per-step logits ``[T, N, C]``."""
    per_step, logits = sequence_forward(model, x_seq)
    if per_step is None:
        raise ValueError(f"method {method!r} needs per-step logits: {type(model).__name__} must return "
                         f"[T, N, C] under the time-major convention, it returned [N, C]")
    out: dict[str, Any] = timestep_kd_loss(per_step, target, method, **kwargs)
    factor = _factor(grad_scale, x_seq.shape[0])
    if factor is not None:
        out["loss"] = scale_grad(out["loss"], factor)
    out["logits"] = logits
    return out


def missing_pieces(model: nn.Module, method: str) -> list[str]:
    """What ``model`` lacks to be trained with ``method`` (empty: it can be). ``"vanilla"`` needs nothing
    beyond the calling convention (module docstring); the timestep methods need per-step logits (a
    ``head.fc`` Linear for a model taking ``T``; a ``[T, N, C]`` output otherwise, checked on the first
    batch); ``"ratebp"`` needs a ``T`` keyword in ``forward`` and the rate-BP modules
    (:func:`~graphspike_kd.spiking.ratebp.check_rate_compatible`); ``"esd"`` an
    :class:`~graphspike_kd.spiking.esd.ESDNet`."""
    if method not in METHODS:
        raise ValueError(f"missing_pieces: method must be one of {METHODS}, got {method!r}")
    missing: list[str] = []
    if method in TIMESTEP_METHODS and takes_T(model):
        try:
            _logit_layer(model)
        except ValueError:
            missing.append("a head.fc nn.Linear applied to every time step (per-step logits), or a forward "
                           "without T returning [T, N, C]")
    if method == "esd" and not isinstance(model, ESDNet):
        missing.append("an ESDNet (graphspike_kd.spiking.esd.ESDNet: a SpikingNet backbone plus branches)")
    if method in ("ratebp", "esd"):
        inner = model.backbone if isinstance(model, ESDNet) else model
        if not takes_T(inner):
            missing.append("a forward(x, T=...) taking static [N, ...] or frames [T, N, ...] and returning "
                           "time-averaged logits [N, C]")
        try:
            check_rate_compatible(inner)
        except ValueError as exc:
            missing.append(str(exc))
    return missing


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
        grad_scale (float, str or None): factor on the gradient of the loss (its value is unchanged), any
            method; ``"1/T"`` (:data:`GRAD_SCALE_PAPER`) = the rate-BP / ESD papers' :math:`1/T`.
            ``None`` = the method's default, :data:`DEFAULT_GRAD_SCALE`: 1 for ``"ratebp"`` (measured: it
            trains faster than :math:`1/T` and ends level), :math:`1/T` for ``"esd"``, 1 for the BPTT
            methods. (default: ``None``)
        lean (bool): rate-BP spike pass one step at a time (memory flat in ``T``). (default: ``False``)
        steps_per_call (int or None): rate-BP spike pass ``c`` steps at a time (memory bounded by ``c``
            steps); ``None`` = all ``T`` at once, or one with ``lean``. (default: ``None``)
        amp (bool): mixed precision when on CUDA (ignored on CPU). (default: ``True``)
        seed (int): data order and augmentation seed. (default: ``0``)
        eval_steps (list of int or None): also evaluate with the first ``t`` steps for each ``t`` (low
            latency); ``None`` = ``1..T`` for ``T <= 8`` else only ``T``. (default: ``None``)
        checkpoint_dir (str or None): write ``last.pt`` there after every epoch. (default: ``None``)
        resume (bool): continue from ``checkpoint_dir/last.pt`` if it exists. (default: ``False``)
        resume_overrides (list of str): :class:`TrainConfig` fields allowed to differ from the checkpoint's
            on resume; the new values apply from the resumed epoch and are reported. (default: ``[]``)
        max_steps_per_epoch (int or None): stop each epoch after that many batches (>= 1; smoke tests).
            (default: ``None``)
        progress (bool): tqdm bars (rank 0 only). (default: ``True``)
        num_workers (int): DataLoader workers. (default: ``0``)
        frames (bool or None): ``True``: every batch is a sequence ``[N, T, ...]``; ``False``: static
            ``[N, ...]``; ``None``: 5-D batches are frames ``[N, T, C, H, W]``, others static.
            (default: ``None``)
        check_finite (bool): reject non-finite inputs and parameters with ``ValueError`` and non-finite
            gradients with ``FloatingPointError`` (module docstring). (default: ``True``)
        extra (dict): free-form metadata, stored with the checkpoint. (default: ``{}``)
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
    grad_scale: float | str | None = None
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
    frames: bool | None = None
    check_finite: bool = True
    resume_overrides: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"TrainConfig: method must be one of {METHODS}, got {self.method!r}")
        for name in ("T", "epochs", "batch_size", "step_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig: {name} must be an int >= 1, got {value!r}")
        cap = self.max_steps_per_epoch
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"TrainConfig: max_steps_per_epoch must be None or an int >= 1 (0 would train "
                             f"nothing), got {self.max_steps_per_epoch!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"TrainConfig: num_workers must be an int >= 0, got {self.num_workers!r}")
        positive = ("lr", "gamma", "kd_temperature", "esd_temperature")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"TrainConfig: {name} must be finite and > 0, got {value!r}")
        for name in ("weight_decay", "kd_weight", "esd_alpha", "esd_beta"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"TrainConfig: {name} must be finite and >= 0, got {value!r}")
        if not (isinstance(self.momentum, int | float) and 0 <= self.momentum < 1):
            raise ValueError(f"TrainConfig: momentum must lie in [0, 1), got {self.momentum!r}")
        unknown = sorted(set(self.resume_overrides) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"TrainConfig: resume_overrides names unknown fields {unknown}")
        fixed = sorted(set(self.resume_overrides) & set(NOT_OVERRIDABLE))
        if fixed:
            raise ValueError(f"TrainConfig: {fixed} cannot change on resume (the checkpoint's optimiser / "
                             f"schedule / method would not match); start a new run")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"TrainConfig: optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"TrainConfig: schedule must be 'cosine', 'step' or 'constant', "
                             f"got {self.schedule!r}")
        if self.lean and self.method not in ("ratebp", "esd"):
            raise ValueError(f"TrainConfig: lean=True is a rate-BP option; method {self.method!r} "
                             "trains with BPTT")
        gs = self.grad_scale
        if gs is not None and gs != GRAD_SCALE_PAPER:
            if isinstance(gs, bool) or not isinstance(gs, int | float) or not (math.isfinite(gs) and gs > 0):
                raise ValueError(f"TrainConfig: grad_scale must be None, {GRAD_SCALE_PAPER!r} or finite and "
                                 f"> 0, got {gs!r}")
        if self.steps_per_call is not None:
            if self.method not in ("ratebp", "esd"):
                raise ValueError(f"TrainConfig: steps_per_call is a rate-BP option; method {self.method!r} "
                                 "trains with BPTT")
            if self.steps_per_call < 1 or (self.lean and self.steps_per_call != 1):
                raise ValueError(f"TrainConfig: steps_per_call must be >= 1 (and 1 with lean=True), got "
                                 f"{self.steps_per_call}")

    def resolved_grad_scale(self) -> float | str:
        """``grad_scale``, or the method's default (:data:`DEFAULT_GRAD_SCALE`) when it is ``None``."""
        if self.grad_scale is not None:
            return self.grad_scale
        return DEFAULT_GRAD_SCALE.get(self.method, 1.0)

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
    gs = config.resolved_grad_scale()
    if m in ("ratebp", "esd"):  # their own argument: None is the official 1/T
        official = None if gs == GRAD_SCALE_PAPER else float(gs)
        if m == "ratebp":
            return partial(ratebp_loss, lean=config.lean, steps_per_call=config.steps_per_call,
                           grad_scale=official)
        return partial(esd_step_loss, lean=config.lean, steps_per_call=config.steps_per_call,
                       alpha=config.esd_alpha, beta=config.esd_beta, temperature=config.esd_temperature,
                       grad_scale=official)
    if m == "vanilla":
        step: StepFunction = bptt_loss
    else:
        step = partial(timestep_kd_step_loss, method=m, weight=config.kd_weight,
                       temperature=config.kd_temperature, detach_teacher=config.kd_detach_teacher)
    return step if gs == 1.0 else partial(_scaled, step, gs)


def make_sequence_step_function(config: TrainConfig) -> StepFunction:
    """The per-batch loss of ``config.method`` for a time-major model (module docstring): BPTT or the
    timestep methods; it receives ``x_seq = [T, N, ...]``."""
    gs = config.resolved_grad_scale()
    gs = None if gs == 1.0 else gs
    if config.method == "vanilla":
        return partial(sequence_bptt_loss, grad_scale=gs)
    if config.method in TIMESTEP_METHODS:
        return partial(sequence_timestep_kd_loss, method=config.method, grad_scale=gs,
                       weight=config.kd_weight, temperature=config.kd_temperature,
                       detach_teacher=config.kd_detach_teacher)
    raise ValueError(f"method {config.method!r} needs a model whose forward takes T (see missing_pieces)")


def _scaled(step: StepFunction, grad_scale: float | str, model: nn.Module, x: Tensor, target: Tensor,
            T: int) -> dict[str, Any]:
    out = step(model, x, target, T)
    out["loss"] = scale_grad(out["loss"], _factor(grad_scale, x.shape[0] if x.dim() == 5 else T))
    return out


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

    def default_device(self) -> torch.device:
        """``cuda:local_rank`` when CUDA is available, else CPU (the :class:`Trainer` default)."""
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def init_distributed(device: torch.device | None = None) -> DistInfo:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``PORT``); NCCL on CUDA, gloo otherwise. On CUDA the process's current device becomes
    ``cuda:LOCAL_RANK`` (``torch.cuda.set_device``) unless ``device`` names another CUDA device. Without
    those variables: a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if use_cuda:
        index = device.index if device is not None and device.index is not None else local
        torch.cuda.set_device(index)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local)


class ShardSampler(Sampler[int]):
    """Rank ``rank`` of ``world`` reads indices ``rank, rank + world, ...`` in order: every sample exactly
    once over the ranks (no padding duplicates), for sharded evaluation."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"ShardSampler: need 0 <= rank < world, got rank {rank}, world {world}")
        self.length, self.rank, self.world = int(length), rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


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
            :class:`~graphspike_kd.spiking.esd.ESDNet` for ``method="esd"``), or any ``nn.Module`` under the
            time-major convention of the module docstring (``"vanilla"`` and the timestep methods).
        config (TrainConfig): the settings.
        device (torch.device or str, optional): default ``cuda:LOCAL_RANK`` (``cuda:0`` in a single
            process) when CUDA is available, else CPU.
        dist_info (DistInfo, optional): from :func:`init_distributed`; default single process.

    Raises:
        ValueError: the model lacks pieces ``config.method`` needs (listed), a parameter is not finite, the
            checkpoint folder is not writable, or a resume changes settings not in ``resume_overrides``.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, *, device: torch.device | str | None = None,
                 dist_info: DistInfo | None = None) -> None:
        missing = missing_pieces(model, config.method)
        if missing:
            raise ValueError(f"{type(model).__name__} cannot be trained with method {config.method!r}; it "
                             "lacks: " + "; ".join(missing))
        self.config = config
        self.dist = dist_info or DistInfo()
        self.device = torch.device(device) if device is not None else self.dist.default_device()
        if config.checkpoint_dir:
            check_writable_dir(config.checkpoint_dir, "checkpoint_dir")
        self.model = model.to(self.device)
        self.sequence_model = not takes_T(model)
        make = make_sequence_step_function if self.sequence_model else make_step_function
        self.step_fn = make(config)
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = make_scheduler(self.optimizer, config)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.resumed_from_epoch: int | None = None
        self.config_overrides: list[dict[str, Any]] = []
        if self.dist.enabled:
            _broadcast_state(self.model)
        if config.resume:
            if not config.checkpoint_dir:
                raise ValueError("TrainConfig.resume=True needs checkpoint_dir")
            path = Path(config.checkpoint_dir) / "last.pt"
            if path.exists():
                self.load_checkpoint(path)
        if config.check_finite:
            self._check_parameters("at the start")

    # ------------------------------------------------------------------------------------- checkpoints
    def _fingerprint(self) -> dict[str, Any]:
        cfg = json.loads(json.dumps(asdict(self.config)))
        out = {k: v for k, v in cfg.items() if k not in NOT_FINGERPRINTED}
        out["model"] = type(self.model).__name__
        return out

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
            "config_overrides": self.config_overrides,
            "torch_rng": torch.get_rng_state(),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a :meth:`save_checkpoint` file (``torch.load(..., weights_only=True)``); training resumes
        at the next epoch. Settings that differ from the checkpoint's raise ``ValueError`` unless listed in
        ``config.resume_overrides`` (module docstring)."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        saved = state.get("fingerprint") or {}
        now = self._fingerprint()
        absent = "<absent>"
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k, absent) != now.get(k, absent))
        refused = [k for k in changed if k not in self.config.resume_overrides]
        if refused:
            detail = ", ".join(f"{k}: checkpoint {saved.get(k, absent)!r}, now {now.get(k, absent)!r}"
                               for k in refused)
            raise ValueError(f"{path}: this run's settings differ from the checkpoint's ({detail}); resume "
                             f"with the same settings, list the fields in resume_overrides (CLI: "
                             f"--resume-override {' '.join(refused)}) to apply the new values from the "
                             "resumed epoch, or use another checkpoint_dir / resume=False")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        self.resumed_from_epoch = self.start_epoch
        self.config_overrides = list(state.get("config_overrides", []))
        torch.set_rng_state(state["torch_rng"].cpu())
        if changed:
            self._apply_overrides({k: saved.get(k) for k in changed})
            self.config_overrides.append({"from_epoch": self.start_epoch + 1, "changes": {
                k: {"checkpoint": saved.get(k), "now": now.get(k)} for k in changed}})

    def _apply_overrides(self, old: dict[str, Any]) -> None:
        """Make the restored optimiser and scheduler follow the overridden settings."""
        c, groups = self.config, self.optimizer.param_groups
        if "lr" in old and old["lr"]:
            ratio = c.lr / float(old["lr"])
            for g in groups:
                g["initial_lr"] = g.get("initial_lr", g["lr"]) * ratio
            self.scheduler.base_lrs = [b * ratio for b in self.scheduler.base_lrs]
        if "momentum" in old and c.optimizer == "sgd":
            for g in groups:
                g["momentum"] = c.momentum
        if "weight_decay" in old:
            groups[0]["weight_decay"] = c.weight_decay  # the decay group (the other one has none)
        if "epochs" in old and isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            self.scheduler.T_max = c.epochs
        if isinstance(self.scheduler, torch.optim.lr_scheduler.StepLR):
            self.scheduler.step_size, self.scheduler.gamma = c.step_size, c.gamma
        # the closed-form learning rate at the restored epoch under the new settings
        e = self.scheduler.last_epoch
        for g, base in zip(groups, self.scheduler.base_lrs, strict=True):
            if c.schedule == "cosine":
                g["lr"] = base * (1 + math.cos(math.pi * min(e, c.epochs) / c.epochs)) / 2
            elif c.schedule == "step":
                g["lr"] = base * c.gamma ** (e // c.step_size)
            else:
                g["lr"] = base
        self.scheduler._last_lr = [g["lr"] for g in groups]  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------------ checks
    def _check_parameters(self, when: str) -> None:
        for name, p in self.model.named_parameters():
            if not bool(torch.isfinite(p.detach()).all()):
                raise ValueError(f"{type(self.model).__name__}.{name} has non-finite values {when} "
                                 "(check_finite=True); a NaN parameter silences the neurons")

    def _check_gradients(self, epoch: int, batch: int) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))):
            raise FloatingPointError(f"non-finite gradients at epoch {epoch + 1}, batch {batch} (method "
                                     f"{self.config.method!r}, lr {self.optimizer.param_groups[0]['lr']})")

    def _prepare(self, x: Tensor, where: str) -> Tensor:
        """A DataLoader batch in the form the step function takes (module docstring), checked."""
        c = self.config
        if c.check_finite and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{where}: the input batch has non-finite values (NaN or inf); check the data "
                             "(check_finite=True)")
        frames = x.dim() == 5 if c.frames is None else c.frames
        if frames:
            if x.dim() < 3 or x.shape[1] < 1:
                raise ValueError(f"{where}: a frame batch must be [N, T >= 1, ...], got {tuple(x.shape)}")
            x = x.transpose(0, 1).contiguous()  # [N, T, ...] -> [T, N, ...]
        if self.sequence_model:
            return to_sequence(x, c.T, frames)
        return x

    # -------------------------------------------------------------------------------------------- loops
    def _loader(self, dataset: Dataset, *, train: bool, epoch: int = 0) -> DataLoader:
        sampler: Sampler[int]
        if train:  # this rank's shard, reshuffled per epoch from (seed, epoch): resumable without RNG state
            sampler = DistributedSampler(dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                         shuffle=True, seed=self.config.seed, drop_last=False)
            sampler.set_epoch(epoch)
        else:  # evaluation: every sample once over the ranks
            sampler = ShardSampler(len(dataset), self.dist.rank, self.dist.world_size)  # type: ignore[arg-type]
        return DataLoader(dataset, batch_size=self.config.batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda")

    def _all_reduce_counts(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

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
            x = self._prepare(x.to(self.device, non_blocking=True), f"epoch {epoch + 1}, batch {i}")
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
            if c.check_finite and not self.use_amp:  # AMP: the GradScaler skips non-finite steps itself
                self._check_gradients(epoch, i)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for k, v in _scalar_terms(out).items():
                sums[k] = sums.get(k, 0.0) + v
            correct += int((out["logits"].detach().argmax(-1) == y).sum())
            seen += y.shape[0]
            batches += 1
            shown = float(out.get("ce", loss).detach())
            bar.set_postfix(loss=f"{shown:.3f}", acc=f"{100 * correct / max(seen, 1):.1f}")
        bar.close()
        if batches == 0:
            raise ValueError(f"Trainer: epoch {epoch + 1} saw no training batch (empty training set?)")
        stats = {f"train_{k}": v / batches for k, v in sums.items()}
        if self.dist.enabled:
            correct, seen = self._all_reduce_counts([correct, seen])
        stats["train_acc"] = 100 * (correct / max(seen, 1))
        return stats

    def _eval_logits(self, x: Tensor, steps: list[int]) -> dict[int, Tensor]:
        """Logits ``[N, C]`` using the first ``t`` steps, for each ``t`` in ``steps``."""
        c = self.config
        per_step: Tensor | None = None
        if self.sequence_model:
            per_step, logits = sequence_forward(self.model, x)
        elif _has_logit_layer(self.model):
            per_step, logits = step_logits(self.model, x, c.T)
        else:
            reset_net(self.model)
            logits = self.model(x, T=c.T)
        if per_step is not None:
            csum = per_step.float().cumsum(0)
            return {t: csum[t - 1] for t in steps}
        out = {}
        for t in steps:  # no per-step readout: run the first t steps
            if t == c.T:
                out[t] = logits.float()
            elif self.sequence_model:
                out[t] = sequence_forward(self.model, x[:t])[1].float()
            else:
                reset_net(self.model)
                out[t] = self.model(x[:t] if x.dim() == 5 else x, T=t).float()
        return out

    @torch.no_grad()
    def evaluate(self, dataset: Dataset, steps: list[int] | None = None) -> dict[int, float]:
        """Accuracy (%) of the plain SNN (eval-mode BN) using the first ``t`` time steps, for each ``t``."""
        c = self.config
        steps = steps or [c.T]
        bad = [t for t in steps if isinstance(t, bool) or not hasattr(t, "__index__") or not 1 <= t <= c.T]
        if bad:
            raise ValueError(f"Trainer.evaluate: steps must be ints in [1, T={c.T}], got {bad}")
        steps = [int(t) for t in steps]
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("Trainer.evaluate: the test set is empty (check the split and the data folder)")
        if self.dist.enabled:
            _average_buffers(self.model, self.dist.world_size)
        self.model.eval()
        set_mode(self.model, "plain")
        correct = dict.fromkeys(steps, 0)
        total = 0
        for i, (x, y) in enumerate(self._loader(dataset, train=False)):
            x = self._prepare(x.to(self.device, non_blocking=True), f"evaluation batch {i}")
            y = y.to(self.device, non_blocking=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
                logits = self._eval_logits(x, steps)
            for t in steps:
                correct[t] += int((logits[t].argmax(-1) == y).sum())
            total += y.shape[0]
        reset_net(self.model)
        if self.dist.enabled:
            counts = self._all_reduce_counts([*(correct[t] for t in steps), total])
            correct, total = dict(zip(steps, counts[:-1], strict=True)), counts[-1]
        return {t: 100 * (correct[t] / max(total, 1)) for t in steps}

    def fit(self, train_set: Dataset, test_set: Dataset, *, until_epoch: int | None = None) -> dict[str, Any]:
        """Train for the remaining epochs (resuming if a checkpoint was loaded), or only up to epoch
        ``until_epoch`` (a time-limited job that a later ``resume=True`` run continues); returns
        ``{"history", "final_test_acc", "best_test_acc", "test_acc_at_steps", "wall_time_s",
        "resumed_from_epoch", "config_overrides"}`` (accuracies in %)."""
        c = self.config
        steps = c.resolved_eval_steps()
        t0 = time.perf_counter()
        stop = c.epochs if until_epoch is None else min(int(until_epoch), c.epochs)
        for epoch in range(self.start_epoch, stop):
            te = time.perf_counter()
            stats = self.train_epoch(train_set, epoch)
            if c.check_finite:
                self._check_parameters(f"after epoch {epoch + 1}")
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
            "resumed_from_epoch": self.resumed_from_epoch,
            "config_overrides": self.config_overrides,
        }


def _has_logit_layer(model: nn.Module) -> bool:
    try:
        _logit_layer(model)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- outputs
def check_writable_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create ``path`` (with parents) if needed and check that a file can be written in it, so that a run
    fails before its work, not after. Raises ``ValueError`` naming ``what`` and the reason."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {str(folder)!r} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"{what} {str(folder)!r} is not writable: {exc}") from exc
    return folder


def check_writable_path(path: str | os.PathLike, what: str = "output") -> Path:
    """Check that the file ``path`` can be written (its folder created if needed, the path not a folder);
    raises ``ValueError`` naming ``what``. Nothing is left behind but the folder."""
    target = Path(path)
    if str(path) == "" or target.name == "":
        raise ValueError(f"{what} path {str(path)!r} names no file")
    if target.is_dir():
        raise ValueError(f"{what} path {str(target)!r} is a folder, not a file")
    check_writable_dir(target.parent, f"folder of the {what} path")
    if target.exists() and not os.access(target, os.W_OK):
        raise ValueError(f"{what} path {str(target)!r} exists and is not writable")
    return target


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: a temporary file in the same folder, flushed, then
    ``os.replace`` (a reader sees the old file or the complete new one, never a partial one). The file
    keeps the mode of the one it replaces; a new one gets ``0o666`` less the umask."""
    atomic_write_text(path, json.dumps(obj, indent=indent))


def plot_history(histories: dict[str, list[dict[str, Any]]], path: str | os.PathLike,
                 title: str = "") -> None:
    """Write a PNG with test accuracy (%) and training loss per epoch, one line per run name (atomically:
    a temporary file in the same folder, then ``os.replace``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"plot_history needs matplotlib: pip install graphspike_kd[dev] ({exc})") from exc
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for name, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        ax_acc.plot(epochs, [h["test_acc"] for h in hist], label=name)
        key = "train_ce" if all("train_ce" in h for h in hist) else "train_loss"
        ax_loss.plot(epochs, [h.get(key, math.nan) for h in hist], label=name)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title=title or "test accuracy")
    ax_loss.set(xlabel="epoch", ylabel="training cross-entropy", title="training loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=120)
    finally:
        plt.close(fig)


def accuracy(logits: Tensor, target: Tensor) -> float:
    """Top-1 accuracy (%) of ``[N, C]`` logits."""
    return 100 * float((logits.argmax(-1) == target).float().mean())


__all__ = [
    "DEFAULT_GRAD_SCALE",
    "GRAD_SCALE_PAPER",
    "METHODS",
    "NOT_FINGERPRINTED",
    "NOT_OVERRIDABLE",
    "TIMESTEP_METHODS",
    "DistInfo",
    "ShardSampler",
    "TrainConfig",
    "Trainer",
    "accuracy",
    "capture_step_logits",
    "check_writable_dir",
    "check_writable_path",
    "init_distributed",
    "make_optimizer",
    "make_scheduler",
    "make_sequence_step_function",
    "make_step_function",
    "missing_pieces",
    "plot_history",
    "sequence_bptt_loss",
    "sequence_forward",
    "sequence_timestep_kd_loss",
    "step_logits",
    "takes_T",
    "timestep_kd_step_loss",
    "to_sequence",
    "write_json_atomic",
]
