"""The search spaces by name, and what the search loop needs to know about each.

``build_supernet("nb201" | "darts", num_classes, **kwargs)`` builds a supernet;
:func:`get_space` gives its :class:`SearchSpace` record (candidate ops, edge names, how a
derived genotype prints and serialises).  Space modules are imported on first use, so
``import sdarts.spaces`` stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

from ..primitives import DARTS, NB201, PrimitiveSet
from .base import Supernet
from .nb201.genotype import EDGE_NAMES as NB201_EDGE_NAMES


def darts_edge_names(steps: int = 4) -> Tuple[str, ...]:
    """The DARTS cell's edge labels ("j<-i"), in alpha's row order."""
    # alpha's row order in DartsSupernet: node j (2..steps+1) takes every earlier state i < j.
    return tuple(f"{j}<-{i}" for j in range(2, steps + 2) for i in range(j))


def _nb201_str(genotype) -> str:
    return genotype.tostr()


def _darts_str(genotype) -> str:
    return str(genotype)


def _darts_json(genotype) -> object:
    from .darts.genotype import genotype_to_json

    return genotype_to_json(genotype)


@dataclass(frozen=True)
class SearchSpace:
    """One search space as the search loop and the plots see it.

    ``edges`` maps each alpha name to its edge labels (``"j<-i"``: node j from node i);
    ``derive_skips_none``: the derived genotype never picks ``none`` (DARTS), so neither does
    the summary's "strongest op per edge".
    """

    name: str
    module: str
    class_name: str
    primitives: PrimitiveSet
    edges: Dict[str, Tuple[str, ...]]
    derive_skips_none: bool
    genotype_str: Callable[[object], str]
    genotype_json: Callable[[object], object]

    def supernet_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.class_name)


SPACES: Dict[str, SearchSpace] = {
    "nb201": SearchSpace(
        "nb201", "sdarts.spaces.nb201.models", "NB201Supernet", NB201,
        edges={"alpha": NB201_EDGE_NAMES},
        derive_skips_none=False, genotype_str=_nb201_str, genotype_json=_nb201_str,
    ),
    "darts": SearchSpace(
        "darts", "sdarts.spaces.darts.supernet", "DartsSupernet", DARTS,
        edges={"alpha_normal": darts_edge_names(), "alpha_reduce": darts_edge_names()},
        derive_skips_none=True, genotype_str=_darts_str, genotype_json=_darts_json,
    ),
}


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise ValueError(f"space must be one of {sorted(SPACES)}, got {name!r}")
    return SPACES[name]


def build_supernet(space: str, num_classes: int, **kwargs) -> Supernet:
    """The supernet of ``space`` for ``num_classes`` classes; ``kwargs`` go to its constructor
    (``activation``, ``alpha_init``, ``backend``, ``fused``, and the space's own options)."""
    return get_space(space).supernet_class()(num_classes=num_classes, **kwargs)


__all__ = ["SPACES", "SearchSpace", "Supernet", "build_supernet", "darts_edge_names", "get_space"]
