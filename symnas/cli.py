"""The ``symnas`` command line: run, inspect and resume searches stored in a SQLite study file.

Example::

    symnas search quickstart --algorithm reinforce --trials 30 --workers 2 --storage runs.db
    symnas search train.py --scheduler asha --max-resource 27 --constraint "latency_ms<=5"
    symnas show runs.db --plot curve.png
    symnas resume runs.db --trials 60

``search`` takes a builtin (``symnas search --list``) or a ``.py`` file that defines ``space``
and ``evaluate`` (and optionally ``objectives``). Every error is one line on stderr naming the
problem; trials already recorded stay recorded. Exit codes: 0 done, 1 interrupted (Ctrl-C or an
objective's ``sys.exit``), 2 an error in the input, 3 no trial completed.
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
    "alternating": "AlternatingEvolution",   # product spaces: mutates one part at a time, parts in turn
    "reinforce": "Reinforce",
    "bayesian": "Bayesian",
    "nsga2": "NSGA2",
    "canvas": "Canvas",          # kernel architecture search spaces (sn.kas) only
}

SOURCE_KEY = "cli_source"        # where the evaluator comes from (builtin name or file path)
TRIALS_KEY = "cli_num_trials"    # the --trials of the first run, the default for resume
SCHEDULER_KEY = "cli_scheduler"  # the --scheduler and its resources, used again by resume
SCHEDULERS = {"asha": "ASHA", "hyperband": "Hyperband"}
_CONSTRAINT_OPERATORS = ("<=", ">=", "==", "<", ">")   # two-character ones first when splitting

EXIT_OK, EXIT_INTERRUPTED, EXIT_ERROR, EXIT_NOTHING_COMPLETED = 0, 1, 2, 3
SHOW_WIDTH = 80                  # symnas show fits a terminal this wide unless --wide
_EPILOG = ("exit codes: 0 done, 1 interrupted (Ctrl-C or sys.exit in the objective), 2 an error in the "
           "input, 3 no trial completed")


class CommandError(Exception):
    """A user error the command line reports in one line."""


class UsageError(CommandError):
    """The command line itself is incomplete: the usage is printed with the message."""


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


def make_scheduler(spec: Optional[dict]):
    """The ``sn.schedulers`` object for ``{"kind": "asha"|"hyperband", "min_resource": .., ...}``."""
    if not spec:
        return None
    from symnas import schedulers  # pylint: disable=import-outside-toplevel
    kind = spec.get("kind")
    if kind not in SCHEDULERS:
        raise CommandError(f"unknown scheduler {kind!r}; available: {', '.join(SCHEDULERS)}.")
    if kind == "hyperband" and spec.get("max_resource") is None:
        raise CommandError("--scheduler hyperband needs --max-resource (the steps a trial trains at most).")
    arguments = {k: v for k, v in spec.items() if k != "kind" and v is not None}
    return getattr(schedulers, SCHEDULERS[kind])(**arguments)


def parse_constraint(text: str):
    """``"latency_ms<=5"`` -> ``("latency_ms", ("<=", 5.0))``; CommandError naming a malformed one."""
    for op in _CONSTRAINT_OPERATORS:
        metric, found, bound = text.partition(op)
        if found:
            try:
                value = float(bound)
            except ValueError:
                break
            if metric.strip() and not any(o in metric + bound for o in ("<", ">", "=")):
                return metric.strip(), (op, value)
            break
    raise CommandError(f"--constraint {text!r}: expected METRIC OP NUMBER with OP one of "
                       f"{', '.join(_CONSTRAINT_OPERATORS)}, e.g. \"latency_ms<=5\".")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, off)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    from symnas.builtin_spaces import BUILTINS  # pylint: disable=import-outside-toplevel
    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(prog="symnas", description="Symbolic AutoML searches from the shell.",
                                     epilog=_EPILOG, formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def execution_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--workers", type=int, default=1, help="trials evaluated at once (processes)")
        sub.add_argument("--timeout", type=float, default=None, dest="trial_timeout",
                         help="seconds after which a trial is killed and recorded as failed (none: no limit)")
        sub.add_argument("--retry-failed", type=int, default=0, metavar="N",
                         help="evaluate each failed or interrupted trial again, up to N more times")
        sub.add_argument("--backend", choices=("local", "ray"), default="local", help="where trials run")
        sub.add_argument("--address", default=None, help="Ray cluster address (with --backend ray)")
        sub.add_argument("--cpus-per-trial", type=float, default=None, help="Ray resources per trial")
        sub.add_argument("--gpus-per-trial", type=float, default=None, help="Ray resources per trial")
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")

    search = commands.add_parser("search", help="run a search and record it in a study file", epilog=_EPILOG,
                                 formatter_class=formatter)
    search.add_argument("source", nargs="?", default=None,
                        help=f"a builtin ({', '.join(BUILTINS)}) or a .py file defining space and evaluate")
    search.add_argument("--algorithm", default="random", help=f"one of {', '.join(ALGORITHMS)}")
    search.add_argument("--trials", type=int, default=20, help="finished trials the study should have")
    search.add_argument("--storage", default="symnas.db", help="SQLite study file")
    search.add_argument("--name", default=None,
                        help="study name (none: derived from the space, algorithm and evaluator, so the same "
                             "command resumes its study)")
    search.add_argument("--seed", type=int, default=None, help="the algorithm's seed (none: drawn from the OS)")
    search.add_argument("--list", action="store_true", help="list the builtin searches and exit")
    search.add_argument("--scheduler", choices=tuple(SCHEDULERS), default=None,
                        help="multi-fidelity: stop trials that fall behind at a rung of their report() steps")
    search.add_argument("--min-resource", type=float, default=None,
                        help="steps every trial gets before the scheduler may stop it (default 1)")
    search.add_argument("--max-resource", type=float, default=None,
                        help="steps a trial trains at most (required by hyperband)")
    search.add_argument("--reduction-factor", type=float, default=None,
                        help="eta: the top 1/eta of each rung goes on (default 3)")
    search.add_argument("--scheduler-mode", choices=("stop", "promote"), default=None,
                        help="stop: end trials that fall behind (default); promote: pause them at rungs and resume "
                             "the promoted ones from the checkpoint their evaluator saves (sn.train.Trainer does)")
    search.add_argument("--constraint", action="append", default=[], metavar="METRIC<=NUMBER",
                        help="a constraint on a reported metric (repeatable), e.g. \"latency_ms<=5\"")
    execution_options(search)

    show = commands.add_parser("show", help="print a study: trials, best trial, Pareto front", epilog=_EPILOG,
                               formatter_class=formatter)
    show.add_argument("storage", help="SQLite study file (opened read-only)")
    show.add_argument("--name", default=None, help="study name (none: the newest)")
    show.add_argument("--plot", default=None, help="write the search curve / Pareto plot to this image")
    show.add_argument("--rows", type=int, default=30, help="trials printed (the best ones)")
    show.add_argument("--wide", action="store_true",
                      help="print every column, the DNA and the best object whole (by default the output fits "
                           f"{SHOW_WIDTH} columns)")

    resume = commands.add_parser("resume", help="continue a study started by 'symnas search'", epilog=_EPILOG,
                                 formatter_class=formatter)
    resume.add_argument("storage", help="SQLite study file")
    resume.add_argument("--name", default=None, help="study name (none: the newest)")
    resume.add_argument("--trials", type=int, default=None,
                        help="finished trials the study should have (none: those first asked for)")
    resume.add_argument("--trust-space-file", action="store_true",
                        help="run the study's space file even if it changed since the study started")
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
    from symnas import executor  # pylint: disable=import-outside-toplevel
    try:
        executor.check_workers(args.workers)
        executor.check_trial_timeout(args.trial_timeout)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error).replace("workers must", "--workers must").replace(
            "trial_timeout must", "--timeout must")) from error
    if args.retry_failed < 0:
        raise CommandError(f"--retry-failed must be >= 0, got {args.retry_failed}.")
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
        return EXIT_OK
    if args.source is None:
        raise UsageError("give a builtin search (" + ", ".join(builtin_spaces.BUILTINS) +
                         ") or a .py space file; 'symnas search --list' lists the builtins.")
    if args.trials < 0:
        raise CommandError(f"--trials must be >= 0, got {args.trials}.")
    _check_execution_args(args)
    algorithm = make_algorithm(args.algorithm, args.seed)
    scheduler_spec = _scheduler_spec(args)
    scheduler = make_scheduler(scheduler_spec)
    constraints = dict(parse_constraint(text) for text in args.constraint) or None
    source = builtin_spaces.load_source(args.source)
    storage = SQLiteStorage(args.storage)  # created only once the search is known to be valid
    session = SearchSession(source.space, algorithm, storage=storage, name=args.name,
                            objectives=source.objectives, retry_failed=args.retry_failed,
                            objective=getattr(source.evaluate, "symnas_fingerprint", None),
                            early_stopping=scheduler, constraints=constraints, can_pause=True,
                            extra_info={SOURCE_KEY: source.info, TRIALS_KEY: args.trials,
                                        **({SCHEDULER_KEY: scheduler_spec} if scheduler_spec else {})})
    if session.resumed:
        print(f"resuming study {session.name!r} in {args.storage}: {session.num_finished} trials already "
              f"finished (the same search as before; --name NEW starts another study)", file=sys.stderr)
    else:
        print(f"new study {session.name!r} in {args.storage}", file=sys.stderr)
    return _run(session, source.evaluate, args.trials, args, storage)


def _scheduler_spec(args) -> Optional[dict]:
    resources = {"min_resource": args.min_resource, "max_resource": args.max_resource,
                 "reduction_factor": args.reduction_factor, "mode": args.scheduler_mode}
    if args.scheduler is None:
        given = [f"--{k.replace('_', '-')}" for k, v in resources.items() if v is not None]
        if given:
            raise CommandError(f"{', '.join(given)} apply to a --scheduler (asha or hyperband).")
        return None
    return {"kind": args.scheduler, **{k: v if isinstance(v, str) else _whole(v)
                                       for k, v in resources.items() if v is not None}}


def _whole(value: float):
    return int(value) if float(value).is_integer() else value


def command_resume(args) -> int:
    from symnas import builtin_spaces  # pylint: disable=import-outside-toplevel
    from symnas.objectives import Objective  # pylint: disable=import-outside-toplevel
    from symnas.safe_json import from_json  # pylint: disable=import-outside-toplevel
    from symnas.session import SearchSession  # pylint: disable=import-outside-toplevel
    storage, name = _open_study(args.storage, args.name, read_only=False)
    info = storage.study_info(name)
    _check_execution_args(args)
    # the recorded source first: it registers the classes the space's JSON names
    source = builtin_spaces.source_from_info(info.get(SOURCE_KEY), trust_space_file=args.trust_space_file)
    space = from_json(info["space"], source="the study's space")
    algorithm = from_json(info["algorithm"], source="the study's algorithm")
    objectives = [Objective(**o) for o in info["objectives"]]
    num_trials = args.trials if args.trials is not None else info.get(TRIALS_KEY)
    if not isinstance(num_trials, int) or isinstance(num_trials, bool) or num_trials < 0:
        raise CommandError(f"--trials must be a non-negative number, got {num_trials}.")
    constraints = info.get("constraints")
    if isinstance(constraints, dict) and "callable" in constraints:
        raise CommandError(f"study {name!r} was searched with a constraints function, which a study file does "
                           f"not hold; resume it from Python with the same constraints=.")
    constraints = {metric: tuple(rule) for metric, rule in constraints.items()} if constraints else None
    session = SearchSession(space, algorithm, storage=storage, name=name, objectives=objectives,
                            retry_failed=args.retry_failed, objective=info.get("objective"),
                            early_stopping=make_scheduler(info.get(SCHEDULER_KEY)), constraints=constraints,
                            can_pause=True)
    print(f"resuming study {name!r} ({builtin_spaces.describe_source(info.get(SOURCE_KEY))}): "
          f"{session.num_finished} of {num_trials} trials finished", file=sys.stderr)
    return _run(session, source.evaluate, num_trials, args, storage)


def _run(session, evaluate, num_trials: int, args, storage) -> int:
    from symnas.search import run_trials  # pylint: disable=import-outside-toplevel
    run_trials(session, evaluate, num_trials, not args.no_progress, workers=args.workers,
               trial_timeout=args.trial_timeout, backend=args.backend, address=args.address,
               resources=_resources(args))
    return _summary(storage, session.name)


def _open_study(path: str, name: Optional[str], read_only: bool = True):
    from symnas.storage import SQLiteStorage  # pylint: disable=import-outside-toplevel
    if not os.path.isfile(path):
        raise CommandError(f"no study file at {path!r}.")
    storage = SQLiteStorage(path, read_only=read_only)
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
    from symnas.trial import COMPLETED, FINISHED_STATUSES  # pylint: disable=import-outside-toplevel
    study = Study(storage, name)
    counts = {status: storage.num_trials(name, (status,)) for status in (*FINISHED_STATUSES, "interrupted", "paused")}
    counts = {k: v for k, v in counts.items() if v}
    print(f"study {name!r}: {len(study)} trials " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    common = study.most_common_error()
    if common is not None:
        print(f"most common error ({common[1]} of {counts.get('failed', 0)} failed): {common[0]}")
    if study.infeasible:
        print(f"{len(study.infeasible)} completed trials missed the constraints {study.constraints}")
    if study.feasible and not study.is_multi_objective:
        best = study.best_trial
        print(f"best trial {best.id}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best.metrics.items()))
    if not counts.get(COMPLETED):
        print(f"symnas: no trial of study {name!r} completed.", file=sys.stderr)
        return EXIT_NOTHING_COMPLETED
    return EXIT_OK


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _object_text(record, width: Optional[int]) -> str:
    """The trial's symbolic object (clipped to ``width``), or its DNA when the object's classes are not
    imported here or the study recorded no objects."""
    from symnas.safe_json import UnsafeJSONError  # pylint: disable=import-outside-toplevel
    from symnas.terminal import clip_lines  # pylint: disable=import-outside-toplevel
    import pyglove as pg  # pylint: disable=import-outside-toplevel
    if record.object is None:
        return clip_lines(f"DNA {record.dna}", width)
    try:
        text = pg.format(record.to_object(), compact=False, verbose=False)
    except UnsafeJSONError as error:
        text = f"DNA {record.dna}\n({error})"
    return clip_lines(text, width, max_lines=None if width is None else 30)


def command_show(args) -> int:
    from symnas.trial import error_headline  # pylint: disable=import-outside-toplevel
    from symnas import builtin_spaces  # pylint: disable=import-outside-toplevel
    from symnas.study import Study  # pylint: disable=import-outside-toplevel
    from symnas.terminal import clip, fit_table  # pylint: disable=import-outside-toplevel
    width = None if args.wide else SHOW_WIDTH
    storage, name = _open_study(args.storage, args.name)
    names = storage.study_names()
    if len(names) > 1:
        print(clip(f"studies in {args.storage}: {', '.join(names)}", width))
    study = Study(storage, name)
    source = study.info.get(SOURCE_KEY)
    if isinstance(source, dict) and source.get("kind") == "builtin" and source.get("name") in builtin_spaces.BUILTINS:
        try:  # registers the builtin's classes so objects print as objects (never runs files)
            builtin_spaces.load_source(source["name"])
        except Exception:  # pylint: disable=broad-except
            pass
    print(clip(f"study {name!r}  source: {builtin_spaces.describe_source(source)}", width))
    print(clip("objectives: " + ", ".join(f"{o.name} ({o.direction})" for o in study.objectives), width))
    frame = study.trials
    if frame.empty:
        print("no trials yet.")
        return 0
    print(clip(f"{len(frame)} trials: " + ", ".join(f"{v} {k}" for k, v in frame["status"].value_counts().items()),
               width))
    hidden = ("started_at", "worker", "constraint_violations") + (() if args.wide else ("dna",))
    shown = frame.drop(columns=[c for c in hidden if c in frame.columns])
    infeasible = study.infeasible
    if infeasible:   # completed but missed a constraint: never the best, never on the Pareto front
        shown.loc[[r.id for r in infeasible], "status"] = "infeasible"
        print(clip(f"{len(infeasible)} completed trials are infeasible (constraints {study.constraints}).", width))
    if "error" in shown.columns:
        shown["error"] = shown["error"].map(lambda e: e if not isinstance(e, str) else
                                            error_headline(e, 60 if args.wide else 30))
    first = study.objectives[0]
    if first.name in shown.columns and len(shown) > args.rows:
        shown = shown.sort_values(first.name, ascending=first.direction == "min").head(args.rows).sort_index()
        print(f"(the {args.rows} best by {first.name}; --rows to see more)")
    important = ["status", *(o.name for o in study.objectives), "error"]
    shown = shown[[c for c in important if c in shown.columns] + [c for c in shown.columns if c not in important]]
    print(fit_table(shown, width, keep=important))
    if study.completed and not study.feasible:
        print("\nno feasible trial yet: every completed trial missed a constraint.")
    if study.feasible:
        if study.is_multi_objective:
            front = study.pareto_front()
            print(f"\nPareto front ({len(front)} trials):")
            for record in front:
                print(clip(f"  trial {record.id}: " + ", ".join(
                    f"{o.name}={_fmt(record.metrics.get(o.name))}" for o in study.objectives), width))
        else:
            best = study.best_trial
            print(clip(f"\nbest trial {best.id} ({first.name}={_fmt(best.metrics.get(first.name))}):", width))
            print(_object_text(best, width))
    if args.plot:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        figure = study.plot()
        try:
            figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        except OSError as error:
            raise CommandError(f"cannot write the plot to {args.plot!r}: {error.strerror}.") from error
        print(clip(f"plot written to {args.plot}", width))
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
    parser = _parser()
    args = parser.parse_args(argv)
    from symnas.errors import SearchInterrupted  # pylint: disable=import-outside-toplevel
    from symnas.storage import StorageError  # pylint: disable=import-outside-toplevel
    from symnas.safe_json import UnsafeJSONError  # pylint: disable=import-outside-toplevel
    commands = {"search": command_search, "show": command_show, "resume": command_resume,
                "dashboard": command_dashboard}
    try:
        return commands[args.command](args)
    except UsageError as error:
        print(_subparser_usage(parser, args.command), end="", file=sys.stderr)
        print(f"symnas {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:   # the output was piped into a reader that stopped early (symnas show | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("symnas: interrupted; finished trials are recorded (the running ones as interrupted), "
              "'symnas resume' continues.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SearchInterrupted as error:
        print(str(error), file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CommandError, StorageError, UnsafeJSONError, ValueError, TypeError, KeyError,
            FileNotFoundError, ConnectionError, ImportError, sqlite3.DatabaseError, SyntaxError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"symnas {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # pylint: disable=broad-except
        if os.environ.get("SYMNAS_TRACEBACK"):
            raise
        print(f"symnas {args.command}: internal error: {type(error).__name__}: {_one_line(str(error))} "
              f"(set SYMNAS_TRACEBACK=1 for the traceback, and please report it)", file=sys.stderr)
        return EXIT_ERROR


def _subparser_usage(parser: argparse.ArgumentParser, command: str) -> str:
    for action in parser._actions:  # pylint: disable=protected-access
        if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
            return action.choices[command].format_usage()
    return parser.format_usage()


def _one_line(text: str, width: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[:width - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
