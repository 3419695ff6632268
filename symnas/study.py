"""Study: the recorded trials of one search, as a table, a best object, a Pareto front and a plot.

Example::

    study = sn.Study.load("runs.db")            # the only (or most recent) study in the file
    study.trials                                # pandas DataFrame, one row per trial
    study.best                                  # the best trial's concrete symbolic object
    study.pareto_front()                        # with several objectives (feasible trials only)
    study.infeasible                            # completed trials that missed a constraint
    study.enqueue({"lr": 1e-3})                 # evaluated first by the next sn.search of this study
    study.plot()
"""
from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import pyglove as pg

from symnas import constraints as constraints_lib
from symnas.objectives import Objective
from symnas.storage import Storage, open_storage
from symnas.safe_json import dna_from_json, from_json
from symnas.trial import COMPLETED, TrialRecord, most_common_error


class Study:
    """Read access to one study in a storage (a file path is opened read-only)."""

    def __init__(self, storage: Union[str, os.PathLike, Storage], name: str):
        self.storage = open_storage(storage, read_only=True)
        self.name = name
        info = self.storage.study_info(name)
        self.info = info
        self.objectives: Tuple[Objective, ...] = tuple(Objective(**o) for o in info["objectives"])

    @classmethod
    def load(cls, storage: Union[str, os.PathLike, Storage], name: Optional[str] = None) -> "Study":
        """Opens a study (a file read-only: nothing is written to it, and a file that is not a symnas
        study is refused untouched); ``name`` may be omitted when the storage holds a single study
        (else the newest is opened)."""
        if isinstance(storage, (str, os.PathLike)) and not os.path.exists(storage):
            raise FileNotFoundError(f"No study file at {os.fspath(storage)!r}.")
        storage = open_storage(storage, read_only=True)
        names = storage.study_names()
        if not names:
            raise ValueError("The storage holds no study.")
        if name is None:
            name = names[-1]
        elif name not in names:
            raise KeyError(f"No study named {name!r}; studies here: {names}.")
        return cls(storage, name)

    # -- records -----------------------------------------------------------------------------
    @property
    def records(self) -> List[TrialRecord]:
        return self.storage.trials(self.name)

    @property
    def completed(self) -> List[TrialRecord]:
        return [r for r in self.records if r.status == COMPLETED]

    @property
    def feasible(self) -> List[TrialRecord]:
        """The completed trials that met the study's constraints (all completed ones if it has none)."""
        return [r for r in self.completed if constraints_lib.metrics_feasible(r.metrics)]

    @property
    def infeasible(self) -> List[TrialRecord]:
        """The completed trials that missed a constraint (metric ``feasible`` is False)."""
        return [r for r in self.completed if not constraints_lib.metrics_feasible(r.metrics)]

    @property
    def constraints(self) -> Any:
        """The constraints the study was searched under, as recorded (None if it has none)."""
        return self.info.get("constraints")

    @property
    def queued(self) -> List[pg.DNA]:
        """The points waiting in the study's queue (evaluated first by the next search of it)."""
        return [dna_from_json(text) for text in self.storage.queued(self.name)]

    def enqueue(self, point: Any, skip_if_exists: bool = True) -> Optional[pg.DNA]:
        """Queues a known point (an object of the space, a ``pg.DNA`` or a dict of decision values):
        the next ``sn.search`` of this study evaluates it before the algorithm proposes, and the
        algorithm learns from it. Returns its DNA, or None when ``skip_if_exists`` found it already
        queued or evaluated. A point outside the space raises ValueError.

        Example::

            study = sn.Study.load("runs.db")
            study.enqueue(pg.Dict(x=0.5, n=2))
            sn.search(space, evaluate, algorithm, num_trials=len(study) + 1, storage="runs.db",
                      name=study.name)
        """
        from symnas import warm_start  # pylint: disable=import-outside-toplevel
        dna_spec = from_json(self.info["dna_spec"], source=f"study {self.name!r}'s search space")
        try:
            space = from_json(self.info["space"], source=f"study {self.name!r}'s search space")
        except ValueError:
            space = None   # a space of classes not loaded here: DNAs and decision dicts still work
        if isinstance(space, pg.DNASpec):
            space = None   # a study of pg.sample: its space is the DNASpec
        storage = self.storage
        if getattr(storage, "read_only", False):   # a study opened for reading: queue through a writer
            storage = open_storage(storage.path)
        queued = warm_start.enqueue(storage, self.name, [point], dna_spec, space, skip_if_exists=skip_if_exists)
        return queued[0] if queued else None

    @property
    def is_multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def trials(self):
        """A pandas DataFrame: one row per trial with id, status, one column per metric, timings, error."""
        import pandas as pd  # pylint: disable=import-outside-toplevel
        rows = []
        for record in self.records:
            row = {"id": record.id, "status": record.status}
            for key, value in record.metrics.items():
                row[key] = value
            row.update(dna=_dna_text(record.dna), wall_time_s=record.wall_time_s, started_at=record.started_at, error=record.error,
                       worker=record.worker)
            rows.append(row)
        frame = pd.DataFrame(rows)
        if not frame.empty:
            frame = frame.set_index("id")
        return frame

    def __len__(self) -> int:
        return self.storage.num_trials(self.name)

    # -- best ----------------------------------------------------------------------------------
    @property
    def best_trial(self) -> TrialRecord:
        """The feasible completed trial with the best objective (single-objective studies only)."""
        if self.is_multi_objective:
            raise ValueError(
                f"Study {self.name!r} has {len(self.objectives)} objectives "
                f"{[o.name for o in self.objectives]}: there is no single best trial; use pareto_front().")
        if self.constraints is not None:   # the best among the feasible trials
            feasible = self.feasible
            if not feasible and self.completed:
                raise ValueError(f"Study {self.name!r} has no feasible trial: all {len(self.completed)} completed "
                                 f"trials missed its constraints {self.constraints}.")
            best = max(feasible, key=lambda r: r.reward) if feasible else None
        else:
            best = self.storage.best_trial(self.name)    # the largest reward = sign * objective
        if best is None:
            raise ValueError(f"Study {self.name!r} has no completed trial yet.")
        return best

    @property
    def best(self) -> Any:
        """The best trial's concrete object (or its DNA when the study recorded no objects)."""
        record = self.best_trial
        return record.to_object() if record.object is not None else record.to_dna()

    def pareto_front(self) -> List[TrialRecord]:
        """The feasible completed trials that no other feasible trial dominates on all objectives."""
        completed = self.feasible
        if not completed:
            return []
        signed = np.array([[o.sign * r.metrics[o.name] for o in self.objectives] for r in completed])
        front = []
        for i, point in enumerate(signed):
            dominated = np.any(np.all(signed >= point, axis=1) & np.any(signed > point, axis=1))
            if not dominated:
                front.append(completed[i])
        return front

    def pareto_table(self):
        """The Pareto front as a DataFrame (one row per trial, one column per objective)."""
        import pandas as pd  # pylint: disable=import-outside-toplevel
        rows = [{"id": r.id, **{o.name: r.metrics[o.name] for o in self.objectives}, "dna": _dna_text(r.dna)}
                for r in self.pareto_front()]
        return pd.DataFrame(rows).set_index("id") if rows else pd.DataFrame()

    # -- plots ---------------------------------------------------------------------------------
    def plot(self, ax=None):
        """The search curve (objective per trial and best so far) or, with two or more objectives,
        the trials and the Pareto front over the first two. Returns the matplotlib Figure."""
        import matplotlib  # pylint: disable=import-outside-toplevel
        if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend():
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4))
        else:
            fig = ax.figure
        completed = self.completed
        if self.is_multi_objective:
            x_obj, y_obj = self.objectives[:2]
            ax.scatter([r.metrics[x_obj.name] for r in completed], [r.metrics[y_obj.name] for r in completed],
                       s=12, alpha=0.5, label="trials")
            front = sorted(self.pareto_front(), key=lambda r: r.metrics[x_obj.name])
            ax.plot([r.metrics[x_obj.name] for r in front], [r.metrics[y_obj.name] for r in front],
                    "o-", color="C3", label="Pareto front")
            ax.set_xlabel(f"{x_obj.name} ({x_obj.direction})")
            ax.set_ylabel(f"{y_obj.name} ({y_obj.direction})")
        else:
            objective = self.objectives[0]
            ids = [r.id for r in completed]
            values = np.array([r.metrics[objective.name] for r in completed], dtype=float)
            best = (np.maximum.accumulate(values) if objective.direction == "max"
                    else np.minimum.accumulate(values)) if len(values) else values
            ax.scatter(ids, values, s=12, alpha=0.5, label="trial")
            ax.step(ids, best, where="post", color="C3", label="best so far")
            ax.set_xlabel("trial")
            ax.set_ylabel(objective.name)
        ax.set_title(self.name)
        ax.legend()
        fig.tight_layout()
        return fig

    def most_common_error(self) -> Optional[Tuple[str, int]]:
        """(the error's last line, how many failed trials had it), or None when none failed."""
        return most_common_error(self.storage.errors(self.name))

    def summary(self) -> str:
        records = self.records
        counts = {}
        for record in records:
            counts[record.status] = counts.get(record.status, 0) + 1
        text = f"Study {self.name!r}: {len(records)} trials " + ", ".join(f"{v} {k}" for k, v in counts.items())
        infeasible = self.infeasible
        if infeasible:
            text += f" ({len(infeasible)} infeasible)"
        common = self.most_common_error()
        if common is not None:
            text += f"; most common error ({common[1]}x): {common[0]}"
        if self.feasible:
            if self.is_multi_objective:
                text += f"; Pareto front of {len(self.pareto_front())} trials"
            else:
                objective = self.objectives[0]
                best = self.best_trial
                text += f"; best {objective.name}={best.metrics[objective.name]:.6g} (trial {best.id})"
        return text

    def __repr__(self) -> str:
        return f"<{self.summary()}>"

    def _repr_html_(self) -> str:
        return f"<p>{self.summary()}</p>" + self.trials.tail(20).to_html()


def _dna_text(dna_json: str) -> str:
    try:
        return json.dumps(json.loads(dna_json)["value"], separators=(",", ":"))
    except (KeyError, ValueError, TypeError):
        return dna_json
