"""Trainer: one symbolic object for how a model is trained; ``train()`` does it.

Any field may be a search point, so the same object describes a joint search over
architecture and hyperparameters (seed 004, PyGlove / AutoHAS)::

    import pyglove as pg, symnas as sn
    hyper_trainer = sn.train.Trainer(
        model=sn.nn.Stacked(op=pg.oneof([sn.nn.Identity(), sn.nn.MaxPool((3, 3)),
                                         sn.nn.Conv(pg.oneof([4, 8]), (3, 3))]), repeats=3),
        optimizer=pg.oneof([sn.train.Adam(2e-2), sn.train.RMSProp(pg.floatv(1e-6, 1e-3))]),
        data=sn.data.Digits(), epochs=2)
    for trainer, feedback in pg.sample(hyper_trainer, sn.algorithms.Reinforce(), num_examples=4):
        feedback(trainer.train())

``train()`` returns a :class:`TrainResult`: a dict of metrics (reward, accuracy, loss,
train_loss, time_s, params, flops, epochs, stopped_early) whose ``float()`` is the
accuracy, so ``feedback(trainer.train())`` and ``sn.search(space, lambda t: t.train(), ...)``
both work. Per-epoch accuracy goes to ``symnas.reporting.report`` inside ``sn.search`` and
to ``feedback.add_measurement`` when a ``pg.sample`` feedback is passed, so an early-stopping
policy or a scheduler can end the trial. Where the loop keeps a checkpoint for the trial
(``symnas.reporting.checkpoint()``, for schedulers that pause trials), the Trainer saves its state
there before each report and, resumed, goes on from it rather than from scratch.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, List, Optional

import pyglove as pg
import torch
import torch.nn.functional as F

from symnas.data.datasets import Dataset, Digits
from symnas.nn import layers as L
from symnas.nn.profile import count_flops, count_params
from symnas.train.augmentation import Augmentation
from symnas.train.optimizers import Adam, Optimizer
from symnas.train.schedules import Constant, Schedule

__all__ = ["Trainer", "TrainResult", "TrainingDivergedError"]


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the trial should be recorded as failed."""


class TrainResult(dict):
    """Metrics of one training run; ``float(result)`` is the reward (the accuracy)."""

    def __float__(self) -> float:
        return float(self["reward"])

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


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

    ``train_size`` / ``eval_size`` take fixed subsets (the same for every trial) of the
    training / evaluation examples; ``validation_size`` holds out that many training
    examples and then ``accuracy`` is validation accuracy and ``test_accuracy`` is reported
    beside it. ``device=None`` picks CUDA when present, else CPU.
    """
    model: Any
    optimizer: Optimizer = Adam(1e-3)
    data: Dataset = Digits()
    epochs: int = 1
    batch_size: int = 64
    schedule: Schedule = Constant()
    weight_decay: float = 0.0
    augmentation: List[Augmentation] = []
    seed: int = 0
    device: Optional[str] = None
    train_size: Optional[int] = None
    eval_size: Optional[int] = None
    validation_size: int = 0
    eval_batch_size: int = 1024

    def _on_bound(self):
        super()._on_bound()
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, int) and value <= 0:
                raise ValueError(f"Trainer: {name} must be positive, got {value}.")
        if isinstance(self.weight_decay, (int, float)) and self.weight_decay < 0:
            raise ValueError(f"Trainer: weight_decay must be >= 0, got {self.weight_decay}.")

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

    # ------------------------------------------------------------------ training

    def train(self, feedback: Optional[pg.tuning.Feedback] = None) -> TrainResult:
        """Trains from scratch and returns the metrics; raises TrainingDivergedError on NaN."""
        if not pg.is_deterministic(self):
            raise ValueError(
                "Trainer holds search points (pg.oneof/floatv/...); sample a concrete trainer "
                "first (pg.sample, pg.random_sample or sn.search).")
        start = time.time()
        device = self._device()
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        splits = self.data.load()

        train_idx = _fixed_subset(len(splits.y_train), None, "train_size")
        if self.validation_size:
            shuffled = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(1))
            if self.validation_size >= len(shuffled):
                raise ValueError(f"Trainer: validation_size={self.validation_size} leaves no "
                                 f"training examples (the set has {len(shuffled)}).")
            val_idx, train_idx = shuffled[:self.validation_size], shuffled[self.validation_size:]
        train_idx = train_idx[_fixed_subset(len(train_idx), self.train_size, "train_size")]
        x_train = splits.x_train[train_idx].to(device)
        y_train = splits.y_train[train_idx].to(device)
        test_idx = _fixed_subset(len(splits.y_test), self.eval_size, "eval_size")
        x_test, y_test = splits.x_test[test_idx].to(device), splits.y_test[test_idx].to(device)
        if self.validation_size:
            val_idx = val_idx[_fixed_subset(len(val_idx), self.eval_size, "eval_size")]
            x_eval, y_eval = splits.x_train[val_idx].to(device), splits.y_train[val_idx].to(device)
        else:
            x_eval, y_eval = x_test, y_test

        input_shape = splits.input_shape
        model = self.classifier(input_shape, splits.num_classes).build(input_shape).to(device)
        params = count_params(model)
        flops = count_flops(model, input_shape)
        optimizer = self.optimizer.build(model.parameters(), self.weight_decay)
        n = len(y_train)
        steps_per_epoch = math.ceil(n / self.batch_size)
        total_steps = steps_per_epoch * self.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: self.schedule.factor(step, total_steps, steps_per_epoch))
        report = _search_reporter()
        checkpoint = _search_checkpoint()

        history: List[dict] = []
        stopped_early = False
        first_epoch = 1
        if checkpoint is not None and checkpoint.resumed and os.path.exists(checkpoint.file(_CHECKPOINT_FILE)):
            # a paused trial, resumed: go on from the state saved before its last report
            state = torch.load(checkpoint.file(_CHECKPOINT_FILE), map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history, first_epoch = state["history"], state["epoch"] + 1
        for epoch in range(first_epoch, self.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=generator).to(device)
            loss_sum = torch.zeros((), device=device)
            for b in range(steps_per_epoch):
                idx = order[b * self.batch_size:(b + 1) * self.batch_size]
                xb, yb = x_train[idx], y_train[idx]
                yb2, lam = yb, 1.0
                for aug in self.augmentation:
                    if aug.mixes_labels:
                        xb, yb, yb2, lam = aug.mix(xb, yb, generator)
                    else:
                        xb = aug.apply(xb, generator)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                if lam != 1.0:
                    loss = lam * loss + (1 - lam) * F.cross_entropy(logits, yb2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(idx)
            train_loss = float(loss_sum) / n
            accuracy, eval_loss = self._evaluate(model, x_eval, y_eval)
            if not (math.isfinite(train_loss) and math.isfinite(eval_loss)):
                raise TrainingDivergedError(
                    f"Training diverged: in epoch {epoch} the training loss is {train_loss} and "
                    f"the evaluation loss {eval_loss} (optimizer {self.optimizer!r:.200}, "
                    f"weight_decay={self.weight_decay}); try a smaller learning rate.")
            measurement = dict(accuracy=accuracy, loss=eval_loss, train_loss=train_loss)
            history.append(dict(epoch=epoch, **measurement))
            stop = False
            if checkpoint is not None:   # saved before the report: a pause may follow it
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                            "torch_rng": torch.get_rng_state(), "history": history, "epoch": epoch},
                           checkpoint.file(_CHECKPOINT_FILE))
            if report is not None:
                stop = bool(report(step=epoch, **measurement))
            if feedback is not None:
                feedback.add_measurement(reward=accuracy, metrics=measurement, step=epoch)
                stop = feedback.should_stop_early() or stop
            if stop and epoch < self.epochs:
                stopped_early = True
                break

        result = TrainResult(
            reward=accuracy, accuracy=accuracy, loss=eval_loss, train_loss=train_loss,
            time_s=time.time() - start, params=params, flops=flops, epochs=epoch,
            stopped_early=stopped_early)
        if self.validation_size:
            result["test_accuracy"], result["test_loss"] = self._evaluate(model, x_test, y_test)
        result.history = history   # Per-epoch metrics; kept off the dict so metrics stay scalar.
        return result

    def evaluate(self) -> TrainResult:
        """``train()``; lets ``sn.search(space)`` evaluate trainers without an evaluator."""
        return self.train()

    @torch.no_grad()
    def _evaluate(self, model, x, y):
        model.eval()
        correct, loss_sum = 0, 0.0
        for b in range(0, len(y), self.eval_batch_size):
            logits = model(x[b:b + self.eval_batch_size])
            target = y[b:b + self.eval_batch_size]
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
        return correct / len(y), loss_sum / len(y)
