"""Decision points of a ``pg.DNASpec`` as a flat, fast structure shared by all algorithms.

A DNASpec is compiled once into a tree of :class:`ChoiceSlot` (one categorical decision: a ``oneof``
or one slot of a ``manyof``), :class:`ChoiceGroup` (the slots of a ``manyof``) and
:class:`FloatDecision` nodes. Every slot and float gets an ``index`` into a flat list, so an
assignment of the whole DNA is a plain Python list ``values`` (``None`` where a conditional
decision is inactive). Algorithms work on these lists; :meth:`DecisionSpace.sample` walks the
tree with the algorithm's callbacks and returns both the list and the ``pg.DNA``.

Building a ``pg.DNA`` through its symbolic constructor costs milliseconds per DNA, which would
dominate a search on a tabular benchmark, so ``symnas.pyglove_fastpaths.make_dna`` assembles the
same object directly (checked against ``pg.DNA`` at first use; it falls back to the constructor if
they differ).

Example::

    import random, pyglove as pg
    from symnas.algorithms._decisions import DecisionSpace
    space = DecisionSpace(pg.dna_spec(pg.Dict(x=pg.oneof([1, 2]), lr=pg.floatv(1e-4, 1e-1, scale='log'))))
    rng = random.Random(0)
    values, dna = space.sample(lambda slot, banned: space.uniform_choice(slot, banned, rng),
                               lambda dec: dec.from_unit(rng.random()))
    assert space.decode(dna) == values
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence, Tuple

import pyglove as pg

from symnas.constraints import total_violation, violations_of
from symnas.pyglove_fastpaths import DNANode, dna_children, dna_from_compact, dna_value, make_dna

__all__ = ["ChoiceSlot", "ChoiceGroup", "FloatDecision", "DecisionSpace", "DecisionAlgorithm",
           "make_dna", "dna_from_compact", "check_reward", "rng_state", "set_rng_state"]


class FloatDecision:
    """A ``floatv`` decision; ``to_unit``/``from_unit`` map it to [0, 1] in its scale."""

    __slots__ = ("index", "spec", "name", "low", "high", "scale", "_log_low", "_log_span")

    def __init__(self, index: int, spec: pg.geno.Float, name: str):
        self.index, self.spec, self.name = index, spec, name
        self.low, self.high = float(spec.min_value), float(spec.max_value)
        self.scale = spec.scale or "linear"
        if not self.low < self.high:
            raise ValueError(f"floatv {name!r}: min_value ({self.low}) must be smaller than "
                             f"max_value ({self.high}).")
        if self.scale in ("log", "rlog"):
            if self.low <= 0:
                raise ValueError(f"floatv {name!r}: scale={self.scale!r} needs a positive "
                                 f"min_value, got {self.low}.")
            self._log_low = math.log(self.low)
            self._log_span = math.log(self.high) - self._log_low
        else:
            self._log_low = self._log_span = 0.0

    def from_unit(self, u: float) -> float:
        u = 0.0 if u < 0.0 else (1.0 if u > 1.0 else u)
        if self.scale == "log":
            x = math.exp(self._log_low + u * self._log_span)
        elif self.scale == "rlog":
            # PyGlove's definition: u = 1 - log((max + min - x) / min) / log(max / min).
            x = self.high + self.low - math.exp(self._log_low + (1.0 - u) * self._log_span)
        else:
            x = self.low + u * (self.high - self.low)
        return min(max(x, self.low), self.high)

    def to_unit(self, x: float) -> float:
        if self.scale == "log":
            u = (math.log(x) - self._log_low) / self._log_span
        elif self.scale == "rlog":
            u = 1.0 - (math.log(self.high + self.low - x) - self._log_low) / self._log_span
        else:
            u = (x - self.low) / (self.high - self.low)
        return min(max(u, 0.0), 1.0)


class ChoiceSlot:
    """One categorical decision; ``children[c]`` are the decisions that exist when candidate c is chosen."""

    __slots__ = ("index", "spec", "name", "num_candidates", "children", "literals", "distinct_from")

    def __init__(self, index: int, spec: pg.geno.Choices, name: str):
        self.index, self.spec, self.name = index, spec, name
        # Indices of the earlier slots of a distinct manyof: their picks are banned for this slot.
        self.distinct_from: List[int] = []
        self.num_candidates = len(spec.candidates)
        if self.num_candidates == 0:
            raise ValueError(f"oneof/manyof {name!r} has no candidates.")
        self.children: List[list] = []
        self.literals = list(spec.literal_values) if spec.literal_values else \
            [str(i) for i in range(self.num_candidates)]


class ChoiceGroup:
    """The slots of a ``manyof`` (num_choices > 1)."""

    __slots__ = ("spec", "name", "slots", "distinct", "sorted")

    def __init__(self, spec: pg.geno.Choices, name: str, slots: List[ChoiceSlot]):
        self.spec, self.name, self.slots = spec, name, slots
        self.distinct, self.sorted = bool(spec.distinct), bool(spec.sorted)
        if self.distinct and len(slots) > slots[0].num_candidates:
            raise ValueError(f"manyof {name!r}: {len(slots)} distinct choices from only "
                             f"{slots[0].num_candidates} candidates.")


def _space_node(nodes: List[DNANode]) -> Optional[DNANode]:
    if not nodes:
        return None
    if len(nodes) == 1:
        return nodes[0]
    return DNANode(None, nodes)


class DecisionSpace:
    """A compiled DNASpec: flat decisions plus the conditional tree that links them."""

    def __init__(self, dna_spec: pg.DNASpec):
        if not isinstance(dna_spec, pg.DNASpec):
            raise TypeError(f"expected a pg.DNASpec, got {type(dna_spec).__name__}.")
        self.dna_spec = dna_spec
        self.decisions: List[Any] = []     # ChoiceSlot | FloatDecision, by index
        self.root = self._compile_space(dna_spec)
        if not self.decisions:
            raise ValueError("the search space has no decision points (no oneof/manyof/floatv).")
        self.num_decisions = len(self.decisions)
        self.slots = [d for d in self.decisions if isinstance(d, ChoiceSlot)]
        self.floats = [d for d in self.decisions if isinstance(d, FloatDecision)]

    # ---- compilation -------------------------------------------------------------------------
    def _name(self, spec) -> str:
        name = str(spec.id)
        return name if name else f"decision{len(self.decisions)}"

    def _compile_space(self, space_spec) -> list:
        return [self._compile_element(e) for e in space_spec.elements]

    def _compile_element(self, spec):
        if isinstance(spec, pg.geno.Float):
            dec = FloatDecision(len(self.decisions), spec, self._name(spec))
            self.decisions.append(dec)
            return dec
        if isinstance(spec, pg.geno.Choices):
            if spec.num_choices == 1:
                return self._compile_slot(spec)
            name = str(spec.id) or "manyof"
            if not spec.candidates:
                raise ValueError(f"manyof {name!r} has no candidates.")
            slots = [self._compile_slot(spec.subchoice(i)) for i in range(spec.num_choices)]
            group = ChoiceGroup(spec, name, slots)
            if group.distinct:
                for i, slot in enumerate(slots):
                    slot.distinct_from = [s.index for s in slots[:i]]
            return group
        if isinstance(spec, pg.geno.Space):
            raise TypeError(f"unexpected nested space {spec.id!r}")
        raise TypeError(f"decision point {spec.id!r} of type {type(spec).__name__} is not supported "
                        f"(symnas algorithms handle oneof, manyof and floatv).")

    def _compile_slot(self, spec) -> ChoiceSlot:
        slot = ChoiceSlot(len(self.decisions), spec, self._name(spec))
        self.decisions.append(slot)
        slot.children = [self._compile_space(c) for c in spec.candidates]
        return slot

    # ---- sampling ------------------------------------------------------------------------------
    def sample(self, choose: Callable[[ChoiceSlot, Sequence[int]], int],
               draw: Callable[[FloatDecision], float], build: bool = True) -> Tuple[list, pg.DNA]:
        """Walks the active decisions in DNA order; returns (values, pg.DNA).

        ``choose(slot, banned)`` returns a candidate index not in ``banned`` (earlier picks of a
        distinct manyof); ``draw(decision)`` returns a float within the decision's range.
        With ``build=False`` only the values are made (the DNA is None).
        """
        values = [None] * self.num_decisions
        node = _space_node(self._sample_space(self.root, values, choose, draw))
        return values, (make_dna(node) if build else None)

    def assemble(self, values: list, fill_choose=None, fill_draw=None,
                 build: bool = True) -> Tuple[list, pg.DNA]:
        """DNA from an assignment; inactive-turned-active decisions are filled by the callbacks."""
        def choose(slot, banned):
            v = values[slot.index]
            if v is None or v in banned:
                return fill_choose(slot, banned)
            return v

        def draw(dec):
            v = values[dec.index]
            return fill_draw(dec) if v is None else v
        return self.sample(choose, draw, build)

    def _sample_space(self, elements, values, choose, draw) -> List[DNANode]:
        return [self._sample_element(e, values, choose, draw) for e in elements]

    def _sample_element(self, e, values, choose, draw) -> DNANode:
        if type(e) is ChoiceSlot:
            c = choose(e, ())
            values[e.index] = c
            return self._slot_node(e, c, values, choose, draw)
        if type(e) is FloatDecision:
            x = float(draw(e))
            values[e.index] = x
            return DNANode(x, [])
        picks: List[int] = []
        for slot in e.slots:
            c = choose(slot, picks if e.distinct else ())
            picks.append(c)
        if e.sorted:
            picks.sort()
        nodes = []
        for slot, c in zip(e.slots, picks):
            values[slot.index] = c
            nodes.append(self._slot_node(slot, c, values, choose, draw))
        return DNANode(None, nodes)

    def _slot_node(self, slot, c, values, choose, draw) -> DNANode:
        sub = slot.children[c]
        if not sub:
            return DNANode(c, [])
        child = _space_node(self._sample_space(sub, values, choose, draw))
        if child.value is None:
            return DNANode(c, child.children)
        return DNANode(c, [child])

    @staticmethod
    def uniform_choice(slot: ChoiceSlot, banned: Sequence[int], rng) -> int:
        n = slot.num_candidates
        if not banned:
            return int(rng.random() * n) if n > 1 else 0
        allowed = [i for i in range(n) if i not in banned]
        return allowed[int(rng.random() * len(allowed))]

    # ---- decoding ------------------------------------------------------------------------------
    def decode(self, dna: pg.DNA) -> list:
        """The flat assignment of a DNA (``None`` for inactive decisions)."""
        values = [None] * self.num_decisions
        try:
            self._decode_space(self.root, dna_value(dna), dna_children(dna), values)
        except (IndexError, TypeError, AttributeError) as e:
            raise ValueError(f"DNA {dna!r} does not match the search space: {e}") from e
        return values

    def _decode_space(self, elements, value, children, values):
        if not elements:
            return
        if len(elements) == 1:
            e = elements[0]
            if type(e) is ChoiceGroup:
                self._decode_element(e, None, children, values)
            else:
                self._decode_element(e, value, children, values)
            return
        for e, child in zip(elements, children, strict=True):
            self._decode_element(e, dna_value(child), dna_children(child), values)

    def _decode_element(self, e, value, children, values):
        if type(e) is FloatDecision:
            values[e.index] = float(value)
        elif type(e) is ChoiceSlot:
            if not isinstance(value, int) or not 0 <= value < e.num_candidates:
                raise ValueError(f"choice {e.name!r} has value {value!r}, expected an index in "
                                 f"[0, {e.num_candidates}).")
            values[e.index] = value
            sub = e.children[value]
            if len(sub) == 1 and type(sub[0]) is not ChoiceGroup:
                self._decode_element(sub[0], dna_value(children[0]), dna_children(children[0]), values)
            else:
                self._decode_space(sub, None, children, values)
        else:
            for slot, child in zip(e.slots, children, strict=True):
                self._decode_element(slot, dna_value(child), dna_children(child), values)

    def active(self, values: list) -> List[Any]:
        """The decisions that are set in ``values``."""
        return [d for d, v in zip(self.decisions, values) if v is not None]


# ---- input checks shared by the algorithms -------------------------------------------------------
def check_reward(reward, num_objectives: Optional[int] = None):
    """Returns the reward as float (or tuple of floats); raises ValueError on NaN/inf or bad arity."""
    if num_objectives is None:
        if isinstance(reward, (tuple, list)):
            if len(reward) != 1:
                raise ValueError(f"expected a single reward, got {len(reward)} objectives: {reward!r}.")
            reward = reward[0]
        try:
            r = float(reward)
        except (TypeError, ValueError) as e:
            raise ValueError(f"reward must be a number, got {reward!r}.") from e
        if not math.isfinite(r):
            raise ValueError(f"reward must be finite, got {r}.")
        return r
    rs = tuple(reward) if isinstance(reward, (tuple, list)) else (reward,)
    if len(rs) != num_objectives:
        raise ValueError(f"expected {num_objectives} objective value(s), got {len(rs)}: {reward!r}.")
    out = []
    for r in rs:
        r = float(r)
        if not math.isfinite(r):
            raise ValueError(f"objective values must be finite, got {reward!r}.")
        out.append(r)
    return tuple(out)


_MAX_PENDING = 10000


class DecisionAlgorithm(pg.DNAGenerator):
    """Base of the symnas algorithms that work on :class:`DecisionSpace` assignments.

    Subclasses implement ``_init_state()`` (after the space is compiled), ``_propose_values()``
    returning ``(values, dna)`` and ``_learn(values, reward)``; under constraints (a fed-back DNA
    carrying ``symnas.constraints.attach``'s violations) ``_learn_constrained(values, reward,
    violation)`` gets the total violation too (by default it ignores it: random search).
    A DNA the algorithm did not propose (a queued warm-start point) is learnt from the same way.
    The base keeps the proposed assignments so feedback needs no decoding, validates rewards, and recovers state by replaying
    each historical trial as propose-then-feedback: for a seeded algorithm fed back in order, the
    recovered instance proposes exactly what an uninterrupted one would. ``state_dict`` /
    ``load_state_dict`` save and restore the state as JSON (subclasses with more state than
    ``self._rng`` extend ``_state`` / ``_load_state``).
    """

    def _setup(self):
        self._space = DecisionSpace(self.dna_spec)
        self._pending = {}
        self._init_state()

    def _init_state(self):
        pass

    def _propose(self) -> pg.DNA:
        values, dna = self._propose_values()
        if len(self._pending) >= _MAX_PENDING:
            # Trials that never get feedback (failed evaluations) must not accumulate forever.
            del self._pending[next(iter(self._pending))]
        self._pending[id(dna)] = (dna, values)
        return dna

    def _values_of(self, dna: pg.DNA) -> list:
        entry = self._pending.pop(id(dna), None)
        if entry is not None and entry[0] is dna:
            return entry[1]
        return self._space.decode(dna)

    def _feedback(self, dna: pg.DNA, reward) -> None:
        violations = violations_of(dna)
        if violations is None:
            self._learn(self._values_of(dna), self._check_reward(reward))
        else:
            self._learn_constrained(self._values_of(dna), self._check_reward(reward), total_violation(violations))

    def _learn_constrained(self, values: list, reward, violation: float) -> None:
        del violation
        self._learn(values, reward)

    def _check_reward(self, reward):
        return check_reward(reward)

    def _learn(self, values: list, reward) -> None:
        pass

    def _replay(self, trial_id: int, dna: pg.DNA, reward) -> None:
        del trial_id
        replayed = self._propose()
        self._pending.pop(id(replayed), None)
        if reward is not None:
            self._feedback(dna, reward)

    # ---- checkpoints (JSON) ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The algorithm's state as plain JSON values; ``load_state_dict`` restores it after ``setup``.

        A study checkpoints it beside its trials, so resuming a long study does not replay every
        trial. Proposals in flight are not part of it: their feedback arrives as for any DNA.
        """
        if self.dna_spec is None:
            raise ValueError(f"{type(self).__name__} has no state before setup(dna_spec).")
        return {"num_proposals": self.num_proposals, "num_feedbacks": self.num_feedbacks, **self._state()}

    def load_state_dict(self, state: dict) -> None:
        """Restores ``state_dict()``'s value (the algorithm must be set up with the same DNASpec).

        With ``seed=None`` the random state is not restored: it comes fresh from the OS, so two
        processes resuming one study do not draw the same proposals.
        """
        if self.dna_spec is None:
            raise ValueError(f"set {type(self).__name__} up with its DNASpec before load_state_dict.")
        self._num_proposals = int(state["num_proposals"])
        self._num_feedbacks = int(state["num_feedbacks"])
        self._load_state(state)

    def _state(self) -> dict:
        rng = getattr(self, "_rng", None)
        return {"rng": rng_state(rng)} if rng is not None else {}

    def _load_state(self, state: dict) -> None:
        rng = getattr(self, "_rng", None)
        if rng is not None and state.get("rng") is not None and getattr(self, "seed", None) is not None:
            set_rng_state(rng, state["rng"])


def rng_state(rng) -> list:
    """A ``random.Random``'s state as JSON values."""
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def set_rng_state(rng, state: list) -> None:
    version, internal, gauss_next = state
    rng.setstate((int(version), tuple(int(i) for i in internal), gauss_next))
