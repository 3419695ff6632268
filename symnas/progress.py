"""What a running search shows: a progress bar (tqdm, notebook-aware).

It counts finished trials and shows the best objective so far and how many trials failed. It reads
the session it is given and imports nothing of symnas, so every layer may use it.

Example::

    bar = ProgressBar(session, num_trials=50)
    ...                     # after each recorded trial
    bar.update()
    bar.close()
"""
from __future__ import annotations

import time
from typing import Any, Optional

_POSTFIX_INTERVAL_S = 0.25


class ProgressBar:
    """A tqdm bar over ``session.num_finished`` (``session``: a ``SearchSession``)."""

    def __init__(self, session: Any, num_trials: Optional[int]):
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
        self.session = session
        self._bar = tqdm(total=num_trials, initial=session.num_finished, desc=session.name, unit="trial",
                         dynamic_ncols=True, mininterval=0.25)
        self._postfix_time = 0.0

    def update(self, force: bool = False) -> None:
        session, bar = self.session, self._bar
        bar.update(session.num_finished - bar.n)
        now = time.monotonic()
        if not force and now - self._postfix_time <= _POSTFIX_INTERVAL_S:
            return
        parts = []
        if session.best_reward is not None:
            objective = session.objectives[0]
            parts.append(f"best {objective.name}={objective.sign * session.best_reward:.6g}")
        if session.num_failed:
            parts.append(f"failed {session.num_failed}")
        if parts:
            bar.set_postfix_str(", ".join(parts), refresh=False)
        self._postfix_time = now

    def close(self) -> None:
        self.update(force=True)
        self._bar.close()
