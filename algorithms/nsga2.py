"""Multi-objective search: NSGA-II (Optuna's sampler) over the DNASpec's decisions."""
import pyglove as pg

from symnas.algorithms._decisions import check_reward
from symnas.algorithms.bayesian import OptunaAlgorithm

__all__ = ["NSGA2"]


@pg.members([
    ("num_objectives", pg.typing.Int(min_value=1).noneable(),
     "Number of objectives (all maximised); None takes it from the first feedback."),
    ("population_size", pg.typing.Int(min_value=2, default=50), "Individuals per generation."),
    ("crossover_prob", pg.typing.Float(min_value=0.0, max_value=1.0, default=0.9),
     "Probability of crossover when a child is made."),
    ("mutation_prob", pg.typing.Float(min_value=0.0, max_value=1.0).noneable(),
     "Per-decision mutation probability; None means 1 / number of decisions."),
    ("seed", pg.typing.Int().noneable(), "Random seed of the sampler."),
])
class NSGA2(OptunaAlgorithm):
    """NSGA-II (Deb et al. 2002): non-dominated sorting and crowding distance, every objective maximised.

    Feedback is a tuple with one value per objective (negate an objective to minimise it).

    Example::

        import pyglove as pg, symnas as sn
        space = pg.Dict(width=pg.oneof([8, 16, 32, 64]), depth=pg.oneof([1, 2, 3]))
        algo = sn.algorithms.NSGA2(num_objectives=2, seed=0)
        for value, feedback in pg.sample(space, algo, num_examples=30,
                                         metrics_to_optimize=['accuracy', 'neg_cost']):
            feedback(metrics={'accuracy': value.width * value.depth, 'neg_cost': -value.width})
    """

    @property
    def multi_objective(self) -> bool:
        return True

    def _init_state(self):
        self._inferred_objectives = None
        super()._init_state()

    def _directions(self):
        if self._objectives() is None:
            return None
        return ["maximize"] * self._objectives()

    def _objectives(self):
        return self.num_objectives or self._inferred_objectives

    def _make_sampler(self):
        return self._optuna.samplers.NSGAIISampler(
            population_size=self.population_size, crossover_prob=self.crossover_prob,
            mutation_prob=self.mutation_prob, seed=self.seed)

    def _check_reward(self, reward):
        if self._objectives() is None:
            rewards = reward if isinstance(reward, (tuple, list)) else (reward,)
            self._inferred_objectives = len(rewards)
        return check_reward(reward, self._objectives())
