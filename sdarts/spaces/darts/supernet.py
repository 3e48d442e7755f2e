"""The DARTS search space: a stack of normal and reduction cells whose 14 edges are mixed ops.

As quark0/darts ``cnn/model_search.py``: each cell takes the outputs of the two previous cells,
has ``steps`` intermediate nodes, each the sum of mixed edges from every earlier state, and
outputs the concatenation of the last ``multiplier`` nodes.  Cells at ``layers // 3`` and
``2 * layers // 3`` reduce (stride 2, channels doubled).  All normal cells share
``alpha_normal`` and all reduction cells ``alpha_reduce``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .network import CifarStem, ImageNetStem, reduction_cells
from ...mixed_op import MixedOp
from ...primitives import DARTS, FactorizedReduce, ReLUConvBN
from ..base import DERIVE_RULES, Supernet
from .genotype import Genotype, derive_genotype


def num_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` intermediate nodes (node i has 2 + i inputs)."""
    return steps * (steps + 3) // 2


class SearchCell(nn.Module):
    def __init__(self, steps: int, multiplier: int, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool, edge_options: Dict[str, Any]):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        # The previous-previous state is twice as large when the previous cell reduced.
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(C, 2 if reduction and j < 2 else 1, DARTS, **edge_options)
            for i in range(steps)
            for j in range(2 + i)
        )

        # One ReLU per state, shared by every edge leaving it (each edge would compute its own).
        self.share_relu = all(edge.wants_relu for edge in self.edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        relus = [self._relu(h) for h in states]
        offset = 0
        for step in range(self.steps):
            states.append(sum(self.edges[offset + j](h, weights[offset + j], r) for j, (h, r) in enumerate(zip(states, relus))))
            offset += len(states) - 1
            relus.append(self._relu(states[-1]) if step + 1 < self.steps else None)  # the last node feeds no edge
        return torch.cat(states[-self.multiplier:], dim=1)

    def _relu(self, h: torch.Tensor) -> Optional[torch.Tensor]:
        return F.relu(h) if self.share_relu else None


class DartsSupernet(Supernet):
    """The DARTS supernet (CIFAR: C=16, 8 cells; ``imagenet_stem=True``: input downsampled by 8 first).

    Args:
        C: channels of the first cells (doubled at each reduction).
        num_classes: classifier outputs.
        layers: number of cells.
        steps: intermediate nodes per cell; multiplier: how many of them the cell outputs.
        stem_multiplier: the stem outputs ``stem_multiplier * C`` channels.
        activation: ``"sigmoid"`` (Single-DARTS) or ``"softmax"`` (DARTS) on alpha.
        alpha_init: initial alpha (default: every p starts at 1/8, see ``Supernet``).
        backend, fused, recompute, edge_kernels: passed to every :class:`sdarts.MixedOp`.
        imagenet_stem: three stride-2 3x3 convolutions before the cells, as PC-DARTS' ImageNet
            search network (for 224x224 inputs): s0 at 1/4, s1 at 1/8 resolution.
    """

    def __init__(self, C: int = 16, num_classes: int = 10, layers: int = 8, steps: int = 4, multiplier: int = 4,
                 stem_multiplier: int = 3, activation: str = "sigmoid", alpha_init: Optional[float] = None,
                 backend: str = "auto", fused: bool = True, imagenet_stem: bool = False,
                 recompute: bool = False, edge_kernels: str = "auto"):
        super().__init__(activation, alpha_init)
        for name, value in (("C", C), ("num_classes", num_classes), ("layers", layers), ("steps", steps),
                            ("multiplier", multiplier), ("stem_multiplier", stem_multiplier)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if multiplier > steps:
            raise ValueError(f"multiplier ({multiplier}) cannot exceed steps ({steps})")
        self.steps = steps
        self.multiplier = multiplier
        C_stem = stem_multiplier * C
        self.stem = ImageNetStem(3, C_stem) if imagenet_stem else CifarStem(3, C_stem)
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        edge = dict(backend=backend, fused=fused, recompute=recompute, edge_kernels=edge_kernels)
        self.cells = nn.ModuleList()
        # With the ImageNet stems s0 is at twice s1's resolution, as after a reduction.
        reduction_prev = imagenet_stem
        for i in range(layers):
            reduction = i in reduction_cells(layers)
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, edge))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self.add_alpha("alpha_normal", num_edges(steps), len(DARTS))
        self.add_alpha("alpha_reduce", num_edges(steps), len(DARTS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.arch_weights()
        s0, s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, p["alpha_reduce"] if cell.reduction else p["alpha_normal"])
        return self.classifier(self.global_pooling(s1).flatten(1))

    def genotype(self, derive: str = "exclude-none") -> Genotype:
        """The discrete cells DARTS derives from the current p (see ``derive_cell``); DARTS'
        rule never takes ``none``, so both ``DERIVE_RULES`` give this cell."""
        if derive not in DERIVE_RULES:
            raise ValueError(f"derive must be one of {', '.join(DERIVE_RULES)}, got {derive!r}")
        p = self.probabilities()
        return derive_genotype(p["alpha_normal"], p["alpha_reduce"], self.steps, self.multiplier, DARTS)
