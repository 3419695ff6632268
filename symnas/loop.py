"""The run loop: one sample -> evaluate -> feedback loop for every search, over an ``Executor``.

Every turn it feeds the algorithm the trials other processes finished (``session.sync``), proposes
as many trials as the executor has room for (``propose``; an algorithm with an integer attribute
``max_pending`` bounds how many of its proposals are in flight, and one whose ``propose`` raises
``StopIteration`` while trials run is asked again after the next outcome), hands them out, waits
for at least one outcome and records it (``record``). The executor decides where evaluations run (this thread,
worker processes, Ray); the loop, the session and the progress bar are the same for all of them.
However it ends, trials still running are recorded as interrupted and the session is closed
(heartbeat stopped, the algorithm's state checkpointed).

Where later features plug in:

- a multi-fidelity ``scheduler=`` (ASHA, Hyperband): ``SearchLoop.report`` is where each
  intermediate report arrives; a scheduler answers there (go on / stop / pause), a paused trial's
  evaluation ends with its checkpoint, and ``session.enqueue`` puts it back so ``propose`` resumes it
  before asking the algorithm for new points;
- warm start (``initial=[...]``, ``study.enqueue(...)``): ``session.enqueue(dna)``; queued DNAs are
  proposed before the algorithm's (retries use the same queue);
- ``constraints=``: ``propose`` is the one place a trial exists before it is evaluated; a
  constraint that fails rejects it there (``session.reject``) and it is never submitted.

Example::

    session = SearchSession(space, sn.algorithms.Random(seed=0), storage=None)
    SearchLoop(session, InlineExecutor(), num_trials=20, progress=False).run(evaluate)
"""
from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Tuple

from symnas.errors import SearchInterrupted, TrialRejected
from symnas.executor import ERROR, INTERRUPTED, OK, Executor, Outcome
from symnas.progress import ProgressBar
from symnas.session import ActiveTrial, SearchSession
from symnas.trial import most_common_error


def propose(session: SearchSession, slots: int, in_flight: int, num_trials: Optional[int]
            ) -> Tuple[List[ActiveTrial], bool]:
    """Up to ``slots`` new trials, as far as ``num_trials`` (counting the ``in_flight`` ones) and the
    algorithm allow. Returns the trials and whether the algorithm stopped proposing (StopIteration).
    A proposal that cannot be materialised is recorded as failed by the session and skipped."""
    trials: List[ActiveTrial] = []
    while len(trials) < slots:
        if num_trials is not None and session.num_finished + in_flight + len(trials) >= num_trials:
            break
        try:
            trial = session.next_trial()
        except StopIteration:
            return trials, True
        if trial is not None:
            trials.append(trial)
    return trials, False


def record(session: SearchSession, trial: ActiveTrial, outcome: Outcome) -> None:
    """Records how ``trial`` ended; an interrupted trial stops the search (``SearchInterrupted``)."""
    if outcome.kind == OK:
        session.complete(trial, outcome.value)
    elif outcome.kind == INTERRUPTED:
        session.interrupt(trial, outcome.value)
        raise SearchInterrupted(interrupted_message(session, trial.record.id, outcome.value))
    elif outcome.rejection is not None:
        session.reject(trial, TrialRejected(outcome.value, metrics=outcome.rejection))
    else:
        assert outcome.kind == ERROR, outcome.kind
        session.fail(trial, outcome.value)


def interrupted_message(session: SearchSession, trial_id: int, reason: str) -> str:
    """What the caller reads when a trial stopped the search."""
    return (f"symnas: the search of study {session.name!r} stopped: trial {trial_id} was interrupted ({reason}). "
            f"{interrupted_note(session)}")


def interrupted_note(session: SearchSession) -> str:
    return (f"symnas: the trial is recorded as interrupted and the {session.num_finished} finished trials are "
            f"kept; run the same search again to resume (retry_failed=1 evaluates the interrupted trial again).")


class SearchLoop:
    """Runs ``session`` over ``executor`` until ``num_trials`` trials have finished (``None``: until the
    algorithm stops proposing)."""

    def __init__(self, session: SearchSession, executor: Executor, num_trials: Optional[int],
                 progress: bool = True):
        self.session, self.executor, self.num_trials, self.progress = session, executor, num_trials, progress

    def report(self, trial: ActiveTrial, step: int, metrics: dict) -> bool:
        """An intermediate report of a running trial; True tells the trial to stop early."""
        return self.session.report(trial, step, metrics)

    def run(self, evaluate: Callable[[Any], Any]) -> None:
        session, executor = self.session, self.executor
        bar = ProgressBar(session, self.num_trials) if self.progress else None
        try:
            with executor:
                executor.start(evaluate, self.report)
                # an algorithm may bound its proposals in flight (e.g. 1: it needs each feedback first)
                max_pending = getattr(session.algorithm, "max_pending", None)
                exhausted = False
                while True:
                    session.sync()   # trials finished by other processes on the same study count too
                    in_flight = executor.in_flight
                    slots = executor.capacity - in_flight
                    if max_pending is not None:
                        slots = min(slots, max_pending - in_flight)
                    trials, stopped = propose(session, max(0, slots), in_flight, self.num_trials)
                    exhausted = stopped or (exhausted and not trials)
                    for trial in trials:
                        executor.submit(trial)
                    if executor.in_flight == 0:
                        if exhausted or (self.num_trials is not None and session.num_finished >= self.num_trials):
                            break
                        if bar is not None:
                            bar.update()
                        continue   # e.g. every proposal failed to materialise: propose again
                    for trial, outcome in executor.wait():
                        record(session, trial, outcome)
                    if bar is not None:
                        bar.update()
        except KeyboardInterrupt as error:
            session.interrupt_in_flight("interrupted (KeyboardInterrupt) while it ran")
            error.add_note(interrupted_note(session))
            raise
        except BaseException as error:
            session.interrupt_in_flight(f"the search stopped ({type(error).__name__}) while this trial ran")
            raise
        finally:
            session.close()
            if bar is not None:
                bar.close()
                print_failures(session)


def print_failures(session: SearchSession, file=None) -> None:
    """One line naming the most common error among the trials that failed in this run, if any did."""
    failures = session.failures_this_run
    common = most_common_error(failures)
    if common is not None:
        headline, count = common
        print(f"symnas: {len(failures)} trial(s) failed in this run of study {session.name!r}; most common "
              f"error ({count}x): {headline}", file=file or sys.stderr)
