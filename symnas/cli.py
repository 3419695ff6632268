"""The ``symnas`` command line: run, inspect and resume searches stored in a SQLite study file.

Example::

    symnas search quickstart --algorithm reinforce --trials 30 --workers 2 --storage runs.db
    symnas show runs.db --plot curve.png
    symnas resume runs.db --trials 60

``search`` takes a builtin (``symnas search --list``) or a ``.py`` file that defines ``space``
and ``evaluate`` (and optionally ``objectives``). Every error is one line on stderr naming the
problem, with exit code 2 (1 for an interrupted search); trials already recorded stay recorded.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import Any, List, Optional, Sequence

ALGORITHMS = {
    "random": "Random",
    "evolution": "RegularizedEvolution",
    "reinforce": "Reinforce",
    "bayesian": "Bayesian",
    "nsga2": "NSGA2",
    "canvas": "Canvas",          # kernel architecture search spaces (sn.kas) only
}

SOURCE_KEY = "cli_source"        # where the evaluator comes from (builtin name or file path)
TRIALS_KEY = "cli_num_trials"    # the --trials of the first run, the default for resume


class CommandError(Exception):
    """A user error the command line reports in one line."""


def make_algorithm(name: str, seed: Optional[int]):
    """The ``sn.algorithms`` class for a command-line name, constructed with ``seed`` if it takes one."""
    from symnas import algorithms  # pylint: disable=import-outside-toplevel
    available = {key: getattr(algorithms, cls) for key, cls in ALGORITHMS.items() if hasattr(algorithms, cls)}
    if name not in available:
        raise CommandError(f"unknown algorithm {name!r}; available: {', '.join(sorted(available))}.")
    cls = available[name]
    if seed is None:
        return cls()
    try:
        return cls(seed=seed)
    except TypeError as error:
        raise CommandError(f"algorithm {name!r} does not take --seed ({error}).") from error


def _parser() -> argparse.ArgumentParser:
    from symnas.builtin_spaces import BUILTINS  # pylint: disable=import-outside-toplevel
    parser = argparse.ArgumentParser(prog="symnas", description="Symbolic AutoML searches from the shell.")
    commands = parser.add_subparsers(dest="command", required=True)

    def execution_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--workers", type=int, default=1, help="trials evaluated at once (processes)")
        sub.add_argument("--timeout", type=float, default=None, dest="trial_timeout",
                         help="seconds after which a trial is killed and recorded as failed")
        sub.add_argument("--backend", choices=("local", "ray"), default="local")
        sub.add_argument("--address", default=None, help="Ray cluster address (with --backend ray)")
        sub.add_argument("--cpus-per-trial", type=float, default=None, help="Ray resources per trial")
        sub.add_argument("--gpus-per-trial", type=float, default=None, help="Ray resources per trial")
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")

    search = commands.add_parser("search", help="run a search and record it in a study file")
    search.add_argument("source", nargs="?", default="quickstart",
                        help=f"a builtin ({', '.join(BUILTINS)}) or a .py file defining space and evaluate")
    search.add_argument("--algorithm", default="random", help=f"one of {', '.join(ALGORITHMS)}")
    search.add_argument("--trials", type=int, default=20, help="finished trials the study should have")
    search.add_argument("--storage", default="symnas.db", help="SQLite study file")
    search.add_argument("--name", default=None, help="study name (default: derived from the search)")
    search.add_argument("--seed", type=int, default=None, help="the algorithm's seed")
    search.add_argument("--list", action="store_true", help="list the builtin searches and exit")
    execution_options(search)

    show = commands.add_parser("show", help="print a study: trials, best trial, Pareto front")
    show.add_argument("storage", help="SQLite study file")
    show.add_argument("--name", default=None, help="study name (default: the newest)")
    show.add_argument("--plot", default=None, help="write the search curve / Pareto plot to this image")
    show.add_argument("--rows", type=int, default=30, help="trials printed (the best ones)")

    resume = commands.add_parser("resume", help="continue a study started by 'symnas search'")
    resume.add_argument("storage", help="SQLite study file")
    resume.add_argument("--name", default=None, help="study name (default: the newest)")
    resume.add_argument("--trials", type=int, default=None,
                        help="finished trials the study should have (default: those first asked for)")
    execution_options(resume)

    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard on a study file, live")
    dashboard.add_argument("storage", help="SQLite study file (a search may be writing it)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    return parser


def _resources(args) -> Optional[dict]:
    resources = {}
    if args.cpus_per_trial is not None:
        resources["num_cpus"] = args.cpus_per_trial
    if args.gpus_per_trial is not None:
        resources["num_gpus"] = args.gpus_per_trial
    return resources or None


def _run(session, evaluate, num_trials: int, args) -> None:
    from symnas.search import run_trials  # pylint: disable=import-outside-toplevel
    run_trials(session, evaluate, num_trials, not args.no_progress, workers=args.workers,
               trial_timeout=args.trial_timeout, backend=args.backend, address=args.address,
               resources=_resources(args))


def _check_execution_args(args) -> None:
    from symnas import execution  # pylint: disable=import-outside-toplevel
    try:
        execution.check_workers(args.workers)
        execution.check_trial_timeout(args.trial_timeout)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error).replace("workers must", "--workers must").replace(
            "trial_timeout must", "--timeout must")) from error
    if args.backend == "ray":
        from symnas.ray_execution import check_address  # pylint: disable=import-outside-toplevel
        check_address(args.address)


def command_search(args) -> int:
    from symnas import builtin_spaces  # pylint: disable=import-outside-toplevel
    from symnas.session import SearchSession  # pylint: disable=import-outside-toplevel
    from symnas.storage import SQLiteStorage  # pylint: disable=import-outside-toplevel
    if args.list:
        for name, text in builtin_spaces.DESCRIPTIONS.items():
            print(f"{name:12s} {text}")
        return 0
    if args.trials < 0:
        raise CommandError(f"--trials must be >= 0, got {args.trials}.")
    _check_execution_args(args)
    algorithm = make_algorithm(args.algorithm, args.seed)
    source = builtin_spaces.load_source(args.source)
    storage = SQLiteStorage(args.storage)  # created only once the search is known to be valid
    session = SearchSession(source.space, algorithm, storage=storage, name=args.name,
                            objectives=source.objectives,
                            extra_info={SOURCE_KEY: source.info, TRIALS_KEY: args.trials})
    print(f"study {session.name!r} in {args.storage}: {session.num_finished} trials already finished",
          file=sys.stderr)
    _run(session, source.evaluate, args.trials, args)
    return _summary(storage, session.name)


def command_resume(args) -> int:
    from symnas import builtin_spaces  # pylint: disable=import-outside-toplevel
    from symnas.safe_json import from_json  # pylint: disable=import-outside-toplevel
    from symnas.session import SearchSession  # pylint: disable=import-outside-toplevel
    from symnas.objectives import Objective  # pylint: disable=import-outside-toplevel
    storage, name = _open_study(args.storage, args.name)
    info = storage.study_info(name)
    _check_execution_args(args)
    source = builtin_spaces.source_from_info(info.get(SOURCE_KEY))  # imports the classes the JSON names
    space = from_json(info["space"], source="the study's space")
    algorithm = from_json(info["algorithm"], source="the study's algorithm")
    objectives = [Objective(**o) for o in info["objectives"]]
    num_trials = args.trials if args.trials is not None else info.get(TRIALS_KEY)
    if num_trials is None or num_trials < 0:
        raise CommandError(f"--trials must be a non-negative number, got {num_trials}.")
    session = SearchSession(space, algorithm, storage=storage, name=name, objectives=objectives)
    print(f"resuming study {name!r} ({builtin_spaces.describe_source(info.get(SOURCE_KEY))}): "
          f"{session.num_finished} of {num_trials} trials finished", file=sys.stderr)
    _run(session, source.evaluate, num_trials, args)
    return _summary(storage, name)


def _open_study(path: str, name: Optional[str]):
    from symnas.storage import SQLiteStorage  # pylint: disable=import-outside-toplevel
    if not os.path.isfile(path):
        raise CommandError(f"no study file at {path!r}.")
    storage = SQLiteStorage(path)
    names = storage.study_names()
    if not names:
        raise CommandError(f"{path} holds no study.")
    if name is None:
        name = names[-1]
    elif name not in names:
        raise CommandError(f"no study named {name!r} in {path}; studies here: {', '.join(names)}.")
    return storage, name


def _summary(storage, name: str) -> int:
    from symnas.study import Study  # pylint: disable=import-outside-toplevel
    study = Study(storage, name)
    counts = study.trials["status"].value_counts().to_dict() if len(study) else {}
    print(f"study {name!r}: {len(study)} trials " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if study.completed and not study.is_multi_objective:
        best = study.best_trial
        print(f"best trial {best.id}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best.metrics.items()))
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _object_text(record) -> str:
    """The trial's symbolic object, or its DNA when the object's classes are not imported here."""
    from symnas.safe_json import UnsafeJSONError  # pylint: disable=import-outside-toplevel
    import pyglove as pg  # pylint: disable=import-outside-toplevel
    if record.object is None:
        return f"DNA {record.dna}"
    try:
        return pg.format(record.to_object(), compact=False, verbose=False)
    except UnsafeJSONError as error:
        return f"DNA {record.dna}  ({error})"


def command_show(args) -> int:
    import pandas as pd  # pylint: disable=import-outside-toplevel
    from symnas import builtin_spaces  # pylint: disable=import-outside-toplevel
    from symnas.study import Study  # pylint: disable=import-outside-toplevel
    storage, name = _open_study(args.storage, args.name)
    names = storage.study_names()
    if len(names) > 1:
        print(f"studies in {args.storage}: {', '.join(names)}")
    study = Study(storage, name)
    source = study.info.get(SOURCE_KEY)
    if source and source.get("kind") == "builtin":
        try:  # registers the builtin's classes so objects print as objects (never imports files)
            builtin_spaces.load_source(source["name"])
        except Exception:  # pylint: disable=broad-except
            pass
    objectives = ", ".join(f"{o.name} ({o.direction})" for o in study.objectives)
    print(f"study {name!r}  source: {builtin_spaces.describe_source(source)}  objectives: {objectives}")
    frame = study.trials
    if frame.empty:
        print("no trials yet.")
        return 0
    print(f"{len(frame)} trials: " + ", ".join(f"{v} {k}" for k, v in frame["status"].value_counts().items()))
    shown = frame.drop(columns=[c for c in ("started_at", "worker") if c in frame.columns])
    if "error" in shown.columns:
        shown["error"] = shown["error"].map(lambda e: e if not isinstance(e, str) else
                                            e.strip().splitlines()[-1][:60])
    first = study.objectives[0]
    if first.name in shown.columns and len(shown) > args.rows:
        shown = shown.sort_values(first.name, ascending=first.direction == "min").head(args.rows).sort_index()
        print(f"(the {args.rows} best by {first.name}; --rows to see more)")
    with pd.option_context("display.max_columns", 20, "display.width", 200, "display.max_colwidth", 60):
        print(shown.to_string())
    if study.completed:
        if study.is_multi_objective:
            front = study.pareto_front()
            print(f"\nPareto front ({len(front)} trials):")
            for record in front:
                print(f"  trial {record.id}: " + ", ".join(
                    f"{o.name}={_fmt(record.metrics.get(o.name))}" for o in study.objectives))
        else:
            best = study.best_trial
            print(f"\nbest trial {best.id} ({first.name}={_fmt(best.metrics.get(first.name))}):")
            print(_object_text(best))
    if args.plot:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        figure = study.plot()
        try:
            figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        except OSError as error:
            raise CommandError(f"cannot write the plot to {args.plot!r}: {error.strerror}.") from error
        print(f"plot written to {args.plot}")
    return 0


def command_dashboard(args) -> int:
    from symnas.dashboard import DashboardServer  # pylint: disable=import-outside-toplevel
    _open_study(args.storage, None)   # a clear error for a missing or empty file, before serving
    server = DashboardServer(args.storage, host=args.host, port=args.port)
    try:
        server.bind()
    except OSError as error:
        raise CommandError(str(error)) from error
    print(f"optuna-dashboard on {args.storage}: {server.url}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("symnas dashboard: stopped.", file=sys.stderr)
    finally:
        server.stop()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``symnas`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    from symnas.storage import StorageError  # pylint: disable=import-outside-toplevel
    from symnas.safe_json import UnsafeJSONError  # pylint: disable=import-outside-toplevel
    commands = {"search": command_search, "show": command_show, "resume": command_resume,
                "dashboard": command_dashboard}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("symnas: interrupted; finished trials are recorded, 'symnas resume' continues.", file=sys.stderr)
        return 1
    except (CommandError, StorageError, UnsafeJSONError, ValueError, TypeError, KeyError,
            FileNotFoundError, ConnectionError, ImportError, sqlite3.DatabaseError, SyntaxError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"symnas {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
