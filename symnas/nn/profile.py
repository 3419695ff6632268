"""Model size and cost: parameter count and multiply-adds of one forward pass.

Example::

    module = sn.nn.Conv(8, 3).build((3, 32, 32))
    sn.nn.count_params(module), sn.nn.count_flops(module, (3, 32, 32))   # 216, 221184
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["count_params", "count_flops"]


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_flops(module: nn.Module, in_shape: Sequence[int]) -> int:
    """Multiply-adds of convolutions and linear layers for one example (the MobileNet
    "MAdds" convention; element-wise ops, norms and pooling are not counted)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inputs, output):
        nonlocal total
        per_output = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        total += output[0].numel() * per_output

    def linear_hook(m: nn.Linear, _inputs, output):
        nonlocal total
        total += output[0].numel() * m.in_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = module.training
    module.eval()
    try:
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        with torch.no_grad():
            module(torch.zeros((1,) + tuple(in_shape), device=device))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return int(total)
