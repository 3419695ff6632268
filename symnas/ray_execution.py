"""Trials as Ray tasks: ``sn.search(..., backend="ray", address=...)``.

The driver (this process) keeps the algorithm, the ``SearchSession`` and the storage; each
trial's concrete object (PyGlove JSON) goes to a Ray task that runs the evaluator and returns
the result or the error text. So a cluster of many machines needs only Ray and symnas installed:
no shared database, no scheduler of our own. ``resources`` (e.g. ``{"num_cpus": 2, "num_gpus": 1}``)
is what one trial needs; Ray places the tasks.

How many trials run at once: ``workers`` when > 1, else as many as the cluster's CPUs (or GPUs,
for GPU trials) fit. A trial whose Ray worker process dies (killed, segfault, its node lost) is
recorded as failed with Ray's reason (``max_retries=0``: a crash is not retried silently); one that
runs past ``trial_timeout`` seconds, counted from when its task starts on a worker (not from when it
was queued), is cancelled (its worker killed) and failed. ``symnas.reporting.report`` inside a
Ray task goes to a small actor; the driver stores the measurement, asks the early-stopping policy
and answers, so curves and early stopping work as with local workers (the task waits for the
answer: 4-10 ms per report on this 2-core machine, 2026-12-03; no polling: the driver waits on
the actor as on the tasks).

``RayExecutor`` is the run loop's executor for this (``symnas.executor``).

Example::

    study = sn.search(space, evaluate, sn.algorithms.Random(seed=0), num_trials=100,
                      backend="ray", address="127.0.0.1:6379", resources={"num_cpus": 1})
"""
from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from symnas.executor import ERROR, Executor, Outcome, encode_value, evaluate_payload, trial_input

_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "resources")


def check_address(address: Optional[str], connect_timeout: float = 3.0) -> None:
    """Raises ConnectionError naming ``address`` when no Ray cluster answers there."""
    if address is None or address == "auto" or address == "local":
        return
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address must look like 'host:port' or 'ray://host:port', got {address!r}.")
    try:
        with socket.create_connection((host, int(port)), timeout=connect_timeout):
            pass
    except OSError as error:
        raise ConnectionError(
            f"Cannot reach a Ray cluster at {address!r} ({error.strerror or error}): start one with "
            f"'ray start --head' or pass the address it printed.") from error


def check_resources(resources: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    resources = dict(resources or {})
    unknown = set(resources) - set(_RESOURCE_KEYS)
    if unknown:
        raise ValueError(f"Unknown per-trial resources {sorted(unknown)}; use {list(_RESOURCE_KEYS)}.")
    for key in ("num_cpus", "num_gpus", "memory"):
        if key in resources and not (isinstance(resources[key], (int, float)) and resources[key] >= 0):
            raise ValueError(f"resources[{key!r}] must be a non-negative number, got {resources[key]!r}.")
    resources.setdefault("num_cpus", 1)
    return resources


_REPORT_BOARDS: Dict[str, Any] = {}     # in a Ray worker: report board name -> actor handle


def _evaluate_task(evaluate: Callable[[Any], Any], payload: tuple, start_board, key: int,
                   report_board: str) -> Outcome:
    """One trial in a Ray worker; ``report`` calls go to the actor named ``report_board``."""
    if start_board is not None:
        start_board.mark.remote(key)  # the time limit counts from here, not from submission
    from symnas.reporting import reporting_to  # pylint: disable=import-outside-toplevel

    def reporter(step: int, metrics: Dict[str, Any]) -> bool:
        import ray  # pylint: disable=import-outside-toplevel
        # looked up by name on the first report: an actor handle passed with every task costs
        # each task ~3 ms, reporting or not
        if report_board not in _REPORT_BOARDS:
            _REPORT_BOARDS[report_board] = ray.get_actor(report_board)
        return bool(ray.get(_REPORT_BOARDS[report_board].report.remote(key, step, metrics)))

    with reporting_to(reporter):
        return evaluate_payload(evaluate, payload)


class _ReportBoard:
    """A Ray actor (asynchronous) between the tasks' ``report`` calls and the driver: a report
    waits here until the driver has stored it and answered whether the trial should stop."""

    def __init__(self):
        self._pending = []          # (index, key, step, metrics, future), in arrival order
        self._waiting = {}          # index -> future, handed to the driver and not answered yet
        self._arrived = asyncio.Event()
        self._count = 0

    async def report(self, key: int, step: int, metrics: Dict[str, Any]) -> bool:
        future = asyncio.get_running_loop().create_future()
        self._count += 1
        self._pending.append((self._count, key, step, metrics, future))
        self._arrived.set()
        return await future

    async def take(self) -> list:
        """Waits for reports not yet handed to the driver; returns them as (index, key, step, metrics)."""
        await self._arrived.wait()
        self._arrived.clear()
        taken = [report[:4] for report in self._pending]
        self._waiting.update({report[0]: report[4] for report in self._pending})
        self._pending = []
        return taken

    async def answer(self, answers) -> None:
        """``answers``: (index from ``take``, stop) pairs."""
        for index, stop in answers:
            future = self._waiting.pop(index, None)
            if future is not None and not future.done():
                future.set_result(bool(stop))


class _StartBoard:
    """A Ray actor that remembers when each timed trial started running (by its own clock, so the
    driver needs no clock shared with the cluster)."""

    def __init__(self):
        self._started: Dict[int, float] = {}

    def mark(self, key: int) -> None:
        self._started[key] = time.monotonic()

    def elapsed(self, keys) -> Dict[int, float]:
        now = time.monotonic()
        return {key: now - self._started[key] for key in keys if key in self._started}

    def forget(self, keys) -> None:
        for key in keys:
            self._started.pop(key, None)


def _fits_some_node(ray, resources: Dict[str, Any]) -> bool:
    wanted = {"CPU": resources.get("num_cpus", 0), "GPU": resources.get("num_gpus", 0),
              "memory": resources.get("memory", 0), **resources.get("resources", {})}
    for node in ray.nodes():
        if node.get("Alive") and all(node["Resources"].get(k, 0) >= v for k, v in wanted.items() if v):
            return True
    return False


def _capacity(ray, resources: Dict[str, Any]) -> int:
    total = ray.cluster_resources()
    fits = []
    if resources.get("num_cpus"):
        fits.append(total.get("CPU", 0) // resources["num_cpus"])
    if resources.get("num_gpus"):
        fits.append(total.get("GPU", 0) // resources["num_gpus"])
    return max(1, int(min(fits))) if fits else max(1, int(total.get("CPU", 1)))


def _describe_ray_error(error: Exception) -> str:
    text = str(error).strip().splitlines()
    head = next((line for line in text if line.strip()), "")
    return f"Ray task failed: {type(error).__name__}: {head[:300]}" + (
        "\n" + "\n".join(text[-20:]) if len(text) > 1 else "")


class RayExecutor(Executor):
    """Evaluates trials as Ray tasks (see the module doc): ``workers`` at once when > 1, else as many as
    the cluster fits; ``resources`` per trial; ``trial_timeout`` counted from each task's start.

    Example::

        with RayExecutor(address="127.0.0.1:6379", resources={"num_cpus": 1}) as executor:
            executor.start(evaluate, reporter)
            ...
    """

    def __init__(self, workers: int = 1, trial_timeout: Optional[float] = None, address: Optional[str] = None,
                 resources: Optional[Dict[str, Any]] = None, max_retries: int = 0):
        self.workers, self.trial_timeout, self.address = workers, trial_timeout, address
        self.resources = check_resources(resources)
        self.max_retries = max_retries
        self.capacity = workers
        self._ray = None
        self._started_here = False
        self._board = self._reports = self._next_reports = None
        self._in_flight: Dict[Any, tuple] = {}   # ref -> (trial, key)

    def start(self, evaluate: Callable[[Any], Any], reporter) -> None:
        super().start(evaluate, reporter)
        try:
            import ray  # pylint: disable=import-outside-toplevel
        except ImportError as error:
            raise ImportError("backend='ray' needs Ray: pip install 'ray[default]'.") from error
        check_address(self.address)
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level="warning", log_to_driver=True)
            except ConnectionError as error:
                raise ConnectionError(f"Cannot connect to the Ray cluster at {self.address!r}: {error}") from error
        if not _fits_some_node(ray, self.resources):
            raise ValueError(f"No node of the Ray cluster offers the per-trial resources {self.resources}; "
                             f"cluster resources: {ray.cluster_resources()}.")
        self.capacity = self.workers if self.workers > 1 else _capacity(ray, self.resources)
        self._task = ray.remote(_evaluate_task).options(max_retries=self.max_retries, **self.resources)
        self._evaluate_ref = ray.put(evaluate)
        self._board = ray.remote(_StartBoard).options(num_cpus=0).remote() if self.trial_timeout else None
        self._reports_name = f"symnas-reports-{uuid.uuid4().hex}"
        self._reports = ray.remote(_ReportBoard).options(num_cpus=0, name=self._reports_name).remote()
        self._next_reports = self._reports.take.remote()     # ready when a task has reported

    def submit(self, trial) -> None:
        key = trial.record.id
        ref = self._task.remote(self._evaluate_ref, encode_value(trial_input(trial)), self._board, key,
                                self._reports_name)
        self._in_flight[ref] = (trial, key)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def wait(self) -> List[Tuple[Any, Outcome]]:
        ray, ended = self._ray, []
        wait_s = None
        if self.trial_timeout:
            elapsed = ray.get(self._board.elapsed.remote([key for _, key in self._in_flight.values()]))
            for ref, (trial, key) in list(self._in_flight.items()):
                if elapsed.get(key, 0.0) > self.trial_timeout:
                    self._in_flight.pop(ref)
                    ray.cancel(ref, force=True)
                    ended.append((trial, Outcome(ERROR, f"timed out after {self.trial_timeout:g} s (its Ray task "
                                                        f"was cancelled)")))
            remaining = [self.trial_timeout - elapsed[key] for _, key in self._in_flight.values() if key in elapsed]
            # Poll to see trials start; wake up at the nearest time limit.
            wait_s = max(0.0, min([0.5] + remaining))
            if not self._in_flight:
                return ended
        ready, _ = ray.wait(list(self._in_flight) + [self._next_reports], num_returns=1, timeout=wait_s)
        if self._next_reports in ready:
            ready.remove(self._next_reports)
            self._answer_reports(ray.get(self._next_reports))
            self._next_reports = self._reports.take.remote()
        for ref in ready:
            trial, key = self._in_flight.pop(ref)
            if self._board is not None:
                self._board.forget.remote([key])
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:
                outcome = Outcome(ERROR, _describe_ray_error(error))
            ended.append((trial, outcome))
        return ended

    def _answer_reports(self, taken: list) -> None:
        """Stores the reports ``taken`` from the board and answers each (stop or go on)."""
        running = {key: trial for trial, key in self._in_flight.values()}
        answers = []
        for index, key, step, metrics in taken:
            trial = running.get(key)
            # a report of a trial no longer running (cancelled): tell it to stop
            answers.append((index, self._reporter(trial, step, metrics) if trial is not None else True))
        self._reports.answer.remote(answers)

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for ref in self._in_flight:
            ray.cancel(ref, force=True)
        self._in_flight = {}
        for actor in (self._board, self._reports):
            if actor is not None:
                ray.kill(actor)
        self._board = self._reports = None
        if self._started_here:
            ray.shutdown()
        self._ray = None
