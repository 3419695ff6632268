"""Paired training runs: an original and a changed model, one recipe, the same seeds.

Whether a transformed network keeps the original's accuracy is a difference of a point or less,
about as large as the spread between seeds. ``PairedRuns`` trains both models with one
``Trainer`` recipe on each seed (with ``init="by_name"`` the layers they share start identical),
and ``PairedResult`` gives the per-seed differences, their mean and its 95% t interval. Runs can
go concurrently in worker processes (``workers``), e.g. several on one GPU.

Example::

    pairs = sn.train.PairedRuns(trainer=sn.train.Trainer(model=None, data=sn.data.CIFAR10(), epochs=30),
                                models={"original": sn.nn.resnet34(), "ours": result.network}, seeds=[0, 1])
    summary = pairs.run(workers=4)
    print(summary.mean_difference, summary.interval)
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import multiprocessing
import statistics
from typing import Any, Callable, Dict, List, Optional, Tuple

import pyglove as pg

__all__ = ["PairedRuns", "PairedResult", "RunsFailedError", "t_interval", "train_all"]


def t_interval(differences: List[float], level: float = 0.95) -> Tuple[float, Optional[Tuple[float, float]]]:
    """The mean of ``differences`` and its two-sided t interval (None with fewer than two values).

    Example::

        mean, (low, high) = sn.train.t_interval([-0.9, -0.5, -0.7])
    """
    if not differences:
        raise ValueError("t_interval: no differences")
    mean = statistics.mean(differences)
    if len(differences) < 2:
        return mean, None
    from scipy import stats  # pylint: disable=import-outside-toplevel
    half = stats.t.ppf(0.5 + level / 2, len(differences) - 1) * statistics.stdev(differences) / math.sqrt(
        len(differences))
    return mean, (mean - half, mean + half)


@dataclasses.dataclass
class PairedResult:
    """Per seed, each model's run (``runs[seed][name]``: the ``TrainResult`` as a dict with its history)."""
    runs: Dict[int, Dict[str, Dict[str, Any]]]
    reference: str
    other: str
    metric: str = "accuracy"

    @property
    def differences(self) -> List[float]:
        """``other - reference`` per seed, in points (percent) when the metric is an accuracy."""
        scale = 100.0 if "accuracy" in self.metric else 1.0
        return [scale * (r[self.other][self.metric] - r[self.reference][self.metric]) for _, r in sorted(self.runs.items())]

    @property
    def mean_difference(self) -> float:
        return t_interval(self.differences)[0]

    @property
    def interval(self) -> Optional[Tuple[float, float]]:
        """The 95% t interval of the mean difference (None with one seed)."""
        return t_interval(self.differences)[1]

    def diverged(self) -> List[Tuple[int, str]]:
        """(seed, model) of every run whose loss jumped back towards chance."""
        return [(seed, name) for seed, r in sorted(self.runs.items()) for name, run in r.items()
                if run.get("diverged_at_epoch")]

    def table(self) -> str:
        """The pairs as text: seed, both metrics, difference; then the mean and interval."""
        lines = [f"{'seed':>4}  {self.reference:>14}  {self.other:>14}  {'difference':>10}"]
        scale = 100.0 if "accuracy" in self.metric else 1.0
        for (seed, r), diff in zip(sorted(self.runs.items()), self.differences):
            lines.append(f"{seed:>4}  {scale * r[self.reference][self.metric]:>14.2f}  "
                         f"{scale * r[self.other][self.metric]:>14.2f}  {diff:>+10.2f}")
        interval = self.interval
        lines.append(f"mean difference {self.mean_difference:+.2f} over {len(self.runs)} seeds"
                     + (f"; 95% interval {interval[0]:+.2f} to {interval[1]:+.2f}" if interval else ""))
        return "\n".join(lines)


def _train_one(trainer, log_prefix: Optional[str]) -> Dict[str, Any]:
    log = (lambda line: print(f"{log_prefix} {line}", flush=True)) if log_prefix is not None else None
    result = trainer.train(log=log)
    return {**result, "history": result.history}


def train_all(trainers: Dict[Any, Any], workers: int = 1, log: bool = False,
              on_done: Optional[Callable[[Any, Dict[str, Any]], None]] = None) -> Dict[Any, Dict[str, Any]]:
    """Trains every ``Trainer`` of ``trainers`` (key -> trainer), ``workers`` at a time in separate
    processes (1: one after the other in this one); key -> its ``TrainResult`` as a dict with its
    ``history``. ``log``: print every run's epochs, prefixed by its key; ``on_done(key, result)`` is
    called here as each run finishes (e.g. to save it before the others end). A run that fails does not
    stop the others: once every run has ended, ``RunsFailedError`` names the failed keys and their
    errors (``.done`` holds the runs that finished). Example::

        runs = sn.train.train_all({seed: trainer.clone().rebind(seed=seed) for seed in (0, 1)}, workers=2)
    """
    if workers < 1:
        raise ValueError(f"train_all: workers must be >= 1, got {workers}.")
    prefix = {k: (" ".join(map(str, k)) if isinstance(k, tuple) else str(k)) if log else None for k in trainers}
    done: Dict[Any, Dict[str, Any]] = {}
    failed: Dict[Any, BaseException] = {}

    def finish(key, result_of):
        try:
            done[key] = result_of()
        except Exception as e:  # pylint: disable=broad-except  (reported with the others at the end)
            failed[key] = e
            if log:
                print(f"{prefix[key]} failed: {type(e).__name__}: {e}", flush=True)
            return
        if on_done is not None:
            on_done(key, done[key])
    if workers == 1:
        for key, trainer in trainers.items():
            finish(key, lambda t=trainer, k=key: _train_one(t, prefix[k]))
    else:
        # spawn: each worker starts its own CUDA context (a forked one cannot)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(workers, len(trainers)), mp_context=context) as pool:
            futures = {pool.submit(_train_one, t, prefix[k]): k for k, t in trainers.items()}
            for future in concurrent.futures.as_completed(futures):
                finish(futures[future], future.result)
    if failed and len(trainers) == 1:
        raise next(iter(failed.values()))          # one run: its own error, as training it alone gives
    if failed:
        raise RunsFailedError(failed, {k: done[k] for k in trainers if k in done})
    return {k: done[k] for k in trainers}


class RunsFailedError(RuntimeError):
    """Some runs of ``train_all`` failed: ``failed`` (key -> exception), ``done`` (key -> result)."""

    def __init__(self, failed: Dict[Any, BaseException], done: Dict[Any, Dict[str, Any]]):
        self.failed, self.done = failed, done
        reasons = "; ".join(f"{k}: {type(e).__name__}: {e}" for k, e in failed.items())
        super().__init__(f"train_all: {len(failed)} of {len(failed) + len(done)} runs failed ({reasons})")


class PairedRuns(pg.Object):
    """Trains every model of ``models`` (name -> symbolic network) on every seed of ``seeds`` with the
    recipe ``trainer`` (its ``model`` and ``seed`` are replaced); the first model is the reference."""
    trainer: Any
    models: Dict[str, Any]
    seeds: List[int] = [0, 1]

    def _on_bound(self):
        super()._on_bound()
        if len(self.models) != 2:
            raise ValueError(f"PairedRuns: pairs need exactly two models (the reference first), got "
                             f"{list(self.models)}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"PairedRuns: seeds must be distinct and not empty, got {list(self.seeds)}.")

    def trainers(self) -> Dict[Tuple[int, str], Any]:
        """(seed, model name) -> the concrete Trainer of that run."""
        return {(seed, name): self.trainer.clone(deep=True).rebind(model=model.clone(deep=True), seed=seed)
                for seed in self.seeds for name, model in self.models.items()}

    def run(self, workers: int = 1, log: bool = False) -> PairedResult:
        """Trains every (seed, model), ``workers`` at a time in separate processes (1: in this one);
        ``log``: print every run's epochs, prefixed by its seed and model."""
        done = train_all(self.trainers(), workers, log)
        names = list(self.models)
        return PairedResult({seed: {name: done[(seed, name)] for name in names} for seed in self.seeds}, *names)
