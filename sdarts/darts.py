"""The DARTS search space in one import: supernet, genotypes and the discrete networks.

    from sdarts.darts import DartsSupernet, GENOTYPES, build_network
    net = build_network(GENOTYPES["DARTS_V2"], dataset="cifar10")   # 3.35M parameters
"""

from __future__ import annotations

from typing import Optional, Union

from .darts_network import NetworkCIFAR, NetworkImageNet
from .spaces.darts import DartsSupernet
from .spaces.darts_genotype import (
    GENOTYPES,
    Genotype,
    derive_genotype,
    genotype_from_json,
    genotype_to_json,
    parse_genotype,
)
from .train.complexity import count_macs, count_parameters

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}

__all__ = [
    "DartsSupernet", "GENOTYPES", "Genotype", "NetworkCIFAR", "NetworkImageNet", "build_network",
    "count_macs", "count_parameters", "derive_genotype", "genotype_from_json", "genotype_to_json",
    "parse_genotype",
]


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
