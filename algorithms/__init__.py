"""Search algorithms, one per module; each is a ``pg.DNAGenerator`` that works with ``pg.sample``.

Example::

    import pyglove as pg, symnas as sn
    space = pg.Dict(op=pg.oneof(['conv', 'pool']), lr=pg.floatv(1e-5, 1e-1, scale='log'))
    algo = sn.algorithms.RegularizedEvolution(seed=0)      # or Random(), Reinforce(), Bayesian()
    for value, feedback in pg.sample(space, algo, num_examples=20):
        feedback(1.0 if value.op == 'conv' else 0.0)
"""
from symnas.algorithms.random import Random
from symnas.algorithms.evolution import RegularizedEvolution
from symnas.algorithms.alternating_evolution import AlternatingEvolution
from symnas.algorithms.reinforce import Reinforce
from symnas.algorithms.bayesian import Bayesian
from symnas.algorithms.nsga2 import NSGA2
from symnas.algorithms.canvas import Canvas
from symnas.algorithms.kernel_evolution import KernelEvolution

__all__ = ["Random", "RegularizedEvolution", "AlternatingEvolution", "Reinforce", "Bayesian", "NSGA2", "Canvas", "KernelEvolution"]
