"""How well the fast mapping ranks designs against ZigZag's full LOMA search, and what each costs in time.

``random_pairs`` draws (layer, accelerator) pairs: layers of symnas backbones, original and with
random neural transformations from their transformation spaces; accelerators from
``nahas_space()``. ``fast_vs_full`` costs every pair both ways and reports Spearman's and Kendall's
rank correlations of the two EDPs, the fast/full ratio per pair, and the seconds each took.

Example::

    import symnas as sn
    pairs = sn.hw.random_pairs(10, seed=0)
    report = sn.hw.fast_vs_full(pairs)
    print(report.spearman, report.median_ratio)
"""
from __future__ import annotations

import dataclasses
import random
import statistics
import time
from typing import List, Optional, Sequence, Tuple

import pyglove as pg

from symnas.hw.cost import CostModel
from symnas.hw.errors import HardwareError
from symnas.hw.presets import nahas_space
from symnas.hw.workload import Layer, network_layers

__all__ = ["random_pairs", "fast_vs_full", "RankReport", "transformed_layers"]


def transformed_layers(backbone: str, samples: int, seed: int = 0) -> List[Layer]:
    """The layers of ``backbone`` and of ``samples`` random candidates of its transformation space."""
    from symnas import nn as snn  # pylint: disable=import-outside-toplevel
    from symnas.spaces.transformations import network_transformations  # pylint: disable=import-outside-toplevel
    net = snn.backbone(backbone)
    layers = list(network_layers(net))
    sites = snn.transformable_convs(net)
    space = network_transformations(backbone, templates={s.key: [[]] for s in sites}, channel_shuffle=True)
    for candidate in pg.random_sample(space, seed=seed, num_examples=samples):
        layers += network_layers(candidate.network())
    unique = {}
    for layer in layers:
        unique.setdefault(layer.key(), layer)
    return list(unique.values())


def random_pairs(n: int, seed: int = 0, backbones: Sequence[str] = ("resnet18", "resnext29_2x64d"),
                 transformed: int = 2, per_layer: int = 5, accelerators=None) -> List[Tuple[Layer, object]]:
    """``n`` distinct random (layer, accelerator) pairs (module docstring): ``n / per_layer`` random layers,
    each with ``per_layer`` random accelerators that can run it, so ranks can also be compared per layer."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(per_layer, int) or not 1 <= per_layer <= n:
        raise ValueError(f"per_layer must be an integer in [1, n], got {per_layer!r}")
    rng = random.Random(seed)
    layers = []
    for backbone in backbones:
        layers += transformed_layers(backbone, transformed, seed)
    pool = list(accelerators) if accelerators is not None else list(
        pg.random_sample(nahas_space(), seed=seed, num_examples=max(4 * n, 50)))
    rng.shuffle(layers)
    pairs = []
    for layer in layers:
        fits = [acc for acc in pool if all(loop in layer.loop_sizes for loop in acc.dataflow)]
        if len(fits) < per_layer:
            continue
        pairs += [(layer, acc) for acc in rng.sample(fits, min(per_layer, n - len(pairs)))]
        if len(pairs) >= n:
            return pairs
    raise ValueError(f"only {len(pairs)} pairs: the backbones give too few layers for n={n}")


@dataclasses.dataclass
class RankReport:
    """Fast versus full (LOMA) costs of the same pairs."""

    fast_edp: List[float]
    full_edp: List[float]
    fast_seconds: List[float]
    full_seconds: List[float]
    spearman: float
    kendall: float
    within_layer_spearman: float   # mean over layers of the Spearman correlation across that layer's accelerators
    skipped: List[str]          # pairs one of the two could not map, with the reason

    @property
    def ratios(self) -> List[float]:
        return [f / g for f, g in zip(self.fast_edp, self.full_edp)]

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)


def fast_vs_full(pairs, fast: Optional[CostModel] = None, full: Optional[CostModel] = None,
                 log=None) -> RankReport:
    """Costs every pair with ``fast`` (default ``CostModel()``) and ``full`` (``CostModel(mapping="loma")``)."""
    from scipy import stats  # pylint: disable=import-outside-toplevel
    fast = fast or CostModel()
    full = full or CostModel(mapping="loma")
    rows, skipped = [], []
    for i, (layer, acc) in enumerate(pairs):
        try:
            start = time.perf_counter()
            a = fast.layer_cost(layer, acc)
            t_fast = time.perf_counter() - start
            start = time.perf_counter()
            b = full.layer_cost(layer, acc)
            t_full = time.perf_counter() - start
        except HardwareError as error:
            skipped.append(error.reason)
            continue
        rows.append((a.energy_pj * a.latency_cycles, b.energy_pj * b.latency_cycles, t_fast, t_full, layer.key()))
        if log:
            log(f"  {i + 1}/{len(pairs)} {layer.describe()} on {acc.describe()[:48]}: fast/full EDP "
                f"{rows[-1][0] / rows[-1][1]:.3f}, {t_fast * 1e3:.0f} ms vs {t_full:.1f} s")
    if len(rows) < 2:
        raise ValueError(f"only {len(rows)} pairs could be mapped both ways; skipped: {skipped[:3]}")
    fast_edp, full_edp, t_fast, t_full, keys = (list(c) for c in zip(*rows))
    groups = {}
    for f, g, key in zip(fast_edp, full_edp, keys):
        groups.setdefault(key, []).append((f, g))
    within = [float(stats.spearmanr(*zip(*group)).statistic) for group in groups.values() if len(group) >= 3
              and len({g for _, g in group}) > 1 and len({f for f, _ in group}) > 1]
    return RankReport(fast_edp, full_edp, t_fast, t_full, float(stats.spearmanr(fast_edp, full_edp).statistic),
                      float(stats.kendalltau(fast_edp, full_edp).statistic),
                      statistics.mean(within) if within else float("nan"), skipped)
