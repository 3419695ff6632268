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

Example::

    study = sn.search(space, evaluate, sn.algorithms.Random(seed=0), num_trials=100,
                      backend="ray", address="127.0.0.1:6379", resources={"num_cpus": 1})
"""
from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any, Callable, Dict, Optional

from symnas.execution import encode_value, evaluate_payload, finish_from_outcome, propose_trials
from symnas.session import SearchSession

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
                   report_board: str) -> tuple:
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


def _answer_reports(reports, taken: list, session: SearchSession, running: Dict[int, Any]) -> None:
    """Stores the reports ``taken`` from the board and answers each (stop or go on)."""
    answers = []
    for index, key, step, metrics in taken:
        trial = running.get(key)
        # a report of a trial no longer running (cancelled): tell it to stop
        answers.append((index, session.report(trial, step, metrics) if trial is not None else True))
    reports.answer.remote(answers)


def run_on_ray(session: SearchSession, evaluate: Callable[[Any], Any], num_trials: Optional[int],
               progress: bool, *, workers: int = 1, trial_timeout: Optional[float] = None,
               address: Optional[str] = None, resources: Optional[Dict[str, Any]] = None,
               max_retries: int = 0) -> None:
    """Evaluates the session's trials as Ray tasks until ``num_trials`` have finished (module doc)."""
    try:
        import ray  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise ImportError("backend='ray' needs Ray: pip install 'ray[default]'.") from error
    from symnas.search import _progress_bar, _update  # pylint: disable=import-outside-toplevel
    resources = check_resources(resources)
    check_address(address)
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, logging_level="warning",
                     log_to_driver=True)
        except ConnectionError as error:
            raise ConnectionError(f"Cannot connect to the Ray cluster at {address!r}: {error}") from error
    bar = board = reports = None
    in_flight: Dict[Any, tuple] = {}  # ref -> (trial, deadline)
    try:
        if not _fits_some_node(ray, resources):
            raise ValueError(f"No node of the Ray cluster offers the per-trial resources {resources}; "
                             f"cluster resources: {ray.cluster_resources()}.")
        capacity = workers if workers > 1 else _capacity(ray, resources)
        max_pending = getattr(session.algorithm, "max_pending", None)
        if max_pending is not None:
            capacity = min(capacity, max_pending)
        options = {k: v for k, v in resources.items()}
        task = ray.remote(_evaluate_task).options(max_retries=max_retries, **options)
        evaluate_ref = ray.put(evaluate)
        board = ray.remote(_StartBoard).options(num_cpus=0).remote() if trial_timeout else None
        reports_name = f"symnas-reports-{uuid.uuid4().hex}"
        reports = ray.remote(_ReportBoard).options(num_cpus=0, name=reports_name).remote()
        next_reports = reports.take.remote()     # ready when a task has reported
        bar = _progress_bar(session, num_trials) if progress else None
        exhausted = False
        while True:
            session.sync()
            trials, stopped = propose_trials(session, capacity - len(in_flight), len(in_flight), num_trials,
                                             lambda: _update(bar, session))
            exhausted = stopped or (exhausted and not trials)
            for trial in trials:
                value = trial.value if trial.value is not None else trial.dna
                ref = task.remote(evaluate_ref, encode_value(value), board, trial.record.id, reports_name)
                in_flight[ref] = (trial, trial.record.id)
            if not in_flight:
                if exhausted or (num_trials is not None and session.num_finished >= num_trials):
                    break
                continue
            wait_s = None
            if trial_timeout:
                elapsed = ray.get(board.elapsed.remote([key for _, key in in_flight.values()]))
                for ref, (trial, key) in list(in_flight.items()):
                    if elapsed.get(key, 0.0) > trial_timeout:
                        in_flight.pop(ref)
                        ray.cancel(ref, force=True)
                        session.fail(trial, f"timed out after {trial_timeout:g} s (its Ray task was cancelled)")
                remaining = [trial_timeout - elapsed[key] for _, key in in_flight.values() if key in elapsed]
                # Poll to see trials start; wake up at the nearest time limit.
                wait_s = max(0.0, min([0.5] + remaining))
                if not in_flight:
                    _update(bar, session)
                    continue
            ready, _ = ray.wait(list(in_flight) + [next_reports], num_returns=1, timeout=wait_s)
            if next_reports in ready:
                ready.remove(next_reports)
                _answer_reports(reports, ray.get(next_reports), session,
                                {key: trial for trial, key in in_flight.values()})
                next_reports = reports.take.remote()
            for ref in ready:
                trial, key = in_flight.pop(ref)
                if board is not None:
                    board.forget.remote([key])
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as error:
                    session.fail(trial, _describe_ray_error(error))
                else:
                    finish_from_outcome(session, trial, outcome)
            _update(bar, session)
    finally:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        for actor in (board, reports):
            if actor is not None:
                ray.kill(actor)
        if bar is not None:
            _update(bar, session, force=True)
            bar.close()
        if started_here:
            ray.shutdown()
