"""Model size the way NAS papers report it: parameters and multiply-adds of one image."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


def count_parameters(model: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Number of parameters; the auxiliary head is excluded by default, as in DARTS'
    ``count_parameters_in_MB`` (the head is dropped after training)."""
    return sum(p.numel() for name, p in model.named_parameters() if not (exclude_auxiliary and "auxiliary" in name))


def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-adds of Conv2d and Linear layers for one image of ``input_size`` = (C, H, W).

    Counted by forward hooks during one eval-mode forward (so an auxiliary head, which only
    runs in training, is not counted); BN, pooling, activations and biases are not counted,
    which is the convention of the DARTS-family papers.
    """
    if len(input_size) != 3 or any(not isinstance(s, int) or s < 1 for s in input_size):
        raise ValueError(f"input_size must be (C, H, W) positive ints, got {tuple(input_size)}")
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
