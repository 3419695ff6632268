"""Trainer: one symbolic object for how a model is trained; ``train()`` does it.

Any field may be a search point, so the same object describes a joint search over
architecture and hyperparameters::

    import pyglove as pg, symnas as sn
    hyper_trainer = sn.train.Trainer(
        model=sn.nn.Stacked(op=pg.oneof([sn.nn.Identity(), sn.nn.MaxPool((3, 3)),
                                         sn.nn.Conv(pg.oneof([4, 8]), (3, 3))]), repeats=3),
        optimizer=pg.oneof([sn.train.Adam(2e-2), sn.train.RMSProp(pg.floatv(1e-6, 1e-3))]),
        data=sn.data.Digits(), epochs=2)
    for trainer, feedback in pg.sample(hyper_trainer, sn.algorithms.Reinforce(), num_examples=4):
        feedback(trainer.train())

``train()`` returns a :class:`TrainResult`: a dict of metrics (reward, accuracy, loss,
train_loss, time_s, params, flops, epochs, stopped_early, diverged_at_epoch, and test_accuracy
when a validation split measures accuracy) whose ``float()`` is the accuracy, so
``feedback(trainer.train())`` and ``sn.search(space, lambda t: t.train(), ...)`` both work.
Per-epoch accuracy goes to ``symnas.reporting.report`` inside ``sn.search`` and to
``feedback.add_measurement`` when a ``pg.sample`` feedback is passed, so an early-stopping
policy or a scheduler can end the trial. Where the loop keeps a checkpoint for the trial
(``symnas.reporting.checkpoint()``, for schedulers that pause trials), the Trainer saves its state
there before each report and, resumed, goes on from it rather than from scratch.

A GPU recipe (CIFAR-10, SGD with a one-cycle schedule, reflection-padded crops and flips,
clipped gradients, bf16, channels-last, compiled)::

    trainer = sn.train.Trainer(
        model=sn.nn.resnet34(), data=sn.data.CIFAR10(), epochs=30, batch_size=512,
        optimizer=sn.train.SGD(0.2, momentum=0.9, nesterov=True), weight_decay=5e-4, decay_1d_params=False,
        schedule=sn.train.OneCycle(pct_start=0.25), clip_grad_norm=2.0,
        augmentation=[sn.train.RandomCrop(4, padding_mode="reflect"), sn.train.HorizontalFlip()],
        mixed_precision=True, channels_last=True, compile=True, init="by_name")
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, List, Optional, Union

import pyglove as pg
import torch
import torch.nn.functional as F

from symnas.data.datasets import Dataset, Digits
from symnas.nn import layers as L
from symnas.nn.init import init_by_name, layer_seed
from symnas.nn.profile import count_flops, count_params
from symnas.train.augmentation import Augmentation
from symnas.train.optimizers import Adam, Optimizer
from symnas.train.schedules import Constant, LRSchedule

__all__ = ["Trainer", "TrainResult", "TrainingDivergedError", "diverging"]


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the trial should be recorded as failed."""


class TrainResult(dict):
    """Metrics of one training run; ``float(result)`` is the reward (the accuracy)."""

    def __float__(self) -> float:
        return float(self["reward"])

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


def diverging(history: List[dict]) -> bool:
    """Whether the last epoch's training loss is not finite or rose to 1.3x the lowest before it
    (and above 0.5): the jump back towards chance of a run that diverged at its peak learning rate.
    ``history``: per-epoch dicts with ``loss`` (or ``train_loss``). Example::

        assert sn.train.diverging([{"loss": 1.67}, {"loss": 0.53}, {"loss": 2.26}])
    """
    if not history:
        return False
    losses = [e["loss"] if "loss" in e and "train_loss" not in e else e["train_loss"] for e in history]
    loss = losses[-1]
    if not math.isfinite(loss):
        return True
    best = min(losses[:-1], default=loss)
    return loss > 1.3 * best and loss > 0.5


def _search_reporter():
    """``symnas.reporting.report`` when the search loop provides it, else None."""
    try:
        from symnas.reporting import report  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return report


def _search_checkpoint():
    """The trial's ``symnas.reporting.Checkpoint`` when the search loop keeps one (pausing schedulers)."""
    from symnas.reporting import checkpoint  # pylint: disable=import-outside-toplevel
    return checkpoint()


_CHECKPOINT_FILE = "trainer.pt"


def _fixed_subset(n: int, size: Optional[int], what: str) -> torch.Tensor:
    """The same subset for every trial (seed 0), so trials are compared on the same data."""
    if size is None or size >= n:
        return torch.arange(n)
    if size <= 0:
        raise ValueError(f"Trainer: {what} must be positive, got {size}.")
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size]


class Trainer(pg.Object):
    """Trains ``model`` on ``data`` and measures it.

    A model whose output is an image ``(C, H, W)`` (a feature extractor) gets a
    global-average-pool + linear classifier head; a flat output of another width gets a
    linear head; a flat output with ``num_classes`` features is used as the logits.

    Measurement: ``validation_size`` training examples (a count, or a fraction when below 1;
    10% by default) are held out, ``accuracy`` is measured on them and ``test_accuracy`` on the
    test set at the end, so a search never selects on the test set. ``validation_size=0``
    trains on every training example and measures ``accuracy`` on the test set (for a final
    comparison of fixed models, not for a search). ``train_size`` / ``eval_size`` take fixed
    subsets (the same for every trial); ``eval_every`` evaluates every that many epochs (and
    after the last).

    Recipe: ``weight_decay`` (``decay_1d_params=False`` spares biases and normalisation scales),
    ``schedule`` (``OneCycle``, ``Cosine``, ...), ``clip_grad_norm`` (0: none; the per-epoch
    median and largest gradient norm and the clipped steps are recorded), ``augmentation``,
    ``drop_last`` (every step a full batch). ``init="by_name"`` draws each layer's initial weights
    from the seed and the layer's name (``sn.nn.init_by_name``), so two networks that share layers
    start with the same weights in them. On CUDA: ``mixed_precision`` (bf16 autocast),
    ``channels_last`` and ``compile`` (``torch.compile``; any device). ``device=None`` picks CUDA
    when present, else CPU.
    """
    model: Any
    optimizer: Optimizer = Adam(1e-3)
    data: Dataset = Digits()
    epochs: int = 1
    batch_size: int = 64
    schedule: LRSchedule = Constant()
    weight_decay: float = 0.0
    decay_1d_params: bool = True
    augmentation: List[Augmentation] = []
    clip_grad_norm: float = 0.0
    seed: int = 0
    init: str = "build"
    device: Optional[str] = None
    mixed_precision: bool = False
    channels_last: bool = False
    compile: bool = False
    train_size: Optional[int] = None
    eval_size: Optional[int] = None
    validation_size: Union[int, float] = 0.1
    eval_every: int = 1
    drop_last: bool = False
    eval_batch_size: int = 1024

    def _on_bound(self):
        super()._on_bound()
        for name in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, int) and value <= 0:
                raise ValueError(f"Trainer: {name} must be positive, got {value}.")
        for name in ("weight_decay", "clip_grad_norm", "validation_size"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"Trainer: {name} must be >= 0, got {value}.")
        if isinstance(self.init, str) and self.init not in ("build", "by_name"):
            raise ValueError(f"Trainer: init must be 'build' or 'by_name', got {self.init!r}.")

    # ------------------------------------------------------------------ model

    def classifier(self, input_shape, num_classes: int) -> L.Layer:
        """The model with the classifier head the Trainer adds (a symbolic layer)."""
        shape = L.output_shape(self.model, input_shape)
        head: list = []
        if len(shape) == 3:
            head = [L.GlobalPool(), L.Dense(num_classes)]
        elif shape[0] != num_classes:
            head = [L.Dense(num_classes)]
        return L.Sequential([self.model] + head) if head else L.Sequential([self.model])

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _build(self, input_shape, num_classes: int, device: torch.device) -> torch.nn.Module:
        model = self.classifier(input_shape, num_classes).build(input_shape)
        if self.init == "by_name":
            # the model's own layers keep the names they have when built alone, so a network
            # trained here starts as the same network scored or trained elsewhere by name
            children = list(model.children())
            init_by_name(children[0], self.seed)
            for i, head in enumerate(children[1:], start=1):
                init_by_name(head, layer_seed(self.seed, f"head.{i}"))
        model = model.to(device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def _optimizer(self, model: torch.nn.Module):
        if self.decay_1d_params or not self.weight_decay:
            return self.optimizer.build(model.parameters(), self.weight_decay)
        decay = [p for p in model.parameters() if p.dim() > 1]
        spared = [p for p in model.parameters() if p.dim() <= 1]
        return self.optimizer.build([{"params": decay, "weight_decay": self.weight_decay},
                                     {"params": spared, "weight_decay": 0.0}], self.weight_decay)

    # ------------------------------------------------------------------ data

    def _split(self, splits, device: torch.device):
        """(x_train, y_train, x_eval, y_eval, x_test, y_test) on ``device``."""
        n = len(splits.y_train)
        held = self.validation_size if isinstance(self.validation_size, int) else round(self.validation_size * n)
        if isinstance(self.validation_size, float) and self.validation_size >= 1:
            raise ValueError(f"Trainer: a fractional validation_size must be below 1, got {self.validation_size}.")
        train_idx, val_idx = torch.arange(n), None
        if held:
            if held >= n:
                raise ValueError(f"Trainer: validation_size={self.validation_size} leaves no training examples "
                                 f"(the set has {n}).")
            shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(1))
            val_idx, train_idx = shuffled[:held], shuffled[held:]
        train_idx = train_idx[_fixed_subset(len(train_idx), self.train_size, "train_size")]
        test_idx = _fixed_subset(len(splits.y_test), self.eval_size, "eval_size")
        x_test, y_test = splits.x_test[test_idx].to(device), splits.y_test[test_idx].to(device)
        if val_idx is None:
            x_eval, y_eval = x_test, y_test
        else:
            val_idx = val_idx[_fixed_subset(len(val_idx), self.eval_size, "eval_size")]
            x_eval, y_eval = splits.x_train[val_idx].to(device), splits.y_train[val_idx].to(device)
        return (splits.x_train[train_idx].to(device), splits.y_train[train_idx].to(device), x_eval, y_eval,
                x_test, y_test)

    # ------------------------------------------------------------------ training

    def train(self, feedback: Optional[pg.tuning.Feedback] = None, log=None) -> TrainResult:
        """Trains from scratch and returns the metrics; raises TrainingDivergedError on NaN.

        ``log``: called with one line per epoch (e.g. ``print``)."""
        if not pg.is_deterministic(self):
            raise ValueError(
                "Trainer holds search points (pg.oneof/floatv/...); sample a concrete trainer "
                "first (pg.sample, pg.random_sample or sn.search).")
        start = time.time()
        device = self._device()
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True     # fixed shapes: let cuDNN pick its fastest kernels
        torch.manual_seed(self.seed)
        splits = self.data.load()
        x_train, y_train, x_eval, y_eval, x_test, y_test = self._split(splits, device)
        input_shape = splits.input_shape
        model = self._build(input_shape, splits.num_classes, device)
        params, flops = count_params(model), count_flops(model, input_shape)
        run = torch.compile(model) if self.compile else model   # the same parameters, fused kernels
        loop = _Loop(self, model, run, device, len(y_train))
        history: List[dict] = []
        report, checkpoint = _search_reporter(), _search_checkpoint()
        stopped_early, diverged, first_epoch = False, None, 1
        if checkpoint is not None and checkpoint.resumed and os.path.exists(checkpoint.file(_CHECKPOINT_FILE)):
            # a paused trial, resumed: go on from the state saved before its last report
            history = loop.load(torch.load(checkpoint.file(_CHECKPOINT_FILE), map_location=device, weights_only=True))
            first_epoch = history[-1]["epoch"] + 1
        for epoch in range(first_epoch, self.epochs + 1):
            entry = loop.epoch(epoch, x_train, y_train)
            if epoch == self.epochs or epoch % self.eval_every == 0:
                entry["accuracy"], entry["loss"] = self._evaluate(run, x_eval, y_eval, device)
                if not (math.isfinite(entry["train_loss"]) and math.isfinite(entry["loss"])):
                    raise TrainingDivergedError(
                        f"Training diverged: in epoch {epoch} the training loss is {entry['train_loss']} and "
                        f"the evaluation loss {entry['loss']} (optimizer {self.optimizer!r:.200}, "
                        f"weight_decay={self.weight_decay}); try a smaller learning rate or clip_grad_norm.")
            history.append(entry)
            if diverged is None and diverging(history):
                diverged = epoch
            if log is not None:
                log(_epoch_line(entry, time.time() - start, diverged == epoch))
            if "accuracy" not in entry:
                continue
            if checkpoint is not None:   # saved before the report: a pause may follow it
                torch.save(loop.state(history), checkpoint.file(_CHECKPOINT_FILE))
            if self._report(report, feedback, entry) and epoch < self.epochs:
                stopped_early = True
                break
        last = history[-1]
        if "accuracy" not in last:
            last["accuracy"], last["loss"] = self._evaluate(run, x_eval, y_eval, device)
        result = TrainResult(
            reward=last["accuracy"], accuracy=last["accuracy"], loss=last["loss"], train_loss=last["train_loss"],
            time_s=time.time() - start, params=params, flops=flops, epochs=last["epoch"],
            stopped_early=stopped_early, diverged_at_epoch=diverged)
        if x_eval is not x_test:
            result["test_accuracy"], result["test_loss"] = self._evaluate(run, x_test, y_test, device)
        result.history = history   # Per-epoch metrics; kept off the dict so metrics stay scalar.
        return result

    @staticmethod
    def _report(report, feedback, entry: dict) -> bool:
        """Sends an evaluated epoch to the search and to ``feedback``; whether to stop early."""
        measurement = {k: entry[k] for k in ("accuracy", "loss", "train_loss")}
        stop = False
        if report is not None:
            stop = bool(report(step=entry["epoch"], **measurement))
        if feedback is not None:
            feedback.add_measurement(reward=entry["accuracy"], metrics=measurement, step=entry["epoch"])
            stop = feedback.should_stop_early() or stop
        return stop

    def evaluate(self) -> TrainResult:
        """``train()``; lets ``sn.search(space)`` evaluate trainers without an evaluator."""
        return self.train()

    @torch.no_grad()
    def _evaluate(self, model, x, y, device):
        model.eval()
        correct, loss_sum = 0, 0.0
        for b in range(0, len(y), self.eval_batch_size):
            xb = x[b:b + self.eval_batch_size]
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with _autocast(self, device):
                logits = model(xb)
            target = y[b:b + self.eval_batch_size]
            loss_sum += float(F.cross_entropy(logits.float(), target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
        return correct / len(y), loss_sum / len(y)


def _autocast(trainer: Trainer, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=trainer.mixed_precision and device.type == "cuda")


def _epoch_line(entry: dict, seconds: float, diverged: bool) -> str:
    line = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items())
    line += f", {seconds:.1f} s"
    if diverged:
        line += ("; warning: the training loss jumped back towards chance: this run diverged "
                 "(try clip_grad_norm=2 or a lower learning rate)")
    return line


class _Loop:
    """The optimisation steps of one training run (optimizer, schedule, augmentation, clipping)."""

    def __init__(self, trainer: Trainer, model, run, device, n: int):
        self.trainer, self.model, self.run, self.device, self.n = trainer, model, run, device, n
        self.optimizer = trainer._optimizer(model)
        size = trainer.batch_size
        self.steps_per_epoch = n // size if trainer.drop_last else math.ceil(n / size)
        if self.steps_per_epoch < 1:
            raise ValueError(f"Trainer: drop_last with {n} training examples and batch_size {size} leaves no step.")
        self.scheduler = trainer.schedule.build(self.optimizer, self.steps_per_epoch * trainer.epochs,
                                                self.steps_per_epoch)
        self.generator = torch.Generator().manual_seed(trainer.seed)

    def state(self, history: List[dict]) -> dict:
        """Everything a resumed run needs to go on exactly (``load`` takes it back)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "history": history}

    def load(self, state: dict) -> List[dict]:
        """Restores a ``state()``; returns its history."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        return state["history"]

    def epoch(self, epoch: int, x_train, y_train) -> dict:
        trainer, size = self.trainer, self.trainer.batch_size
        self.run.train()
        order = torch.randperm(self.n, generator=self.generator).to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        norms, seen = [], 0
        for b in range(self.steps_per_epoch):
            idx = order[b * size:(b + 1) * size]
            loss = self._step(x_train[idx], y_train[idx], norms)
            loss_sum += loss.detach().float() * len(idx)
            seen += len(idx)
        entry = {"epoch": epoch, "train_loss": float(loss_sum) / seen}
        if norms:
            norms = torch.stack(norms).float()
            entry.update(grad_norm_median=float(norms.median()), grad_norm_max=float(norms.max()),
                         clipped_steps=int((norms > trainer.clip_grad_norm).sum()))
        return entry

    def _step(self, xb, yb, norms: list):
        trainer = self.trainer
        yb2, lam = yb, 1.0
        for aug in trainer.augmentation:
            if aug.mixes_labels:
                xb, yb, yb2, lam = aug.mix(xb, yb, self.generator)
            else:
                xb = aug.apply(xb, self.generator)
        if trainer.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(trainer, self.device):
            logits = self.run(xb)
            loss = F.cross_entropy(logits, yb)
            if lam != 1.0:
                loss = lam * loss + (1 - lam) * F.cross_entropy(logits, yb2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if trainer.clip_grad_norm > 0:
            # the norm stays on the device: no synchronisation per step
            norms.append(torch.nn.utils.clip_grad_norm_(self.model.parameters(), trainer.clip_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        return loss
