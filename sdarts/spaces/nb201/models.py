"""The NAS-Bench-201 search space: the supernet, and the discrete network the benchmark trained.

Both share the benchmark's macro skeleton: a 3x3 conv stem, three stages of N cells separated
by stride-2 ResNet basic blocks (C -> 2C -> 4C), then BN-ReLU, global average pooling and a
linear classifier.  The supernet's cells put a :class:`~sdarts.MixedOp` on each of the 6 edges,
all cells sharing one (6, 5) alpha; the discrete cells keep one operation per edge.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...mixed_op import MixedOp
from ...primitives import NB201, ReLUConvBN
from ..base import DERIVE_RULES, Supernet
from .genotype import EDGE_NAMES, EDGES, NUM_NODES, NB201Cell


class ResNetBasicBlock(nn.Module):
    """The stride-2 block between stages: two ReLU-Conv-BN 3x3 plus an avg-pool + 1x1 shortcut."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class SearchCell(nn.Module):
    """4 nodes, one :class:`MixedOp` per edge; node j = sum of its edges from nodes i < j."""

    def __init__(self, C: int, edge_options: Dict[str, Any]):
        """``edge_options``: MixedOp's keyword options (backend, fused, recompute, edge_kernels)."""
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(C, 1, NB201, **edge_options) for _ in EDGES)
        # One ReLU per node, shared by every edge leaving it (each edge would compute its own).
        self.share_relu = all(edge.wants_relu for edge in self.edges)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # One view per edge and cell, so an edge asked to keep its dL/dp (keep_weight_grad) sees only its own.
        w = weights.unbind(0)
        nodes = [x]
        relus = []
        for j in range(1, NUM_NODES):
            relus.append(F.relu(nodes[-1]) if self.share_relu else None)  # node j-1 feeds edges from here on
            first = j * (j - 1) // 2  # index of edge (j <- 0)
            node = self.edges[first](x, w[first], relus[0])
            for i in range(1, j):
                node = node + self.edges[first + i](nodes[i], w[first + i], relus[i])
            nodes.append(node)
        return nodes[-1]


class InferCell(nn.Module):
    """A discrete cell as the benchmark trained it; ``none`` edges are simply absent."""

    def __init__(self, cell: NB201Cell, C: int):
        super().__init__()
        self.cell = cell
        live = [(e, op) for e, op in enumerate(cell.ops) if op != "none"]
        self.layers = nn.ModuleList(NB201.build_op(op, C, C, 1) for _, op in live)
        # Per node 1..3: the (layer index, input node) pairs that feed it.
        self.inputs: List[List[Tuple[int, int]]] = [
            [(k, EDGES[e][1]) for k, (e, _) in enumerate(live) if EDGES[e][0] == j] for j in range(1, NUM_NODES)
        ]

    def forward(self, x):
        nodes = [x]
        for feeds in self.inputs:
            if feeds:
                node = self.layers[feeds[0][0]](nodes[feeds[0][1]])
                for k, i in feeds[1:]:
                    node = node + self.layers[k](nodes[i])
            else:
                # Only `none` edges: the benchmark's Zero ops make this node exactly 0.
                node = torch.zeros_like(x)
            nodes.append(node)
        return nodes[-1]

    def extra_repr(self) -> str:
        return self.cell.tostr()


def _skeleton(C: int, N: int, make_cell: Callable[[int], nn.Module]) -> Tuple[nn.ModuleList, int]:
    """N cells, a reduction block, N cells, a reduction block, N cells; returns (cells, C_out)."""
    cells = nn.ModuleList()
    C_prev = C
    for stage, C_stage in enumerate((C, 2 * C, 4 * C)):
        if stage:
            cells.append(ResNetBasicBlock(C_prev, C_stage))
        cells.extend(make_cell(C_stage) for _ in range(N))
        C_prev = C_stage
    return cells, C_prev


def _check_sizes(num_classes: int, C: int, N: int) -> None:
    for name, value in (("num_classes", num_classes), ("C", C), ("N", N)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class _NB201Macro(nn.Module):
    """Stem, cells and head of the NB201 network; subclasses decide what a cell is."""

    def _build(self, num_classes: int, C: int, N: int, make_cell: Callable[[int], nn.Module]) -> None:
        _check_sizes(num_classes, C, N)
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells, C_out = _skeleton(C, N, make_cell)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_out), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_out, num_classes)

    def _head(self, x):
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


class NB201Supernet(_NB201Macro, Supernet):
    """The NAS-Bench-201 supernet (TinyNetworkDarts' shape), one alpha shared by all cells.

    Args:
        num_classes: classifier outputs (10 for CIFAR-10, 100, 120 for ImageNet16-120).
        C: stem channels (16 in the benchmark); stages have C, 2C, 4C.
        N: search cells per stage (5 in the benchmark).
        activation: ``"sigmoid"`` (Single-DARTS) or ``"softmax"`` (DARTS) on alpha.
        alpha_init: initial alpha value (default: p = 1/5 for sigmoid, 0 for softmax).
        backend, fused, recompute, edge_kernels: passed to every :class:`~sdarts.MixedOp`.
    """

    def __init__(
        self,
        num_classes: int = 10,
        C: int = 16,
        N: int = 5,
        activation: str = "sigmoid",
        alpha_init: Optional[float] = None,
        backend: str = "auto",
        fused: bool = True,
        recompute: bool = False,
        edge_kernels: str = "auto",
    ):
        super().__init__(activation=activation, alpha_init=alpha_init)
        edge = dict(backend=backend, fused=fused, recompute=recompute, edge_kernels=edge_kernels)
        self._build(num_classes, C, N, lambda C_cell: SearchCell(C_cell, edge))
        self.add_alpha("alpha", len(EDGES), len(NB201))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.arch_weights()["alpha"]
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights) if isinstance(cell, SearchCell) else cell(x)
        return self._head(x)

    def genotype(self, derive: str = "argmax") -> NB201Cell:
        """The derived cell: the most probable operation per edge, ``none`` included (``derive=
        "argmax"``, as NB201 does) or never ``none`` (``"exclude-none"``; see ``DERIVE_RULES``)."""
        p = self.probabilities()["alpha"]
        if derive == "exclude-none":
            p = p.masked_fill(torch.tensor([name == "none" for name in NB201.names]), float("-inf"))
        elif derive != "argmax":
            raise ValueError(f"derive must be one of {', '.join(DERIVE_RULES)}, got {derive!r}")
        return NB201Cell.from_ops([NB201.names[k] for k in p.argmax(dim=-1).tolist()])

    @staticmethod
    def edge_names() -> List[str]:
        """Alpha row names, e.g. ``"2<-1"``, in the benchmark's edge order."""
        return list(EDGE_NAMES)


class NB201Network(_NB201Macro):
    """A discrete NAS-Bench-201 network, exactly as the benchmark trained it (returns logits)."""

    def __init__(self, cell: NB201Cell, num_classes: int = 10, C: int = 16, N: int = 5):
        super().__init__()
        self.cell = cell
        self._build(num_classes, C, N, lambda C_cell: InferCell(cell, C_cell))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self._head(x)


def build_network(arch: Union[str, NB201Cell], num_classes: int = 10, C: int = 16, N: int = 5) -> NB201Network:
    """The benchmark's network for a cell given as an :class:`NB201Cell` or its benchmark string."""
    return NB201Network(NB201Cell.parse(arch), num_classes=num_classes, C=C, N=N)
