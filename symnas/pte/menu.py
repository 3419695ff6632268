"""What each layer of a network may become, and what each option costs: the search's menu.

``LayerMenu`` (symbolic: the options offered) builds a ``KernelMenu`` for one network from a
``KernelTable``: per transformable layer shape, the shape-preserving neural sequences
(grouping, input bottleneck, partitions, with or without channel shuffle) and, for each, its
fastest measured program template and latency. Options that no template compiles are not
offered; the first option of every layer is its original operator.

Example::

    import symnas as sn
    net = sn.nn.resnet18()
    menu = sn.pte.LayerMenu(channel_shuffle=True, max_templates=1).build(net, sn.pte.KernelTable())
    print(menu.original_ms, len(menu.sites))
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyglove as pg

from symnas.pte.kernel_table import KernelTable, steps_key

__all__ = ["LayerMenu", "KernelMenu", "Option", "describe_steps", "template_name"]


@dataclasses.dataclass
class Option:
    """One way to compute a layer: neural steps, the fastest program template for them, its latency."""
    neural: list
    program: list
    latency_ms: float


def describe_steps(steps: Sequence[Any]) -> str:
    """The steps in PyGlove's compact notation, joined by arrows; ``"original"`` for none."""
    return " -> ".join(pg.format(s, compact=True) for s in steps) if steps else "original"


def template_name(program: Sequence[Any]) -> str:
    """A program template in short: its splits, ``"tile(oh/4,ow/8)"``."""
    splits = [f"{s.loop}/{s.factor}" for s in program if type(s).__name__ == "Split"]
    return "tile(" + ",".join(splits) + ")"


class LayerMenu(pg.Object):
    """The options offered to every transformable conv of a network.

    ``channel_shuffle``: every grouping reads interleaved input channels (the same cost; the
    groups of consecutive grouped layers mix). ``no_dead_channels``: offer no input bottleneck to
    a conv that alone reads the conv before it (the channels it skips would be computed for
    nothing). ``keep``: layers left original (torch names, e.g. ``"3.body.0"``).
    ``max_templates``: program templates timed per kernel. ``options``: the neural sequences to offer
    (each where it fits) instead of the default menu, e.g. ``[[sn.program.Group(2)], [sn.program.Group(4)]]``.
    """
    options: Optional[List[list]] = None
    channel_shuffle: bool = False
    no_dead_channels: bool = False
    keep: List[str] = []
    max_templates: int = 6

    def _on_bound(self):
        super()._on_bound()
        if self.max_templates < 1:
            raise ValueError(f"LayerMenu: max_templates must be >= 1, got {self.max_templates}.")

    def build(self, network, table: KernelTable, in_shape: Tuple[int, int, int] = (3, 32, 32)) -> "KernelMenu":
        """Measures (or reads from ``table``) every option of every layer shape of ``network``."""
        from symnas import nn as snn  # pylint: disable=import-outside-toplevel
        from symnas import spaces  # pylint: disable=import-outside-toplevel
        sites = spaces.drop_kept_layers(snn.transformable_convs(network, in_shape), self.keep)
        all_convs = snn.transformable_convs(network, in_shape, include_all=True)
        searched = {s.path for s in sites}
        ops: Dict[Any, Any] = {}
        for s in all_convs:
            ops.setdefault(s.key, s.operator())
        neural = {k: spaces.neural_menu(op, self.channel_shuffle, self.options) for k, op in ops.items()
                  if k in {s.key for s in sites}}
        shared_shapes: List[Any] = []
        if self.no_dead_channels:
            shared_shapes = drop_input_bottlenecks(neural, sites, snn.private_input_convs(network))
        templates = {k: spaces.program_templates(op)[:self.max_templates] for k, op in ops.items()}
        menu = KernelMenu(network, sites, [s for s in all_convs if s.path not in searched], ops, templates,
                          table, shared_shapes)
        menu.keep = list(self.keep)
        menu.measure(neural)
        return menu


class KernelMenu:
    """The measured menu of one network (built by ``LayerMenu.build``).

    ``options[key]``: the ``Option`` list of a layer shape (``ConvSite.key``), the original first.
    ``original_ms``: the original network's kernel sum; ``fixed_ms``: that of the convs left out
    of the search. ``nas_only[key]``: the plain group-by-2 option, the NAS-only baseline.
    """

    def __init__(self, network, sites: list, fixed_sites: list, ops: Dict[Any, Any],
                 templates: Dict[Any, List[list]], table: KernelTable, shared_shapes: List[Any]):
        self.network, self.sites, self.fixed_sites, self.ops = network, sites, fixed_sites, ops
        self.templates, self.table = templates, table
        self.shared_shapes = shared_shapes   # shapes that kept B(ci) under no_dead_channels
        self.keep: List[str] = []             # layers left original
        self.options: Dict[Any, List[Option]] = {}
        self.nas_only: Dict[Any, Option] = {}
        self.dropped: Dict[Any, List[list]] = {}     # options no template compiles for
        self.site = {s.path: s for s in sites}
        self.key = {s.path: s.key for s in sites}    # a site's key is recomputed on each read (5 us)
        self._index: Dict[Any, Dict[tuple, int]] = {}

    # ------------------------------------------------------------------ building

    def _fastest(self, key, neural) -> Tuple[float, list]:
        op = self.ops[key]
        return min(((self.table.measure(op, neural, prog), prog) for prog in self.templates[key]),
                   key=lambda t: t[0])

    def measure(self, neural: Dict[Any, List[list]]) -> None:
        """Times every option's templates, then each option's fastest template once more (a load
        spike during the first timing would otherwise decide, and the originals are every
        speedup's denominator); drops the options that no template compiles for."""
        best = {key: [self._fastest(key, n) for n in neural.get(key, [[]])] for key in self.ops}
        for key, op in self.ops.items():
            for i, steps in enumerate(neural.get(key, [[]])):
                latency, prog = best[key][i]
                if math.isfinite(latency):
                    best[key][i] = (self.table.remeasure(op, steps, prog), prog)
        group2 = [_group2()]
        for key in neural:
            found = [i for i, n in enumerate(neural[key]) if steps_key(n) == steps_key(group2)]
            latency, prog = best[key][found[0]] if found else self._fastest(key, group2)
            self.nas_only[key] = Option(group2, prog, latency)
        for key in self.ops:
            steps = neural.get(key, [[]])
            keep = [i for i in range(len(steps)) if i == 0 or math.isfinite(best[key][i][0])]
            if len(keep) < len(steps):
                self.dropped[key] = [steps[i] for i in range(len(steps)) if i not in keep]
            self.options[key] = [Option(steps[i], best[key][i][1], best[key][i][0]) for i in keep]
        self._index = {k: {steps_key(o.neural): i for i, o in enumerate(opts)} for k, opts in self.options.items()}

    # ------------------------------------------------------------------ reading

    @property
    def fixed_ms(self) -> float:
        return sum(self.options[s.key][0].latency_ms for s in self.fixed_sites)

    @property
    def original_ms(self) -> float:
        return self.fixed_ms + sum(self.options[s.key][0].latency_ms for s in self.sites)

    def index(self, key, neural) -> int:
        """The option number of ``neural`` steps in the menu of layer shape ``key`` (0: original)."""
        return self._index[key][steps_key(neural)]

    def find(self, key, neural) -> Optional[int]:
        """``index``, or None when the menu does not offer ``neural``."""
        return self._index[key].get(steps_key(neural))

    def neural(self) -> Dict[Any, List[list]]:
        """Layer shape -> the neural sequences offered (what the search space chooses from)."""
        return {s.key: [o.neural for o in self.options[s.key]] for s in self.sites}

    def latency(self, choice: Dict[str, Tuple[list, list]]) -> float:
        """The kernel sum of a network: the fixed convs, then each searched layer's
        (neural, program) in ``choice`` (path -> steps)."""
        return self.fixed_ms + sum(self.table.measure(self.ops[self.key[p]], n, pr) for p, (n, pr) in choice.items())

    def original_choice(self, path: str) -> Tuple[list, list]:
        """The original operator of the layer at ``path`` with its fastest template."""
        return [], list(self.options[self.key[path]][0].program)

    def option_choice(self, path: str, index: int) -> Tuple[list, list]:
        option = self.options[self.key[path]][index]
        return list(option.neural), list(option.program)


def _group2():
    from symnas import program as P  # pylint: disable=import-outside-toplevel
    return P.Group(2)


def drop_input_bottlenecks(menus: Dict[Any, List], sites, private: Sequence[str]) -> List[Any]:
    """Removes the input-bottleneck options (``B(ci)``) of the convs whose input only they read (in
    place): the channels such an option skips would be computed by the conv before it for nothing.
    A layer shape that convs with a shared input have too keeps its options; those shapes are returned."""
    from symnas import program as P  # pylint: disable=import-outside-toplevel
    private = set(private)
    shared_keys = {s.key for s in sites if s.path not in private}
    mixed = []
    for key in {s.key for s in sites if s.path in private}:
        if key in shared_keys:
            mixed.append(key)
            continue
        menus[key] = [steps for steps in menus[key]
                      if not any(isinstance(step, P.Bottleneck) and step.axis == "ci" for step in steps)]
    return sorted(mixed, key=str)
