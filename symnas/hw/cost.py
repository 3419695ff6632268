"""Energy and latency of layers and networks on an accelerator, by zigzag-dse 3.9.1's cost model.

Two ways to map a layer (``mapping=``):

* ``"fast"`` (default): ZigZag's cost model on a fixed temporal loop order: the layer's own order
  (a schedule's program steps, ``Layer.order``) or else the best of the canonical output-,
  weight- and input-stationary orders (``ORDERS``). Each order is split into loop prime factors
  and allocated to the memories bottom-up by ZigZag's ``MemoryAllocator``, as LOMA does for each
  of its candidates; about 10 ms per order on this machine.
* ``"loma"``: ZigZag's full temporal-mapping search (LOMA, ``lpf_limit`` loop prime factors):
  seconds per layer, for finalists.

Results are cached per (layer loop sizes and strides and order, accelerator, mapping), so a
network whose distinct layers were seen before costs a dictionary lookup per layer. ZigZag's
failures (no mapping fits the buffers, an invalid hierarchy) raise ``sn.hw.HardwareError`` naming
the layer; a search records the trial as rejected.

Example::

    import symnas as sn
    model = sn.hw.CostModel()
    cost = model.network_cost(sn.hw.network_layers(sn.nn.resnet18()), sn.hw.edge_tpu_like())
    print(cost.latency_ms, cost.energy_uj, cost.edp)
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from symnas.hw.errors import HardwareError
from symnas.hw.workload import ORDERS, Layer, _PROGRAM_TO_ZIGZAG

__all__ = ["CostModel", "LayerCost", "NetworkCost", "MAPPINGS", "OBJECTIVES"]

MAPPINGS = ("fast", "loma")
OBJECTIVES = ("edp", "latency", "energy")


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One layer on one accelerator: energy (pJ), latency (cycles), MAC utilisation, the mapping used."""

    energy_pj: float
    latency_cycles: float
    mac_energy_pj: float
    utilization: float          # MACs / (PEs x cycles)
    mapping: str                # the temporal mapping ZigZag chose, per memory level
    seconds: float              # wall time of the evaluation (0 when cached)


@dataclasses.dataclass(frozen=True)
class NetworkCost:
    """A network's layers run one after another: energies and latencies add up."""

    energy_pj: float
    latency_cycles: float
    clock_mhz: float
    layers: Tuple[Tuple[str, LayerCost], ...]

    @property
    def latency_ms(self) -> float:
        return self.latency_cycles / (self.clock_mhz * 1e3)

    @property
    def energy_uj(self) -> float:
        return self.energy_pj * 1e-6

    @property
    def edp(self) -> float:
        """Energy-delay product in µJ·ms."""
        return self.energy_uj * self.latency_ms

    def as_metrics(self) -> Dict[str, float]:
        return {"latency_ms": self.latency_ms, "energy_uj": self.energy_uj, "edp": self.edp,
                "latency_cycles": self.latency_cycles}


def _quiet_zigzag() -> None:
    # ZigZag logs every stage at INFO and warns on every spatial-mapping reduction
    logging.getLogger("zigzag").setLevel(logging.ERROR)


class CostModel:
    """Costs layers on accelerators through ZigZag, with a cache (see the module docstring).

    ``objective`` picks among the mappings tried (``"edp"``, ``"latency"``, ``"energy"``); ``orders``
    are the canonical orders the fast mapping tries for layers without their own.
    """

    def __init__(self, mapping: str = "fast", objective: str = "edp", lpf_limit: int = 6,
                 orders: Sequence[str] = tuple(ORDERS)):
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        unknown = [o for o in orders if o not in ORDERS]
        if unknown or not orders:
            raise ValueError(f"orders must name some of {tuple(ORDERS)}, got {tuple(orders)}")
        if not isinstance(lpf_limit, int) or lpf_limit < 1:
            raise ValueError(f"lpf_limit must be a positive integer, got {lpf_limit!r}")
        self.mapping, self.objective, self.lpf_limit = mapping, objective, lpf_limit
        self.orders = tuple(orders)
        self._cache: Dict[Any, Union[LayerCost, HardwareError]] = {}
        self._accelerators: Dict[str, Any] = {}
        self.evaluations = 0       # layer evaluations run (cache misses)
        self.hits = 0
        self.seconds = 0.0         # spent in ZigZag
        _quiet_zigzag()

    # ---- public -------------------------------------------------------------------------------
    def layer_cost(self, layer: Layer, acc, mapping: Optional[str] = None) -> LayerCost:
        """``layer`` on ``acc``; raises ``HardwareError`` when the accelerator cannot run it, including when
        its dataflow unrolls a loop the layer lacks (``G`` on an ungrouped layer, ``OX`` on a dense one)."""
        entry = self._entry(acc)
        lacking = self._lacking(layer, acc)
        if lacking:
            raise HardwareError(f"layer {layer.name!r} ({layer.describe()}): the dataflow {list(acc.dataflow)} "
                                f"unrolls {', '.join(lacking)}, a loop this layer lacks")
        return self._cost(layer, acc, entry, mapping or self.mapping)

    def network_cost(self, layers: Sequence[Layer], acc, mapping: Optional[str] = None) -> NetworkCost:
        """All ``layers`` on ``acc``, one after another. Array dimensions that unroll a loop some layer lacks
        idle for that layer; a loop that no layer has raises ``HardwareError``."""
        if not layers:
            raise ValueError("network_cost needs at least one layer")
        entry = self._entry(acc)
        for loop in acc.dataflow:
            if all(loop not in layer.loop_sizes for layer in layers):
                raise HardwareError(f"the dataflow {list(acc.dataflow)} unrolls {loop}, a loop no layer of this "
                                    f"network has: those PEs would never work")
        costs = [(layer.name, self._cost(layer, acc, entry, mapping or self.mapping)) for layer in layers]
        return NetworkCost(sum(c.energy_pj for _, c in costs), sum(c.latency_cycles for _, c in costs),
                           float(acc.clock_mhz), tuple(costs))

    def clear(self) -> None:
        self._cache.clear()
        self._accelerators.clear()

    # ---- internals ----------------------------------------------------------------------------
    @staticmethod
    def _lacking(layer: Layer, acc) -> List[str]:
        return [loop for loop in acc.dataflow if loop not in layer.loop_sizes]

    def _entry(self, acc):
        """(cache key, ZigZag accelerator, validated mapping data) of ``acc``, parsed once."""
        import pyglove as pg  # pylint: disable=import-outside-toplevel
        if not pg.is_deterministic(acc):
            raise ValueError(f"accelerator {acc.name!r} still holds search points; materialise it first")
        data = acc.to_zigzag()
        key = json.dumps(data, sort_keys=True) + json.dumps([acc.dataflow, acc.array])
        if key not in self._accelerators:
            self._accelerators[key] = (key, _parse_accelerator(data, acc.name), int(acc.precision))
        return self._accelerators[key]

    def _cost(self, layer: Layer, acc, entry, mapping: str) -> LayerCost:
        key, zz_acc, precision = entry
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
        if mapping == "loma":
            layer_key = (layer.kind, tuple(layer.loop_sizes.items()), layer.stride)
            orders = None
        else:
            layer_key = layer.key()
            orders = [layer.order] if layer.order else [_named_order(n) for n in self.orders]
        cache_key = (layer_key, key, mapping, self.objective, self.lpf_limit if orders is None else tuple(self.orders))
        cached = self._cache.get(cache_key)
        if cached is not None:
            self.hits += 1
            if isinstance(cached, HardwareError):
                raise HardwareError(f"layer {layer.name!r}: {cached.reason}")
            return dataclasses.replace(cached, seconds=0.0)
        start = time.perf_counter()
        try:
            cme = _run_zigzag(layer, acc, zz_acc, precision, orders, self.objective, self.lpf_limit)
        except HardwareError as error:
            self._cache[cache_key] = error
            raise HardwareError(f"layer {layer.name!r} ({layer.describe()}): {error.reason}") from None
        except Exception as error:  # pylint: disable=broad-except
            reason = f"ZigZag failed: {type(error).__name__}: {error}".strip()
            self._cache[cache_key] = HardwareError(reason)
            raise HardwareError(f"layer {layer.name!r} ({layer.describe()}): {reason}") from error
        finally:
            elapsed = time.perf_counter() - start
            self.seconds += elapsed
            self.evaluations += 1
        cost = LayerCost(float(cme.energy_total), float(cme.latency_total2), float(cme.mac_energy),
                         float(layer.macs) / (acc.num_pes * max(float(cme.latency_total2), 1.0)),
                         str(cme.temporal_mapping), elapsed)
        self._cache[cache_key] = cost
        return cost


def _named_order(name: str) -> Tuple[Tuple[str, int], ...]:
    """A canonical order as ZigZag dimensions (extents 0: the whole temporal loop), outermost first."""
    dims = []
    for loop in ORDERS[name]:
        if loop == "co":
            dims += [("G", 0), ("K", 0)]
        else:
            dims.append((_PROGRAM_TO_ZIGZAG[loop], 0))
    return tuple(dims)


def _parse_accelerator(data: Dict[str, Any], name: str):
    from zigzag.parser.accelerator_factory import AcceleratorFactory  # pylint: disable=import-outside-toplevel
    from zigzag.parser.accelerator_validator import AcceleratorValidator  # pylint: disable=import-outside-toplevel
    validator = AcceleratorValidator(copy.deepcopy(data))
    normalized = validator.normalized_data
    if not validator.validate():
        raise HardwareError(f"accelerator {name!r} is not a valid ZigZag accelerator: "
                            f"{validator.validator.errors or 'see the log'}")
    try:
        return AcceleratorFactory(normalized).create()
    except (AssertionError, ValueError, KeyError) as error:
        raise HardwareError(f"accelerator {name!r}: ZigZag cannot build it: {error}") from None


def _mapping_data(acc, layer: Layer) -> List[Dict[str, Any]]:
    """The spatial mapping for ``layer``: the dataflow, less the array dimensions whose loop the layer lacks."""
    from zigzag.parser.mapping_validator import MappingValidator  # pylint: disable=import-outside-toplevel
    sizes = layer.loop_sizes
    spatial = {f"D{i + 1}": [f"{loop}, {int(size) if loop in sizes else 1}"]
               for i, (loop, size) in enumerate(zip(acc.dataflow, acc.array))}
    for i, loop in enumerate(acc.dataflow):
        if loop not in sizes:           # this dimension idles: unroll a loop the layer has by 1
            spatial[f"D{i + 1}"] = [f"{next(iter(sizes))}, 1"]
    data = [{"name": "default", "spatial_mapping": spatial,
             "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]
    validator = MappingValidator(data)
    normalized = validator.normalized_data
    if not validator.validate():
        raise HardwareError(f"invalid spatial mapping {spatial}")
    return normalized


def _layer_node(layer: Layer, acc, precision: int):
    from zigzag.parser.workload_factory import LayerNodeFactory  # pylint: disable=import-outside-toplevel
    from zigzag.parser.workload_validator import WorkloadValidator  # pylint: disable=import-outside-toplevel
    validator = WorkloadValidator([layer.zigzag(0, precision)])
    data = validator.normalized_data
    if not validator.validate():
        raise HardwareError(f"ZigZag rejects the workload: {validator.validator.errors}")
    return LayerNodeFactory(data[0], _mapping_data(acc, layer)).create()


def _run_zigzag(layer: Layer, acc, zz_acc, precision: int, orders, objective: str, lpf_limit: int):
    from zigzag.mapping.temporal_mapping import TemporalMappingType  # pylint: disable=import-outside-toplevel
    from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage  # pylint: disable=import-outside-toplevel
    from zigzag.stages.main import MainStage  # pylint: disable=import-outside-toplevel
    from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage  # pylint: disable=import-outside-toplevel
    from zigzag.stages.mapping.temporal_mapping_generator_stage import TemporalMappingGeneratorStage  # pylint: disable=import-outside-toplevel
    from zigzag.stages.results import reduce_stages  # pylint: disable=import-outside-toplevel
    reduce = {"edp": reduce_stages.MinimalEDPStage, "latency": reduce_stages.MinimalLatencyStage,
              "energy": reduce_stages.MinimalEnergyStage}[objective]
    node = _layer_node(layer, acc, precision)
    temporal = TemporalMappingGeneratorStage if orders is None else _fixed_order_stage()
    stages = [reduce, SpatialMappingGeneratorStage, reduce, temporal, CostModelStage]
    main = MainStage(stages, accelerator=zz_acc, layer=node, loma_lpf_limit=lpf_limit, loma_show_progress_bar=False,
                     nb_mappings_generated=1, enable_mix_spatial_mapping_generation=False,
                     access_same_data_considered_as_no_access=True,
                     temporal_mapping_type=TemporalMappingType("uneven"), orders=orders)
    try:
        results = main.run()
    except HardwareError:
        raise
    except Exception as error:  # pylint: disable=broad-except
        name = type(error).__name__
        if "TooSmall" in name or "NoValidLoopOrdering" in name:
            raise HardwareError(f"no mapping fits the memories ({name}: {str(error).splitlines()[0]})") from None
        raise
    if not results:
        raise HardwareError("ZigZag returned no cost model evaluation")
    return results[0][0]


def _prime_factors(n: int) -> List[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def lpf_ordering(order: Sequence[Tuple[str, int]], temporal: Dict[str, int], sizes: Dict[str, int]) -> List[Tuple[str, int]]:
    """ZigZag's temporal ordering (innermost loop first, loop prime factors) for ``order``.

    ``order``: (dimension, extent) pairs, outermost first (extent 0: the whole loop); ``temporal``: the
    loop sizes left to iterate after spatial unrolling (ZigZag's ``get_temporal_loops``); ``sizes``: the
    layer's loop sizes. The spatial factor of a dimension is taken from its innermost pieces; when it
    does not divide them, the dimension iterates as one loop at its innermost place. Dimensions the
    order omits iterate outermost.
    """
    pieces: Dict[str, List[int]] = {}
    for dim, extent in order:
        pieces.setdefault(dim, []).append(extent)
    fitted: Dict[str, List[int]] = {}
    for dim, total in temporal.items():
        mine = pieces.get(dim)
        if not mine or any(e == 0 for e in mine):
            fitted[dim] = [1] * (len(mine) - 1) + [total] if mine else [total]
            continue
        left = sizes[dim] // total if sizes[dim] % total == 0 else 0
        new = list(mine)
        for i in range(len(new) - 1, -1, -1):
            if left <= 1:
                break
            g = math.gcd(new[i], left)
            new[i] //= g
            left //= g
        fitted[dim] = new if left == 1 and math.prod(new) == total else [1] * (len(mine) - 1) + [total]
    ordering: List[Tuple[str, int]] = []
    seen: Dict[str, int] = {}
    for dim, _ in order:                               # outermost first
        if dim not in fitted:
            continue
        index = seen.get(dim, 0)
        seen[dim] = index + 1
        ordering.append((dim, fitted[dim][index]))
    placed = set(seen)
    outer = [(dim, total) for dim, total in temporal.items() if dim not in placed]
    result: List[Tuple[str, int]] = []
    for dim, extent in reversed(outer + ordering):    # innermost first, each piece as prime factors
        result += [(dim, p) for p in _prime_factors(extent)]
    return result


@functools.lru_cache(maxsize=None)
def _fixed_order_stage():
    """The ZigZag stage class of the fast mapping (defined on first use: ZigZag is imported lazily)."""
    from zigzag.datatypes import LayerDim  # pylint: disable=import-outside-toplevel
    from zigzag.opt.loma.engine import LomaEngine  # pylint: disable=import-outside-toplevel
    from zigzag.opt.loma.memory_allocator import MemoryAllocator  # pylint: disable=import-outside-toplevel
    from zigzag.stages.stage import Stage  # pylint: disable=import-outside-toplevel

    class FixedOrderStage(Stage):
        """ZigZag stage: one temporal mapping per given loop order (instead of LOMA's search)."""

        def __init__(self, list_of_callables, *, accelerator, layer, spatial_mapping, temporal_mapping_type,
                     orders, **kwargs):
            super().__init__(list_of_callables, **kwargs)
            self.accelerator, self.layer, self.spatial_mapping = accelerator, layer, spatial_mapping
            self.mapping_type, self.orders = temporal_mapping_type, orders

        def run(self):
            engine = LomaEngine(accelerator=self.accelerator, layer=self.layer, spatial_mapping=self.spatial_mapping,
                                mapping_type=self.mapping_type)
            temporal = {str(dim): int(size) for dim, size in engine.get_temporal_loops().items()}
            sizes = {str(dim): int(size) for dim, size in self.layer.layer_dim_sizes.items()}
            failures, yielded = [], False
            for order in self.orders:
                ordering = [(LayerDim(d), f) for d, f in lpf_ordering(order, temporal, sizes)] or \
                    [(LayerDim(next(iter(sizes))), 1)]
                allocator = MemoryAllocator(self.accelerator, self.layer, self.spatial_mapping, ordering,
                                            self.mapping_type)
                try:
                    temporal_mapping = allocator.run()
                except Exception as error:  # pylint: disable=broad-except
                    if "TooSmall" not in type(error).__name__:
                        raise
                    failures.append(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
                    continue
                kwargs = self.kwargs.copy()
                kwargs.update(accelerator=self.accelerator, layer=self.layer, spatial_mapping=self.spatial_mapping,
                              temporal_mapping=temporal_mapping)
                sub = self.list_of_callables[0](self.list_of_callables[1:], **kwargs)
                for cme, extra in sub.run():
                    yielded = True
                    yield cme, (temporal_mapping, extra)
            if not yielded:
                raise HardwareError("no loop order fits the memories: the buffers cannot hold one tile "
                                    f"({'; '.join(sorted(set(failures)))})")

    return FixedOrderStage
