"""Regularized (aging) evolution."""
import collections
import random

import pyglove as pg

from symnas.algorithms._decisions import ChoiceSlot, DecisionAlgorithm

__all__ = ["RegularizedEvolution"]

_MUTATION_TRIES, _MAX_TRIES = 30, 100


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
    With ``avoid_duplicates`` (default) a child already proposed is mutated again (and after 30
    repeats a random unseen point is proposed instead), which saves evaluations when the objective
    is deterministic (e.g. a tabular benchmark). Under constraints, tournaments are
    feasibility-first (Deb 2000): a feasible member beats an infeasible one, two infeasible ones
    are ranked by total violation, two feasible ones by reward.

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

    def _propose_values(self):
        space = self._space
        for attempt in range(_MAX_TRIES):
            if len(self._population) < self.population_size or attempt >= _MUTATION_TRIES:
                # Also the way out when every mutation tried is a repeat (e.g. all neighbours
                # of the best were seen): a new random point costs less than a re-evaluation.
                values, _ = space.sample(self._random_choice, self._random_float, build=False)
            else:
                values, _ = space.assemble(self._mutate(self._select()), self._random_choice,
                                           self._random_float, build=False)
            key = tuple(values)
            if not self.avoid_duplicates or key not in self._seen:
                break
        self._seen.add(key)
        return space.assemble(values)

    def _select(self) -> list:
        members = self._rng.sample(range(len(self._population)), self.tournament_size)
        best = max(members, key=lambda i: _rank(self._population[i]))
        return self._population[best][0]

    def _mutate(self, parent: list) -> list:
        values = list(parent)
        rng = self._rng
        for _ in range(self.num_mutations):
            active = [d for d in self._space.decisions if values[d.index] is not None]
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
        self._seen.add(tuple(values))   # a queued point is not proposed again


def _rank(member):
    """Tournament order: feasible first, then smaller total violation, then larger reward."""
    _, reward, violation = member
    return (violation <= 0.0, -violation, reward)
