"""Scale-aware random search."""
import random

import pyglove as pg

from symnas.algorithms._decisions import DecisionAlgorithm

__all__ = ["Random"]


@pg.members([
    ("seed", pg.typing.Int().noneable(), "Random seed; None draws from the OS."),
])
class Random(DecisionAlgorithm):
    """Uniform random search that honours ``floatv(scale=...)``.

    A ``scale='log'`` float is uniform in log space (PyGlove's ``pg.geno.Random`` ignores the scale).

    Example::

        import pyglove as pg, symnas as sn
        space = pg.Dict(op=pg.oneof(['conv', 'pool']), lr=pg.floatv(1e-5, 1e-1, scale='log'))
        for value, feedback in pg.sample(space, sn.algorithms.Random(seed=0), num_examples=5):
            feedback(1.0)
    """

    def _init_state(self):
        self._rng = random.Random(self.seed)

    def _propose_values(self):
        rng = self._rng
        space = self._space
        return space.sample(lambda slot, banned: space.uniform_choice(slot, banned, rng),
                            lambda dec: dec.from_unit(rng.random()))
