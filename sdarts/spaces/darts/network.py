"""The discrete networks DARTS-space genotypes are retrained as (quark0/darts ``cnn/model.py``).

``NetworkCIFAR``: a 3C stem and ``layers`` cells, reductions at 1/3 and 2/3 of the depth, an
auxiliary head after the second reduction.  ``NetworkImageNet``: the same cells behind a stem
that downsamples 224x224 inputs by 8.  Both return ``(logits, aux_logits)``; ``aux_logits`` is
None unless training with an auxiliary head.  ``drop_path_prob`` (set by the trainer each
epoch) drops whole non-identity paths of each sample.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn as nn

from ...primitives import DARTS, FactorizedReduce, ReLUConvBN
from .genotype import Genotype, parse_genotype, validate_genotype


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero each sample's path with probability ``drop_prob`` and rescale the kept ones."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


def reduction_cells(layers: int) -> Tuple[int, int]:
    """Indices of the two reduction cells of a ``layers``-cell DARTS stack (search and discrete)."""
    return layers // 3, 2 * layers // 3


class Cell(nn.Module):
    """One genotype cell: node i = op(state a) + op(state b), output = concat of ``concat`` states."""

    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        gene, concat = (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)
        self.indices = [index for _, index in gene]
        self.concat = list(concat)
        self.multiplier = len(self.concat)
        self.ops = nn.ModuleList(
            DARTS.build_op(name, C, C, 2 if reduction and index < 2 else 1, affine=True) for name, index in gene
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = 0
            for k in (2 * node, 2 * node + 1):
                op = self.ops[k]
                h = op(states[self.indices[k]])
                # Identity paths are never dropped, as in DARTS.
                if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8x8 feature map after the second reduction."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier on the 14x14 map; no BN after the 768 conv, as in DARTS' experiments."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class CifarStem(nn.Module):
    """3x3 conv + BN at full resolution; both first cells read its output."""

    def __init__(self, C_in: int, C: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(C_in, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s = self.conv(x)
        return s, s


class ImageNetStem(nn.Module):
    """Three stride-2 3x3 convs: s0 at 1/4 resolution (two convs), s1 at 1/8 (one more)."""

    def __init__(self, C_in: int, C: int):
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(C_in, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


class _Network(nn.Module):
    """Stem, cells, the auxiliary head after cell ``2 * layers // 3``, pooling and classifier."""

    def __init__(self, genotype: Genotype, C: int, num_classes: int, layers: int, auxiliary: bool,
                 stem: nn.Module, C_stem: int, aux_head):
        super().__init__()
        genotype = validate_genotype(genotype)
        for name, value in (("C", C), ("num_classes", num_classes), ("layers", layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if auxiliary and layers < 3:
            raise ValueError(f"an auxiliary head needs layers >= 3 (it sits after cell 2*layers//3), got layers={layers}")
        self.genotype = genotype
        self.layers = layers
        self.aux_position = reduction_cells(layers)[1]  # after the second reduction
        self.drop_path_prob = 0.0
        self.stem = stem
        # After the ImageNet stem s0 is at twice s1's resolution, as after a reduction.
        reduction_prev = isinstance(stem, ImageNetStem)
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        self.cells = nn.ModuleList()
        C_aux = None
        for i in range(layers):
            reduction = i in reduction_cells(layers)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.aux_position:
                C_aux = C_prev
        self.auxiliary_head = aux_head(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        aux_logits = None
        s0, s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, aux_logits


class NetworkCIFAR(_Network):
    def __init__(self, genotype: Genotype, C: int = 36, num_classes: int = 10, layers: int = 20,
                 auxiliary: bool = True, stem_multiplier: int = 3):
        super().__init__(genotype, C, num_classes, layers, auxiliary, CifarStem(3, stem_multiplier * C),
                         stem_multiplier * C, AuxiliaryHeadCIFAR)


class NetworkImageNet(_Network):
    """Global average pooling is adaptive, so inputs other than 224x224 work (same MACs at 224)."""

    def __init__(self, genotype: Genotype, C: int = 48, num_classes: int = 1000, layers: int = 14, auxiliary: bool = True):
        super().__init__(genotype, C, num_classes, layers, auxiliary, ImageNetStem(3, C), C, AuxiliaryHeadImageNet)


NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}

def build_network(genotype: Union[Genotype, str, dict], dataset: str = "cifar10", C: int = 36, layers: int = 20,
                  auxiliary: bool = True, drop_path_prob: float = 0.0, num_classes: Optional[int] = None):
    """The discrete network of ``genotype`` (anything :func:`parse_genotype` reads).

    ``dataset``: ``"cifar10"``/``"cifar100"`` give :class:`NetworkCIFAR` (32x32 inputs),
    ``"imagenet"`` :class:`NetworkImageNet` (224x224; the usual setting is C=48, layers=14).
    ``num_classes`` overrides the dataset's class count (for other data of the same shape).
    """
    if dataset not in NUM_CLASSES:
        raise ValueError(f"dataset must be one of {sorted(NUM_CLASSES)}, got {dataset!r}")
    if not 0.0 <= drop_path_prob < 1.0:
        raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob}")
    genotype = parse_genotype(genotype)
    num_classes = NUM_CLASSES[dataset] if num_classes is None else num_classes
    cls = NetworkImageNet if dataset == "imagenet" else NetworkCIFAR
    net = cls(genotype, C=C, num_classes=num_classes, layers=layers, auxiliary=auxiliary)
    net.drop_path_prob = drop_path_prob
    return net
