"""Regularized (aging) evolution."""
import collections
import random

import pyglove as pg

from symnas.algorithms._decisions import ChoiceSlot, DecisionAlgorithm
from symnas.constraints import total_violation, violations_of

__all__ = ["RegularizedEvolution"]

_MUTATION_TRIES, _MAX_TRIES = 30, 100
_INACTIVE = -1.5e308     # stands for an inactive decision (None) in a point's key


def _key(values) -> int:
    """A point's key, the same in every process (tuple hashes of ints and floats are not salted;
    None's hash is, before Python 3.12)."""
    return hash(tuple(_INACTIVE if v is None else v for v in values))


@pg.members([
    ("population_size", pg.typing.Int(min_value=2, default=10),
     "Number of most recent trials kept alive."),
    ("tournament_size", pg.typing.Int(min_value=1, default=3), "Population members drawn per tournament."),
    ("num_mutations", pg.typing.Int(min_value=1, default=1), "Decisions changed per child."),
    ("float_mutation_std", pg.typing.Float(min_value=0.0, default=0.1),
     "Std of the Gaussian step of a float mutation, in the float's scaled [0, 1] unit."),
    ("avoid_duplicates", pg.typing.Bool(default=True),
     "If True, re-mutate (up to 100 tries) rather than propose an assignment proposed before."),
    ("seed", pg.typing.Int().noneable(), "Random seed; None draws from the OS."),
])
class RegularizedEvolution(DecisionAlgorithm):
    """Regularized evolution (Real et al. 2019): aging population, tournament selection, mutation.

    The first ``population_size`` proposals are random (after any queued warm-start points, which
    join the population like every evaluated point). Afterwards the best of ``tournament_size``
    random members of the population (the ``population_size`` most recent feedbacks) is copied and
    ``num_mutations`` of its active decisions are resampled: a choice takes another candidate (its
    conditional sub-decisions are drawn afresh), a float moves by a Gaussian step in its scale.
    With ``avoid_duplicates`` (default) a child already tried is mutated again (and after 30
    repeats a random unseen point is proposed instead), which saves evaluations when the objective
    is deterministic (e.g. a tabular benchmark). What was tried is every point proposed or fed
    back: the history of a resumed study and the trials of other processes on it included.
    Under constraints, tournaments are feasibility-first (Deb 2000): a feasible member beats an
    infeasible one, two infeasible ones are ranked by total violation, two feasible ones by reward.

    Example::

        import pyglove as pg, symnas as sn
        space = pg.List([pg.oneof(range(5)) for _ in range(6)])
        algo = sn.algorithms.RegularizedEvolution(population_size=10, tournament_size=3, seed=1)
        for value, feedback in pg.sample(space, algo, num_examples=50):
            feedback(float(sum(value)))
    """

    def _on_bound(self):
        super()._on_bound()
        if self.tournament_size > self.population_size:
            raise ValueError(f"tournament_size ({self.tournament_size}) must not exceed "
                             f"population_size ({self.population_size}).")

    def _init_state(self):
        self._rng = random.Random(self.seed)
        self._population = collections.deque(maxlen=self.population_size)
        self._seen = set()

    def _random_choice(self, slot, banned):
        return self._space.uniform_choice(slot, banned, self._rng)

    def _random_float(self, dec):
        return dec.from_unit(self._rng.random())

    def _propose_values(self, record: bool = True, build: bool = True):
        space = self._space
        for attempt in range(_MAX_TRIES):
            if len(self._population) < self.population_size or attempt >= _MUTATION_TRIES:
                # Also the way out when every mutation tried is a repeat (e.g. all neighbours
                # of the best were seen): a new random point costs less than a re-evaluation.
                values = self._random_values()
            else:
                values, _ = space.assemble(self._mutate(self._select()), self._random_choice,
                                           self._random_float, build=False)
            key = _key(values)
            if not self.avoid_duplicates or key not in self._seen:
                break
        if record:
            self._seen.add(key)
        return space.assemble(values) if build else (values, None)

    def _random_values(self) -> list:
        """A random point (the population's first members, and the way out of repeats)."""
        return self._space.sample(self._random_choice, self._random_float, build=False)[0]

    def _replay(self, trial_id, dna, reward):
        # The proposal is drawn again only to advance the random state as the original did; what
        # was tried is the history's point, which is never proposed again.
        del trial_id
        self._propose_values(record=False, build=False)
        self._feedback_values(self._space.decode(dna), reward, violations_of(dna))

    def _feedback(self, dna, reward):
        self._feedback_values(self._values_of(dna), reward, violations_of(dna))

    def _feedback_values(self, values, reward, violations=None):
        self._seen.add(_key(values))   # also a point of another process, a retried or a queued one
        if reward is not None:
            self._learn_constrained(values, self._check_reward(reward), total_violation(violations))

    def _state(self):
        return {**super()._state(), "population": [[values, reward, violation]
                                                   for values, reward, violation in self._population],
                "seen": sorted(self._seen)}

    def _load_state(self, state):
        super()._load_state(state)
        self._population.clear()
        self._population.extend((list(member[0]), float(member[1]), float(member[2]) if len(member) > 2 else 0.0)
                                for member in state["population"])
        self._seen = {int(key) for key in state["seen"]}

    def _select(self) -> list:
        members = self._rng.sample(range(len(self._population)), self.tournament_size)
        best = max(members, key=lambda i: _rank(self._population[i]))
        return self._population[best][0]

    def _mutate(self, parent: list) -> list:
        return self._mutate_within(parent, None)

    def _mutate_within(self, parent: list, indices) -> list:
        """``parent`` with ``num_mutations`` random decisions resampled, drawn among the active ones whose
        index is in ``indices`` (all active ones when None): a choice takes another candidate, a float a
        Gaussian step in its unit scale, reflected at the bounds."""
        values = list(parent)
        rng = self._rng
        for _ in range(self.num_mutations):
            active = [d for d in self._space.decisions
                      if values[d.index] is not None and (indices is None or d.index in indices)]
            if not active:
                continue
            dec = active[int(rng.random() * len(active))]
            current = values[dec.index]
            if isinstance(dec, ChoiceSlot):
                banned = {values[i] for i in dec.distinct_from} | {current}
                banned.update(values[s.index] for s in self._group_peers(dec))
                if len(banned) >= dec.num_candidates:
                    continue
                values[dec.index] = self._space.uniform_choice(dec, banned, rng)
            else:
                u = dec.to_unit(current) + rng.gauss(0.0, self.float_mutation_std)
                u = -u if u < 0.0 else (2.0 - u if u > 1.0 else u)   # reflect at the bounds
                values[dec.index] = dec.from_unit(u)
        return values

    def _group_peers(self, slot):
        # Later slots of a distinct manyof also hold picks the mutated slot must avoid.
        return [d for d in self._space.slots if slot.index in d.distinct_from]

    def _learn(self, values, reward):
        self._learn_constrained(values, reward, 0.0)

    def _learn_constrained(self, values, reward, violation):
        self._population.append((values, reward, violation))


def _rank(member):
    """Tournament order: feasible first, then smaller total violation, then larger reward."""
    _, reward, violation = member
    return (violation <= 0.0, -violation, reward)
