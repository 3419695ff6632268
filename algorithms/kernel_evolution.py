"""Regularized evolution over Canvas kernel designs: sampled population, mutations of what a kernel uses."""
from symnas.algorithms.canvas import Canvas, find_designs
from symnas.algorithms.evolution import RegularizedEvolution

__all__ = ["KernelEvolution"]


class KernelEvolution(RegularizedEvolution):
    """Regularized evolution for a ``sn.kas.KernelSpace``: the population's first members are drawn by
    Canvas's sampler (valid, distinct, solved kernels, instead of uniform decisions that rarely close),
    and a child's mutations change only decisions its kernels use: the primitive count, width limit, G,
    and the kind and pick of the steps below the primitive count (plus every decision outside the kernel
    designs). A kernel of 5 primitives in a space of up to 25 otherwise leaves most mutations without
    effect. Queued points (``sn.search(..., initial=[space.encode(kernel)])``) join the population first,
    so the search can start from hand-written families.

    Example::

        import pyglove as pg, symnas as sn
        space = sn.kas.KernelSpace(targets=sn.kas.conv_targets(sn.nn.resnet18()),
                                   budget=sn.kas.Budget(flops=0.25), max_primitives=10)
        algo = sn.algorithms.KernelEvolution(population_size=4, tournament_size=2, seed=0)
        for design, feedback in pg.sample(space.search_space(), algo, num_examples=8):
            feedback(-design.decode().flops_ratio)
    """

    def _init_state(self):
        super()._init_state()
        self._designs = find_designs(self._space)
        if not self._designs:
            raise ValueError("KernelEvolution evolves kernel designs: the search space holds no "
                             "sn.kas.KernelSpace(...).search_space()")
        self._sampler = Canvas(seed=None if self.seed is None else self.seed + 1)
        self._sampler.setup(self.dna_spec)
        in_designs = set()
        for d in self._designs:
            in_designs.update([d["num_primitives"], d["max_width"], d["groups"]])
            in_designs.update(d["kind"].values())
            in_designs.update(d["pick"].values())
        self._outside = {dec.index for dec in self._space.decisions} - in_designs

    def _random_values(self) -> list:
        values = self._sampler._draw_values()  # pylint: disable=protected-access
        return self._space.assemble(values, self._random_choice, self._random_float, build=False)[0]

    def _mutate(self, parent: list) -> list:
        used = set(self._outside)
        for d in self._designs:
            n = parent[d["num_primitives"]] + d["space"].min_primitives
            used.update([d["num_primitives"], d["max_width"], d["groups"]])
            used.update(d["kind"][t] for t in range(n))
            used.update(d["pick"][t] for t in range(n))
        return self._mutate_within(parent, used)
