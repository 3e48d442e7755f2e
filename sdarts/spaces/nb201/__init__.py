"""The NAS-Bench-201 search space: its supernet and the network the benchmark trained
(``models``), its cell type (``genotype``) and its accuracy table (``table``).
``sdarts.nb201`` is its public face."""

from .genotype import EDGE_NAMES, EDGES, OPS, NB201Cell
from .models import InferCell, NB201Network, NB201Supernet, ResNetBasicBlock, SearchCell, build_network
from .table import ACCURACY_COLUMNS, CellNotInTable, NB201Table, default_table_path

__all__ = [
    "ACCURACY_COLUMNS", "CellNotInTable", "EDGES", "EDGE_NAMES", "InferCell", "NB201Cell", "NB201Network", "NB201Supernet",
    "NB201Table", "OPS", "ResNetBasicBlock", "SearchCell", "build_network", "default_table_path",
]
