"""Whole-network transformation spaces: one transformation sequence per transformable conv.

``network_transformations(backbone)`` returns a symbolic ``NetworkTransformation`` whose
layers each choose a neural step sequence (grouping, input bottleneck, the seed's
split-and-group sequences, ...) and a program template (register blocking,
vectorisation, parallelisation) for their kernel. ``.network()`` materialises the
transformed backbone (a ``sn.nn`` layer tree whose convs are ``sn.program.Schedule``
kernels); the same object gives the torch model for training and the TVM kernels
for inference. Only shape-preserving neural sequences are offered, so every choice of
one layer fits every choice of the others.

The step lists a candidate holds are shared, read-only (sealed) values of the space
(``SharedSteps``, a ``pg.Ref``): building a candidate of a 156-layer DenseNet then takes
~30-50 ms instead of ~240 ms of copying step objects (this machine). Rebinding a field
(``layer.rebind(neural=[...])``) works as usual; editing a shared step in place raises
``WritePermissionError`` (clone it first). A layer offered a single program template is
one decision over finished, shared layers (``SharedLayer``): the same DNA, and a DenseNet
candidate in ~12 ms; such a layer rebinds only in a deep clone of its candidate.
Candidates serialise (JSON, pickle) as plain values.

Example::

    import pyglove as pg, symnas as sn
    space = sn.spaces.network_transformations("resnet34")
    candidate = next(pg.random_sample(space, seed=1))   # or sn.search(space, evaluate, algorithm)
    net = candidate.network()                           # sn.nn tree with transformed kernels
    model = net.build((3, 32, 32))
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyglove as pg

from symnas.pyglove_fastpaths import SharedValue, share

__all__ = ["LayerTransformation", "NetworkTransformation", "SharedLayer", "SharedSteps", "SharedValue",
           "describe_neural", "drop_kept_layers", "network_transformations", "neural_menu", "program_templates"]


class LayerTransformation(pg.Object):
    """The transformation sequence of one conv: neural steps then program steps."""
    path: str                 # key path of the conv in the backbone
    neural: list = []         # neural steps (empty: the original operator)
    program: list = []        # program steps (a CPU template)

    def schedule(self, op):
        from symnas import program  # pylint: disable=import-outside-toplevel
        return program.Schedule(op, list(self.neural) + list(self.program))

    @property
    def is_transformed(self) -> bool:
        return bool(self.neural)

    def describe(self) -> str:
        """The neural steps in short: ``"G4>B2(ci)>shuffle"``, ``"original"`` when there are none."""
        return describe_neural(self.neural)


class NetworkTransformation(pg.Object):
    """A network with one ``LayerTransformation`` per transformable conv.

    The network is a backbone by name (``backbone``, with ``num_classes``) or any symbolic
    network (``base_network``, shared read-only by the candidates: ``original()`` gives a copy).
    """
    backbone: Optional[str] = "resnet34"
    num_classes: int = 10
    in_shape: Tuple[int, int, int] = (3, 32, 32)
    layers: list = []
    base_network: Any = None

    def original(self):
        """The untransformed network (a new, writable copy)."""
        if self.base_network is not None:
            return self.base_network.clone(deep=True).seal(False)
        from symnas import nn as snn  # pylint: disable=import-outside-toplevel
        return snn.backbone(self.backbone, self.num_classes)

    def _original_view(self):
        return self.base_network if self.base_network is not None else self.original()

    def schedules(self) -> Dict[str, Any]:
        """Key path -> ``sn.program.Schedule`` for every layer (untransformed ones included)."""
        from symnas import nn as snn  # pylint: disable=import-outside-toplevel
        sites = {s.path: s for s in snn.transformable_convs(self._original_view(), self.in_shape)}
        return {t.path: t.schedule(sites[t.path].operator()) for t in self.layers}

    def replacements(self) -> Dict[str, Any]:
        """Key path -> Schedule for the layers whose values change (neural steps)."""
        scheds = self.schedules()
        return {t.path: scheds[t.path] for t in self.layers if t.is_transformed}

    def network(self):
        """The transformed backbone (convs with neural steps replaced by their kernels)."""
        from symnas import nn as snn  # pylint: disable=import-outside-toplevel
        return snn.replace_convs(self._original_view(), self.replacements())


def describe_neural(steps) -> str:
    """A short label of a neural step sequence, as the benchmark tables print it.

    ``Group(4)`` -> ``G4``, ``Bottleneck(2, axis="ci")`` -> ``B2(ci)``, ``Partition("co", 2)`` ->
    ``split(co,2)``, ``ChannelShuffle()`` -> ``shuffle``; a step on one part gets ``[pN]``::

        from symnas import program as P
        assert describe_neural([P.Group(4), P.ChannelShuffle()]) == "G4>shuffle"
        assert describe_neural([]) == "original"
    """
    names = []
    for step in steps:
        args = step.sym_init_args
        part = f"[p{args.part}]" if getattr(args, "part", None) is not None else ""
        kind = type(step).__name__
        if kind == "Group":
            names.append(f"G{args.groups}{part}")
        elif kind == "Bottleneck":
            names.append(f"B{args.factor}({args.axis}){part}")
        elif kind == "Partition":
            names.append(f"split({args.axis},{args.parts})")
        elif kind == "ChannelShuffle":
            names.append(f"shuffle{part}")
        else:
            names.append(kind + part)
    return ">".join(names) or "original"


def neural_menu(op, channel_shuffle: bool = False, candidates: Optional[Sequence[list]] = None) -> List[list]:
    """Shape-preserving neural sequences that fit ``op`` (the first is the original operator).

    With ``channel_shuffle``, every grouping reads interleaved input channels
    (``sn.program.ChannelShuffle``): the same cost, but consecutive grouped layers then mix
    their groups (ResNet-34, CIFAR-10, 10 epochs, 2 seeds: +1.1 points for a 4.3x network).
    ``candidates``: the sequences to offer instead of the default list (the original operator is
    always first; those that do not fit ``op`` are left out).
    """
    from symnas import program as p  # pylint: disable=import-outside-toplevel
    if candidates is not None:
        candidates = [[]] + [list(c) for c in candidates if list(c)]
    else:
        candidates = _default_candidates()
    if channel_shuffle:
        candidates = [steps + [p.ChannelShuffle()] if any(isinstance(s, p.Group) for s in steps)
                      and not any(isinstance(s, p.ChannelShuffle) for s in steps) else steps
                      for steps in candidates]
    menu = []
    for steps in candidates:
        try:
            sched = p.Schedule(op, steps)
            if tuple(sched.output_shape) == tuple(p.Schedule(op, []).output_shape):
                menu.append(steps)
        except (ValueError, p.IllegalTransformation):
            continue
    return menu


def _default_candidates() -> List[list]:
    from symnas import program as p  # pylint: disable=import-outside-toplevel
    return [
        [],
        [p.Group(2)],
        [p.Group(4)],
        [p.Group(8)],
        [p.Bottleneck(2, axis="ci")],
        [p.Group(2), p.Bottleneck(2, axis="ci")],
        [p.Group(4), p.Bottleneck(2, axis="ci")],
        [p.Partition("co", 2), p.Group(2, part=0), p.Group(4, part=1)],   # grouping that differs by output half
        [p.Partition("oh", 2), p.Group(2)],                               # grouping per spatial half
        [p.Group(16)],
        [p.Group(8), p.Bottleneck(2, axis="ci")],
        [p.Bottleneck(4, axis="ci")],
        [p.Partition("co", 2), p.Group(4, part=0), p.Group(8, part=1)],
    ]


def program_templates(op) -> List[list]:
    """A few CPU program templates (register blocking, vectorisation, parallel loops) for ``op``.

    A template that does not fit a neural-transformed kernel raises ``IllegalTransformation``
    when lowered; searches treat it as a failed (infinitely slow) kernel.
    """
    from symnas.program.search_space import cpu_templates  # pylint: disable=import-outside-toplevel
    return cpu_templates(op)


def network_transformations(backbone: Any = "resnet34", num_classes: int = 10,
                            in_shape: Sequence[int] = (3, 32, 32), templates: Optional[Dict] = None,
                            menu: Optional[Dict] = None, channel_shuffle: bool = False,
                            keep: Sequence[str] = ()) -> NetworkTransformation:
    """The search space: per transformable conv, ``pg.oneof`` over neural sequences and over templates.

    ``backbone`` is a name of ``sn.nn.backbone`` or a symbolic network (then ``num_classes`` is the
    network's own).

    ``templates`` / ``menu`` may map a site key (``ConvSite.key``) to the lists to offer
    (e.g. only the best-measured template per neural sequence), to keep a search small.
    ``channel_shuffle`` is ``neural_menu``'s (groupings read interleaved input channels).
    ``keep`` names layers (torch names, e.g. ``"3.body.0"``) left out of the space: they stay the
    original conv. Example::

        space = network_transformations("resnet18", keep=["3.body.0"])
        assert "layers[3].body.layers[0]" not in [t.path for t in space.layers]
    """
    from symnas import nn as snn  # pylint: disable=import-outside-toplevel
    net = snn.backbone(backbone, num_classes) if isinstance(backbone, str) else backbone
    shared: Dict[Any, Any] = {}     # one read-only value per distinct step list, shared by the layers
    layers = []
    for site in drop_kept_layers(snn.transformable_convs(net, tuple(in_shape)), keep):
        op = site.operator()
        neural = (menu or {}).get(site.key) or neural_menu(op, channel_shuffle)
        program = (templates or {}).get(site.key) or program_templates(op)
        neural = [_shared(steps, shared) for steps in neural]
        program = [_shared(steps, shared) for steps in program]
        if len(neural) > 1 and len(program) == 1:
            # one decision, as below, over finished layers that the candidates share (no layer is built
            # when a candidate is decoded)
            layers.append(pg.oneof([share(LayerTransformation(site.path, n, program[0]).seal(), SharedLayer)
                                    for n in neural]))
            continue
        layers.append(LayerTransformation(site.path,
                                          pg.oneof(neural) if len(neural) > 1 else neural[0],
                                          pg.oneof(program) if len(program) > 1 else program[0]))
    if isinstance(backbone, str):
        return NetworkTransformation(backbone, num_classes, tuple(in_shape), layers)
    # candidates reference the network instead of copying it (~0.3 s for a ResNet-34)
    return NetworkTransformation(None, num_classes, tuple(in_shape), layers,
                                 base_network=SharedValue(net.clone(deep=True).seal()))


def drop_kept_layers(sites: list, keep: Sequence[str]) -> list:
    """``sites`` (``ConvSite``) without the layers named in ``keep``; an unknown or all-covering ``keep``
    raises ``ValueError`` naming the problem."""
    names = [s.torch_name for s in sites]
    unknown = [k for k in keep if k not in names]
    if unknown:
        raise ValueError(f"keep: {', '.join(map(repr, unknown))} is not a transformable layer; "
                         f"transformable: {', '.join(names)}")
    kept = set(keep)
    left = [s for s in sites if s.torch_name not in kept]
    if not left:
        raise ValueError("keep names every transformable layer: nothing left to transform")
    return left


class SharedSteps(SharedValue):
    """A read-only step list that many candidates reference instead of copying.

    Reads like the list (``layer.neural[0]``). Example::

        shared = SharedSteps(pg.List([sn.program.Group(2)]).seal())
        layer = LayerTransformation("stem.conv", shared, [])
        assert layer.neural is shared.value
    """


class SharedLayer(SharedValue):
    """A read-only ``LayerTransformation`` that many candidates reference instead of building.

    A layer with one program template offers one shared, sealed layer per neural option:
    decoding a 156-layer DenseNet candidate then builds no layer objects. Reads,
    compares, serialises and pickles as the layer; a deep clone owns a copy that
    rebinds. Example::

        shared = SharedLayer(LayerTransformation("stem.conv", [], []).seal())
        candidate = NetworkTransformation(layers=[shared])
        assert candidate.layers[0] is shared.value
        copy = candidate.clone(deep=True)
        copy.layers[0].rebind(path="other")       # the shared layer is unchanged
    """

    clone_owns_copy = True


def _shared(steps, cache: Dict[Any, Any]):
    """``steps`` as a sealed list behind ``SharedSteps``: candidates reference it, not copy it."""
    key = pg.to_json_str(pg.List(steps) if not isinstance(steps, pg.List) else steps)
    if key not in cache:
        value = pg.List([s.clone(deep=True) if isinstance(s, pg.Symbolic) else s for s in steps])
        value.seal()
        cache[key] = value
    return share(cache[key], SharedSteps)
