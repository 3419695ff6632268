"""How should optuna-dashboard see a symnas study: a read-only view of the study file, or a mirror?

Builds a study of ``--trials`` trials (each with ``--steps`` reports), then measures, in one run:

- view: ``OptunaStorageView`` over the symnas SQLite file (what ``symnas dashboard`` uses): the
  dashboard's study request (``GET /api/studies/1``, all trials) cold and after one new trial;
- mirror: the same trials copied into an Optuna storage (SQLite ``RDBStorage``, and in memory):
  the one-off copy, the cost per trial of keeping the mirror up to date (what a search loop would
  pay per finished trial), and the same dashboard request served from the mirror.

Usage::

    python benchmarks/dashboard_storage.py --trials 2000
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
import wsgiref.util

import optuna
import optuna_dashboard
import pyglove as pg

import symnas as sn
from symnas.dashboard import OptunaStorageView
from symnas.reporting import report


def make_study(path: str, trials: int, steps: int) -> None:
    space = pg.Dict(op=pg.oneof([pg.Dict(kernel=pg.oneof([3, 5])), "pool", "skip"]),
                    lr=pg.floatv(1e-4, 1e-1, scale="log"), width=pg.oneof([8, 16, 32, 64]),
                    depth=pg.oneof([1, 2, 3]), ops=pg.manyof(3, ["conv", "pool", "skip", "sep"]))

    def evaluate(value):
        accuracy = 0.0
        for step in range(1, steps + 1):
            accuracy = value.width / 64 * (1 - 0.5 ** step) - abs(value.lr - 0.01)
            report(step, accuracy=accuracy)
        return {"accuracy": accuracy, "params": value.width * value.depth * 1000}

    sn.search(space, evaluate, sn.algorithms.Random(seed=0), num_trials=trials, storage=path, name="bench",
              objectives="accuracy", progress=False)


def request_ms(storage, repeats: int = 1, study_id: int = 1) -> float:
    """Milliseconds of ``GET /api/studies/ID`` through a fresh dashboard app (its trial cache empty)."""
    times = []
    for _ in range(repeats):
        app = optuna_dashboard.wsgi(storage)
        environ = {"PATH_INFO": f"/api/studies/{study_id}"}
        wsgiref.util.setup_testing_defaults(environ)
        status = []
        start = time.perf_counter()
        body = b"".join(app(environ, lambda s, h, *exc: status.append(s)))
        times.append((time.perf_counter() - start) * 1000)
        if not status[0].startswith("200"):
            raise RuntimeError(f"dashboard answered {status[0]}: {body[:300]!r}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=9, help="reports per trial")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    folder = tempfile.mkdtemp(prefix="dashboard_storage_")
    path = os.path.join(folder, "runs.db")
    start = time.perf_counter()
    make_study(path, args.trials, args.steps)
    print(f"study: {args.trials} trials x {args.steps} reports, built in {time.perf_counter() - start:.1f} s")

    # -- the view ----------------------------------------------------------------------------
    start = time.perf_counter()
    view = OptunaStorageView(path)
    view.get_all_trials(view.get_study_id_from_name("bench"))
    convert_ms = (time.perf_counter() - start) * 1000
    cold_view = request_ms(OptunaStorageView(path))
    warm_view = request_ms(view, args.repeats)
    make_study(path, args.trials + 1, args.steps)     # one more trial, as during a search
    after_new = request_ms(view)
    print(f"view:   first read of all trials {convert_ms:8.1f} ms (converted once); dashboard request: "
          f"cold {cold_view:8.1f} ms, later {warm_view:8.1f} ms, after a new trial {after_new:8.1f} ms; "
          f"cost to the search per trial: 0 (it writes only its own file)")

    # -- mirrors -------------------------------------------------------------------------------
    trials = view.get_all_trials(1)
    for label, make in (("mirror RDB (SQLite)", lambda: optuna.storages.RDBStorage(
                            f"sqlite:///{os.path.join(folder, f'mirror{time.time_ns()}.db')}")),
                        ("mirror in memory", optuna.storages.InMemoryStorage)):
        mirror = make()
        start = time.perf_counter()
        study = optuna.create_study(storage=mirror, study_name="bench", direction="maximize")
        study.add_trials(trials[:-20])
        copy_s = time.perf_counter() - start
        per_trial = []
        for trial in trials[-20:]:       # what a loop pays to keep the mirror live, per finished trial
            start = time.perf_counter()
            study.add_trial(trial)
            per_trial.append((time.perf_counter() - start) * 1000)
        served = request_ms(mirror, args.repeats, study._study_id)  # pylint: disable=protected-access
        print(f"{label:<20} copy of {len(trials) - 20} trials {copy_s:6.1f} s; per new trial "
              f"{statistics.median(per_trial):6.1f} ms (median of 20); dashboard request {served:8.1f} ms")


if __name__ == "__main__":
    main()
