"""Parallel trials in isolated worker processes: crashes, time-outs and OOM fail one trial, not the search.

The driver process keeps the algorithm, the ``SearchSession`` and the storage; each worker process
only evaluates. A worker receives the evaluator once (pickled with cloudpickle, so lambdas and
closures work) and then one concrete object per trial (PyGlove JSON for symbolic values), and
sends back the result or the error text. ``symnas.reporting.report`` inside a worker travels to
the driver over the same pipe and returns the early-stopping decision.

A trial whose evaluator raises is failed with its traceback; one that runs past ``trial_timeout``
seconds is failed with "timed out after T s" and its worker killed; one whose process dies
(segfault in a compiler, ``os._exit``, the kernel's OOM killer) is failed with "worker process died
with signal SIGSEGV" (or its exit code). The dead worker is replaced and the search goes on.

Workers are fresh interpreters, never forks of a driver that may already run TVM or torch threads.

``ProcessExecutor`` is the run loop's executor for this (``symnas.executor``); ``WorkerPool`` the
processes behind it.

Example::

    import pyglove as pg, symnas as sn
    space = pg.Dict(x=pg.floatv(-1.0, 1.0), n=pg.oneof([1, 2, 3]))
    study = sn.search(space, lambda v: v.n - v.x ** 2, sn.algorithms.Random(seed=1), num_trials=20,
                      storage=None, workers=2, trial_timeout=30, progress=False)
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from symnas.executor import ERROR, Executor, Outcome, encode_value, evaluate_payload, trial_input


def describe_exit(exitcode: Optional[int]) -> str:
    """Why a worker process ended, in words ("worker process died with signal SIGSEGV")."""
    if exitcode is None:
        return "worker process died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (killed: out of memory, or by another process)" if name == "SIGKILL" else ""
        return f"worker process died with signal {name}{hint}"
    return f"worker process exited with code {exitcode} during the trial"


def _worker_main(connection: multiprocessing.connection.Connection) -> None:
    """A worker process: receives the evaluator, then evaluates trials until told to stop."""
    import cloudpickle  # pylint: disable=import-outside-toplevel
    from symnas.reporting import reporting_to  # pylint: disable=import-outside-toplevel
    try:
        evaluate = cloudpickle.loads(connection.recv_bytes())
    except Exception as error:  # pylint: disable=broad-except
        connection.send(("init_error", f"The evaluator could not be loaded in a worker process: {error!r}"))
        return
    connection.send(("ready",))

    def reporter(step: int, metrics: Dict[str, Any]) -> bool:
        connection.send(("report", step, metrics))
        return bool(connection.recv())

    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        with reporting_to(reporter):
            outcome = evaluate_payload(evaluate, message)
        connection.send(("done", outcome))


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this worker when its driver dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes  # pylint: disable=import-outside-toplevel
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def worker_entry(fd: int) -> None:
    """Entry point of ``python -c`` worker processes: talks to the driver over socket ``fd``."""
    _die_with_parent()
    connection = multiprocessing.connection.Connection(fd)
    try:
        _worker_main(connection)
    finally:
        connection.close()


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

# A worker that has not even started its interpreter after this long counts as timed out too.
_STARTUP_LIMIT_S = 120.0


@dataclasses.dataclass
class _Worker:
    process: subprocess.Popen
    connection: multiprocessing.connection.Connection
    trial: Any = None               # the ActiveTrial it evaluates
    deadline: float = float("inf")
    timeout: Optional[float] = None
    ready: bool = False  # its interpreter has started: time limits count from then


class WorkerPool:
    """Worker processes that evaluate one trial each at a time; dead ones are replaced.

    Workers are fresh interpreters (``python -c``), not forks: a driver that already runs TVM or
    torch threads cannot be forked safely, and unlike multiprocessing's spawn this never re-runs
    the user's ``__main__`` script. The evaluator is sent with cloudpickle (lambdas and closures
    work); the worker gets the driver's ``sys.path`` so evaluators defined in importable modules load.

    Example::

        with WorkerPool(lambda v: v * 2, size=2) as pool:
            ...
    """

    def __init__(self, evaluate: Callable[[Any], Any], size: int):
        import cloudpickle  # pylint: disable=import-outside-toplevel
        try:
            self._evaluate_bytes = cloudpickle.dumps(evaluate)
        except Exception as error:  # pylint: disable=broad-except
            raise TypeError(f"The evaluator cannot be sent to worker processes (cloudpickle failed: "
                            f"{error!r}); use workers=1 or a picklable evaluator.") from error
        self.size = size
        self.workers: List[_Worker] = []
        # After a first crash or time-out a started spare hides the next replacement's start-up (~1 s).
        self._spare: Optional[_Worker] = None
        try:
            for _ in range(size):
                self.workers.append(self._start())
        except BaseException:
            self.close()
            raise

    def _start(self) -> _Worker:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # N workers each using every core (torch/OpenMP default) oversubscribe the CPUs; spin-waiting
        # threads then slow training 10-30x. Share the cores instead, unless the user chose.
        threads = str(max(1, (os.cpu_count() or 1) // self.size))
        for name in _THREAD_VARIABLES:
            env.setdefault(name, threads)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] +
                                            ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        fd = theirs.fileno()
        process = subprocess.Popen(
            [sys.executable, "-c", f"from symnas.execution import worker_entry; worker_entry({fd})"],
            pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        connection = multiprocessing.connection.Connection(ours.detach())
        connection.send_bytes(self._evaluate_bytes)
        return _Worker(process, connection)

    def replace(self, worker: _Worker) -> _Worker:
        """Kills ``worker`` (if alive) and starts a fresh one in its place."""
        self._kill(worker)
        fresh = self._spare if self._spare is not None and self._spare.process.poll() is None else None
        if fresh is None:
            fresh = self._start()
        self._spare = self._start()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    @staticmethod
    def _kill(worker: _Worker) -> None:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait()
        worker.connection.close()

    def idle(self) -> List[_Worker]:
        return [w for w in self.workers if w.trial is None]

    def busy(self) -> List[_Worker]:
        return [w for w in self.workers if w.trial is not None]

    def submit(self, worker: _Worker, trial, timeout: Optional[float]) -> None:
        payload = encode_value(trial_input(trial))
        try:
            worker.connection.send(payload)
        except OSError:  # the idle worker died since its last trial: use a fresh one
            worker = self.replace(worker)
            worker.connection.send(payload)
        worker.trial, worker.timeout = trial, timeout
        worker.deadline = float("inf")
        if timeout:
            worker.deadline = time.monotonic() + (timeout if worker.ready else timeout + _STARTUP_LIMIT_S)

    def close(self) -> None:
        if self._spare is not None:
            self.workers.append(self._spare)
            self._spare = None
        for worker in self.workers:
            try:
                if worker.trial is None:
                    worker.connection.send(None)
            except OSError:
                pass
        end = time.monotonic() + 2.0
        for worker in self.workers:
            if worker.trial is None:
                try:
                    worker.process.wait(max(0.0, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            self._kill(worker)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProcessExecutor(Executor):
    """Evaluates trials in ``workers`` worker processes (see the module doc); a trial running past
    ``trial_timeout`` seconds is killed with its worker and ends as an ``error``.

    Example::

        with ProcessExecutor(workers=2, trial_timeout=60) as executor:
            executor.start(evaluate, reporter)
            ...
    """

    def __init__(self, workers: int, trial_timeout: Optional[float] = None):
        self.capacity = workers
        self.trial_timeout = trial_timeout
        self._pool: Optional[WorkerPool] = None

    def start(self, evaluate: Callable[[Any], Any], reporter) -> None:
        super().start(evaluate, reporter)
        self._pool = WorkerPool(evaluate, self.capacity)

    def submit(self, trial) -> None:
        self._pool.submit(self._pool.idle()[0], trial, self.trial_timeout)

    @property
    def in_flight(self) -> int:
        return len(self._pool.busy()) if self._pool is not None else 0

    def wait(self) -> List[Tuple[Any, Outcome]]:
        """Blocks until at least one worker message, death or time-out; returns the trials that ended."""
        pool, ended = self._pool, []
        busy = pool.busy()
        deadline = min(w.deadline for w in busy)
        timeout = None if deadline == float("inf") else max(0.0, deadline - time.monotonic())
        handles = {worker.connection: worker for worker in busy}
        for connection in multiprocessing.connection.wait(list(handles), timeout=timeout):
            worker = handles[connection]
            try:
                message = connection.recv()
            except (EOFError, OSError):  # the process died: its socket closed
                trial, worker.trial = worker.trial, None
                try:
                    worker.process.wait(5)
                except subprocess.TimeoutExpired:
                    pass
                ended.append((trial, Outcome(ERROR, describe_exit(worker.process.returncode))))
                pool.replace(worker)
                continue
            ended.extend(self._handle(worker, message))
        now = time.monotonic()
        for worker in pool.busy():
            if worker.deadline <= now:
                trial, worker.trial = worker.trial, None
                pool.replace(worker)
                ended.append((trial, Outcome(ERROR, f"timed out after {self.trial_timeout:g} s (its worker "
                                                    f"process was killed)")))
        return ended

    def _handle(self, worker: _Worker, message: tuple) -> List[Tuple[Any, Outcome]]:
        kind = message[0]
        if kind == "init_error":
            raise RuntimeError(message[1])
        if kind == "ready":
            worker.ready = True
            if worker.timeout:
                worker.deadline = time.monotonic() + worker.timeout
        elif kind == "report":
            stop = self._reporter(worker.trial, message[1], message[2])
            worker.connection.send(bool(stop))
        elif kind == "done":
            trial = worker.trial
            worker.trial, worker.deadline = None, float("inf")
            return [(trial, message[1])]
        return []

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
