"""Everything NAS-Bench-201 in one import: the search space, its cells, the networks the
benchmark trained, and its accuracy table.

    from sdarts.nb201 import NB201Supernet, NB201Cell, NB201Table, build_network
"""

from .benchmark_table import ACCURACY_COLUMNS, CellNotInTable, NB201Table, default_table_path
from .spaces.nb201 import InferCell, NB201Network, NB201Supernet, ResNetBasicBlock, SearchCell, build_network
from .spaces.nb201_genotype import EDGE_NAMES, EDGES, OPS, NB201Cell

__all__ = [
    "ACCURACY_COLUMNS",
    "CellNotInTable",
    "NB201Table",
    "default_table_path",
    "InferCell",
    "NB201Network",
    "NB201Supernet",
    "ResNetBasicBlock",
    "SearchCell",
    "build_network",
    "EDGE_NAMES",
    "EDGES",
    "OPS",
    "NB201Cell",
]
