"""MobileNetV2 search spaces from seed 004 (PyGlove): S1, S2 and S3 = S1 + S2.

- S1: the kernel size and expansion factor of every inverted bottleneck.
- S2: the output filters of every stage (a multiple of the base width, rounded to 8).
- S3: both.

Each function takes a static ``sn.nn.MobileNetV2`` (default: ``sn.nn.mobilenetv2()``) and
returns a copy whose fields are search points; use it as a Trainer's model.

Example::

    import pyglove as pg, symnas as sn
    space = sn.train.Trainer(model=sn.spaces.mobilenetv2_s1(sn.nn.mobilenetv2(0.25)),
                             data=sn.data.CIFAR10(), epochs=1)
    study = sn.search(space, algorithm=sn.algorithms.Reinforce(), num_trials=10)
"""
from typing import Any, Optional, Sequence

import pyglove as pg

__all__ = ["mobilenetv2_s1", "mobilenetv2_s2", "mobilenetv2_s3"]


def _base(base: Optional[Any]):
    if base is None:
        from symnas.nn.mobilenetv2 import mobilenetv2  # pylint: disable=import-outside-toplevel
        base = mobilenetv2()
    from symnas.nn.mobilenetv2 import MobileNetV2  # pylint: disable=import-outside-toplevel
    if not isinstance(base, MobileNetV2):
        raise TypeError(f"Expected a sn.nn.MobileNetV2, got {type(base).__name__}.")
    return base.clone(deep=True)


def _round8(value: float) -> int:
    return max(8, int(value + 4) // 8 * 8)


def mobilenetv2_s1(base: Optional[Any] = None, kernels: Sequence[int] = (3, 5, 7),
                   expansions: Sequence[int] = (3, 6)):
    """S1: ``pg.oneof(kernels)`` and ``pg.oneof(expansions)`` for each inverted bottleneck."""
    net = _base(base)
    updates = {}
    for i, stage in enumerate(net.stages):
        updates[f"stages[{i}].kernels"] = [pg.oneof(list(kernels)) for _ in stage.kernels]
        updates[f"stages[{i}].expansions"] = [pg.oneof(list(expansions)) for _ in stage.expansions]
    return net.rebind(updates)


def mobilenetv2_s2(base: Optional[Any] = None, multipliers: Sequence[float] = (0.5, 0.75, 1.0, 1.25)):
    """S2: the output filters of each stage, ``pg.oneof`` of the base width times ``multipliers``."""
    net = _base(base)
    updates = {}
    for i, stage in enumerate(net.stages):
        widths = sorted({_round8(stage.out_channels * m) for m in multipliers})
        updates[f"stages[{i}].out_channels"] = pg.oneof(widths)
    return net.rebind(updates)


def mobilenetv2_s3(base: Optional[Any] = None, kernels: Sequence[int] = (3, 5, 7),
                   expansions: Sequence[int] = (3, 6),
                   multipliers: Sequence[float] = (0.5, 0.75, 1.0, 1.25)):
    """S3 = S1 + S2."""
    return mobilenetv2_s2(mobilenetv2_s1(base, kernels, expansions), multipliers)
