"""One run loop over an executor contract: every executor gives the same study; the house has no import cycle."""
import ast
import pathlib
import threading
import queue

import pyglove as pg
import pytest

import symnas as sn
from symnas.errors import SearchInterrupted
from symnas.executor import ERROR, OK, Executor, InlineExecutor, Outcome, evaluate_safely
from symnas.loop import SearchLoop
from symnas.session import SearchSession

SPACE = pg.Dict(x=pg.floatv(0.0, 1.0), n=pg.oneof([1, 2, 3]))


def objective(v):
    from symnas.reporting import report
    if v.n == 3 and v.x > 0.5:
        raise sn.TrialRejected("n=3 is illegal here", metrics={"why": 3.0})
    if v.n == 3:
        raise ValueError("n=3 fails below 0.5")
    report(0, partial=v.x)
    return v.x + v.n


class ThreadExecutor(Executor):
    """A user's own executor: trials in two threads (the contract is all the loop needs)."""

    def __init__(self):
        self.capacity = 2
        self._done = queue.Queue()
        self._running = 0

    def submit(self, trial):
        self._running += 1

        def work():
            from symnas.reporting import reporting_to
            with reporting_to(lambda step, metrics: self._reporter(trial, step, metrics)):
                self._done.put((trial, evaluate_safely(self._evaluate, trial.value)))
        threading.Thread(target=work).start()

    @property
    def in_flight(self):
        return self._running

    def wait(self):
        ended = [self._done.get()]
        while not self._done.empty():
            ended.append(self._done.get())
        self._running -= len(ended)
        return ended


def _summary(study):
    return sorted((r.dna, r.status, r.metrics.get("reward"), len(r.measurements)) for r in study.records)


@pytest.mark.parametrize("make", [InlineExecutor, ThreadExecutor,
                                  lambda: __import__("symnas.execution").execution.ProcessExecutor(2)],
                         ids=["inline", "threads", "processes"])
def test_every_executor_gives_the_loop_the_same_outcomes(make):
    session = SearchSession(SPACE, pg.geno.Random(seed=4), storage=None)
    SearchLoop(session, make(), num_trials=24, progress=False).run(objective)
    reference = sn.search(SPACE, objective, pg.geno.Random(seed=4), num_trials=24, storage=None, progress=False)
    study = sn.Study(session.storage, session.name)
    assert _summary(study) == _summary(reference)
    statuses = {r.status for r in study.records}
    assert statuses == {"completed", "failed", "rejected"}
    assert all(len(r.measurements) == 1 for r in study.records if r.status == "completed")


def test_an_interrupted_outcome_stops_the_loop_with_its_trial_recorded():
    class Interrupting(InlineExecutor):
        def wait(self):
            trial = self._queued.pop(0)
            return [(trial, Outcome("interrupted", "its objective called sys.exit(2)"))]
    session = SearchSession(SPACE, sn.algorithms.Random(seed=0), storage=None)
    with pytest.raises(SearchInterrupted, match="trial 1 was interrupted"):
        SearchLoop(session, Interrupting(), num_trials=5, progress=False).run(objective)
    assert [r.status for r in session.storage.trials(session.name)] == ["interrupted"]


def test_outcomes_say_how_an_evaluation_ended():
    assert evaluate_safely(lambda v: v + 1, 1) == Outcome(OK, 2)
    error = evaluate_safely(lambda v: 1 / 0, 1)
    assert error.kind == ERROR and error.value.strip().endswith("ZeroDivisionError: division by zero")
    rejected = evaluate_safely(lambda v: (_ for _ in ()).throw(sn.TrialRejected("no", {"m": 1})), 1)
    assert rejected == Outcome(ERROR, "no", {"m": 1})
    assert evaluate_safely(lambda v: exit(3), 1).kind == "interrupted"


# -- the import graph --------------------------------------------------------------------------------
ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"symnas": ROOT / "symnas", "symnas.algorithms": ROOT / "algorithms", "symnas.spaces": ROOT / "spaces"}


def _modules():
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name.startswith("symnas.algorithms") and package == "symnas" or \
                    name.startswith("symnas.spaces") and package == "symnas":
                continue
            modules[name] = path
    return modules


def _imports(name, path, modules):
    """The symnas modules ``name`` imports, at the top or inside functions (a lazy import is an edge too)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + ".") and target != "symnas":
                found.add(target)
    return found


def test_the_library_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []
