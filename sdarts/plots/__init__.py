"""Pictures of derived cells, drawn with matplotlib alone (no graphviz).

:func:`draw_nb201_cell` draws a NAS-Bench-201 cell, :func:`draw_darts_cell` one cell of a
DARTS genotype in the style of the original DARTS code's graphviz drawing,
:func:`draw_darts_genotype` both of its cells side by side, and :func:`save_cell_picture`
writes either as a PNG.  Nothing here touches pyplot or the global matplotlib backend.
"""

from .cells import OP_COLORS, draw_darts_cell, draw_darts_genotype, draw_nb201_cell, save_cell_picture

__all__ = ["OP_COLORS", "draw_darts_cell", "draw_darts_genotype", "draw_nb201_cell", "save_cell_picture"]
