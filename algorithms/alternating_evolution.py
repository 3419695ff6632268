"""Regularized evolution whose mutations touch one part of the space at a time, the parts taking turns."""
import pyglove as pg

from symnas.algorithms.evolution import RegularizedEvolution

__all__ = ["AlternatingEvolution"]


@pg.members([
    ("parts", pg.typing.List(pg.typing.Str(), min_size=1, default=["network", "accelerator"]),
     "Name prefixes of the decision points of each part (a decision's name is its path in the space); "
     "decisions no prefix matches form one more part."),
    ("phase_length", pg.typing.Int(min_value=1, default=50),
     "Children bred per phase; each phase mutates one part only, the parts in turn."),
])
class AlternatingEvolution(RegularizedEvolution):
    """Regularized evolution for a product space (a network x an accelerator): one population and one
    tournament, but in each phase of ``phase_length`` children the mutations change decisions of one
    part only (``parts``, in turn), as NAHAS and AutoHAS alternate between their sub-spaces. A phase
    explores one part around the population's best values of the others, instead of every child mixing
    a change of either part into a comparison dominated by the other.

    On a space where only one part has decisions it proposes exactly what ``RegularizedEvolution`` with
    the same seed proposes (the separate searches of a comparison can then run the same algorithm).

    Example::

        import pyglove as pg, symnas as sn
        space = pg.Dict(network=pg.List([pg.oneof(range(4)) for _ in range(6)]),
                        accelerator=pg.List([pg.oneof(range(4)) for _ in range(3)]))
        algo = sn.algorithms.AlternatingEvolution(population_size=10, tournament_size=3, phase_length=20, seed=1)
        for value, feedback in pg.sample(space, algo, num_examples=80):
            feedback(float(sum(value.network) * sum(value.accelerator)))
    """

    def _init_state(self):
        super()._init_state()
        groups = {prefix: [] for prefix in self.parts}
        rest = []
        for dec in self._space.decisions:
            name = str(dec.name)
            prefix = next((p for p in self.parts if name == p or name.startswith((p + ".", p + "["))), None)
            (groups[prefix] if prefix is not None else rest).append(dec.index)
        self._parts = [set(indices) for indices in list(groups.values()) + [rest] if indices]
        self._children = 0

    def _mutate(self, parent: list) -> list:
        part = self._parts[(self._children // self.phase_length) % len(self._parts)]
        self._children += 1
        return self._mutate_within(parent, part if len(self._parts) > 1 else None)

    def _state(self):
        return {**super()._state(), "children": self._children}

    def _load_state(self, state):
        super()._load_state(state)
        self._children = int(state.get("children", 0))

