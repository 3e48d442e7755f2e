"""Pictures of derived cells: NAS-Bench-201 cells and DARTS genotypes, as matplotlib figures.

NB201 (:func:`draw_nb201_cell`): nodes 0 (input) to 3 (output) from left to right; every edge
j<-i whose op is not ``none`` is an arrow i -> j labelled with its op.  ``none`` edges are
**omitted** (they add zeros); a cell whose every edge is ``none`` shows its four nodes alone
and says so in its title.  Edges that would run through a node (0->2, 1->3, 0->3) are curved.

DARTS (:func:`draw_darts_cell`, :func:`draw_darts_genotype`): as quark0/darts' ``visualize.py``
draws them with graphviz: the cell inputs c_{k-2} and c_{k-1}, the intermediate nodes 0..3,
each with its two incoming edges labelled with their op, and the output c_{k}, which
concatenates the states of the genotype's concat list (grey, unlabelled arrows).  Nodes are
laid out from left to right by depth (longest path from the inputs).

Each op has one colour (:data:`OP_COLORS`) in every picture: its arrows and its label's frame
and text.  A figure is a :class:`matplotlib.figure.Figure` with an Agg canvas of its own, made
without pyplot: drawing neither switches the backend nor leaves figures open in pyplot.  With
``ax=None`` the figure is sized so that one data unit is one inch and the labels, placed along
their edges clear of nodes, other labels and (where possible) other edges, do not overlap.
Drawn into a given ``ax``, the picture is scaled to fit it (labels keep their font size).

Artists carry gids, for whoever inspects a figure: node boxes and their texts ``node NAME``,
arrows ``edge TO<-FROM`` (op edges) or ``concat FROM`` (DARTS output edges), edge labels
``label TO<-FROM``; node names are 0..3 (NB201) or c_{k-2}, c_{k-1}, 0..3, c_{k} (DARTS).

Bad input is a ValueError (TypeError for the wrong kind of object) whose one-line message
names the argument.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

if TYPE_CHECKING:  # the space modules are imported on first use (as sdarts.spaces does)
    from ..spaces.darts.genotype import Genotype
    from ..spaces.nb201.genotype import NB201Cell

# One colour per op, the same in every picture (ops of both spaces; none is never drawn).
OP_COLORS: Dict[str, str] = {
    "none": "#b0b0b0",
    "skip_connect": "#2ca02c",
    "max_pool_3x3": "#1f77b4",
    "avg_pool_3x3": "#0f8b99",
    "sep_conv_3x3": "#d62728",
    "sep_conv_5x5": "#9467bd",
    "dil_conv_3x3": "#e0700b",
    "dil_conv_5x5": "#8c564b",
    "nor_conv_1x1": "#c9358f",
    "nor_conv_3x3": "#d62728",
}
OTHER_OP_COLOR = "#444444"  # an op not in OP_COLORS
CONCAT_COLOR = "#8c8c8c"  # DARTS: node -> c_{k} (graphviz's "gray" of visualize.py)
# visualize.py's node fills: darkseagreen2 (inputs), lightblue (intermediate), palegoldenrod (output).
NODE_COLORS = {"input": "#b4eeb4", "inner": "#add8e6", "output": "#eee8aa"}

NB201_NODE_LABELS: Tuple[str, ...] = ("0\ninput", "1", "2", "3\noutput")
DARTS_INPUT_LABELS: Tuple[str, str] = ("$c_{k-2}$", "$c_{k-1}$")
DARTS_OUTPUT_LABEL = "$c_{k}$"
NB201_TITLE = "NAS-Bench-201 cell"
DARTS_TITLES = {"normal": "normal cell", "reduce": "reduction cell"}

LABEL_FONTSIZE = 8
NODE_FONTSIZE = 10
TITLE_FONTSIZE = 11
DPI_RANGE = (10, 600)  # as sdarts-plot --dpi

_LABEL_PAD = 0.25  # edge-label frame padding, in font sizes
_COLUMN_GAP = 2.4  # inches between node columns: a label of 12 characters fits between two nodes
_ROW_GAP = 1.1  # inches between nodes of one DARTS column
_RADS = (0.0, -0.2, 0.2, -0.32, 0.32, -0.45, 0.45, -0.6, 0.6, -0.8, 0.8)  # arc3 bends tried, straightest first
_TS = (0.5, 0.42, 0.58, 0.34, 0.66, 0.27, 0.73)  # where along its edge a label may sit, best first


# -- geometry ------------------------------------------------------------------------------

@dataclass
class _Node:
    name: str
    label: str
    kind: str  # input / inner / output
    x: float
    y: float
    w: float = 0.0
    h: float = 0.0

    def box(self, margin: float = 0.0) -> Tuple[float, float, float, float]:
        return (self.x - self.w / 2 - margin, self.y - self.h / 2 - margin,
                self.x + self.w / 2 + margin, self.y + self.h / 2 + margin)


@dataclass
class _Edge:
    src: str
    dst: str
    op: Optional[str]  # None: a DARTS concat edge (no label)
    rad: float = 0.0
    label_xy: Optional[Tuple[float, float]] = None
    label_box: Optional[Tuple[float, float, float, float]] = None

    @property
    def gid(self) -> str:
        return f"edge {self.dst}<-{self.src}" if self.op is not None else f"concat {self.src}"


@dataclass
class _Picture:
    nodes: Dict[str, _Node]
    edges: List[_Edge]
    title: str
    bounds: Tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


class _Ruler:
    """Sizes of texts in inches, measured by the Agg renderer of a scratch figure."""

    def __init__(self):
        self.fig = Figure(dpi=72)
        self.renderer = FigureCanvasAgg(self.fig).get_renderer()

    def size(self, text: str, fontsize: float) -> Tuple[float, float]:
        t = self.fig.text(0, 0, text, fontsize=fontsize)
        try:
            bb = t.get_window_extent(self.renderer)
        finally:
            t.remove()
        return bb.width / 72.0, bb.height / 72.0


def _curve(a: _Node, b: _Node, rad: float, step: float = 0.04) -> np.ndarray:
    """Points of matplotlib's arc3 curve from a's centre to b's (a quadratic Bezier)."""
    p0, p2 = np.array([a.x, a.y]), np.array([b.x, b.y])
    d = p2 - p0
    c = (p0 + p2) / 2 + rad * np.array([d[1], -d[0]])
    n = max(21, int(np.hypot(*d) / step))
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t ** 2 * p2


def _inside(points: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)


def _visible(points: np.ndarray, a: _Node, b: _Node, margin: float = 0.15) -> np.ndarray:
    """The part of a curve away from its own end nodes (where curves into one node must meet)."""
    return points[~(_inside(points, a.box(margin)) | _inside(points, b.box(margin)))]


def _overlap(p, q) -> float:
    w = min(p[2], q[2]) - max(p[0], q[0])
    h = min(p[3], q[3]) - max(p[1], q[1])
    return w * h if w > 0 and h > 0 else 0.0


def _route(nodes: Dict[str, _Node], edges: Sequence[_Edge]) -> None:
    """Bend each edge (in order) as little as keeps it off other nodes and off earlier edges."""
    def blocked(e: _Edge) -> bool:
        a, b = nodes[e.src], nodes[e.dst]
        vis = _visible(_curve(a, b, 0.0), a, b)
        return any(_inside(vis, n.box(0.1)).any() for n in nodes.values() if n is not a and n is not b)

    # Edges that can be straight first, so that a bent one cannot push them into bends as well.
    edges = sorted(edges, key=blocked)
    drawn: List[Tuple[np.ndarray, _Node, _Node]] = []
    for e in edges:
        a, b = nodes[e.src], nodes[e.dst]
        best = None
        for rad in _RADS:
            vis = _visible(_curve(a, b, rad), a, b)
            hits = sum(bool(_inside(vis, n.box(0.1)).any()) for n in nodes.values() if n is not a and n is not b)
            close = 0
            for other, oa, ob in drawn:
                mine = vis
                for shared in {oa.name, ob.name} & {a.name, b.name}:  # edges into one node must meet there
                    near = nodes[shared].box(0.6)
                    mine, other = mine[~_inside(mine, near)], other[~_inside(other, near)]
                if len(mine) and len(other):
                    dist = np.sqrt(((mine[:, None, :] - other[None, :, :]) ** 2).sum(-1)).min(axis=1)
                    close += int((dist < 0.2).sum())
            cost = 1000 * hits + close + 60 * abs(rad)
            if best is None or cost < best[0]:
                best = (cost, rad, vis)
        e.rad = best[1]
        drawn.append((best[2], a, b))


def _place_labels(nodes: Dict[str, _Node], edges: Sequence[_Edge], ruler: _Ruler) -> None:
    """Put each op label on its edge where it covers no node, no other label and few other edges."""
    node_boxes = [n.box(0.1) for n in nodes.values()]
    curves = [_visible(_curve(nodes[e.src], nodes[e.dst], e.rad, step=0.02), nodes[e.src], nodes[e.dst]) for e in edges]
    placed: List[Tuple[float, float, float, float]] = []
    pad = 2 * _LABEL_PAD * LABEL_FONTSIZE / 72.0
    for k, e in enumerate(edges):
        if e.op is None:
            continue
        a, b = nodes[e.src], nodes[e.dst]
        w, h = ruler.size(e.op, LABEL_FONTSIZE)
        w, h = w + pad, h + pad
        full = _curve(a, b, e.rad, step=0.01)
        best = None
        for t in _TS:
            x, y = full[int(round(t * (len(full) - 1)))]
            box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
            grown = (box[0] - 0.04, box[1] - 0.04, box[2] + 0.04, box[3] + 0.04)
            cost = 1000 * sum(_overlap(box, nb) for nb in node_boxes) + 1000 * sum(_overlap(grown, pb) for pb in placed)
            cost += 0.3 * sum(int(_inside(c, grown).sum()) for i, c in enumerate(curves) if i != k)
            cost += 2 * abs(t - 0.5)
            if best is None or cost < best[0]:
                best = (cost, (float(x), float(y)), box)
        e.label_xy, e.label_box = best[1], best[2]
        placed.append(best[2])


def _finish(pic: _Picture, ruler: _Ruler, order: Sequence[_Edge]) -> _Picture:
    """Size the nodes, route the edges (in ``order``), place the labels and find the bounds."""
    for n in pic.nodes.values():
        w, h = ruler.size(n.label, NODE_FONTSIZE)
        n.w, n.h = max(w + 0.22, 0.42), max(h + 0.16, 0.36)
    _route(pic.nodes, order)
    _place_labels(pic.nodes, order, ruler)
    boxes = [n.box() for n in pic.nodes.values()] + [e.label_box for e in pic.edges if e.label_box]
    pts = [_curve(pic.nodes[e.src], pic.nodes[e.dst], e.rad) for e in pic.edges]
    lo = np.min([np.array(b[:2]) for b in boxes] + [p.min(axis=0) for p in pts], axis=0)
    hi = np.max([np.array(b[2:]) for b in boxes] + [p.max(axis=0) for p in pts], axis=0)
    m = 0.12
    pic.bounds = (float(lo[0]) - m, float(lo[1]) - m, float(hi[0]) + m, float(hi[1]) + m)
    return pic


def _nb201_picture(cell: NB201Cell, title: Optional[str], ruler: _Ruler) -> _Picture:
    from ..spaces.nb201.genotype import EDGES as NB201_EDGES

    kinds = ("input", "inner", "inner", "output")
    nodes = {str(i): _Node(str(i), NB201_NODE_LABELS[i], kinds[i], i * _COLUMN_GAP, 0.0) for i in range(4)}
    edges = [_Edge(str(i), str(j), op) for op, (j, i) in zip(cell.ops, NB201_EDGES) if op != "none"]
    if title is None:
        title = NB201_TITLE if edges else f"{NB201_TITLE}\n(every edge is none: the cell outputs zeros)"
    order = sorted(edges, key=lambda e: (int(e.dst) - int(e.src), int(e.dst)))  # short edges first: they stay straight
    return _finish(_Picture(nodes, edges, title), ruler, order)


def _darts_picture(gene: Sequence[Tuple[str, int]], concat: Sequence[int], title: str, ruler: _Ruler) -> _Picture:
    steps = len(gene) // 2
    names = {0: "c_{k-2}", 1: "c_{k-1}", **{2 + i: str(i) for i in range(steps)}}
    labels = {0: DARTS_INPUT_LABELS[0], 1: DARTS_INPUT_LABELS[1], **{2 + i: str(i) for i in range(steps)}}
    depth = {0: 0, 1: 0}
    for i in range(steps):
        depth[2 + i] = 1 + max(depth[j] for _, j in gene[2 * i:2 * i + 2])
    out_col = 1 + max(depth.values())
    ys: Dict[int, float] = {0: _ROW_GAP / 2, 1: -_ROW_GAP / 2}
    for col in range(1, out_col):
        # Each node as level with its inputs as _ROW_GAP between the nodes of its column allows:
        # fewer crossings, and a later column's node off the lines of the edges that pass it.
        want = {s: sum(ys[j] for _, j in gene[2 * (s - 2):2 * (s - 2) + 2]) / 2 for s in depth if depth[s] == col}
        members = sorted(want, key=lambda s: (-want[s], s))
        placed = []
        for s in members:
            placed.append(min(want[s], placed[-1] - _ROW_GAP) if placed else want[s])
        shift = (sum(want.values()) - sum(placed)) / len(placed)  # centre the column on what its nodes want
        for s, y in zip(members, placed):
            ys[s] = y + shift
    nodes = {names[s]: _Node(names[s], labels[s], "input" if s < 2 else "inner", depth[s] * _COLUMN_GAP, ys[s])
             for s in sorted(depth)}
    out_y = sum(ys[s] for s in concat) / len(concat)  # level with the states it concatenates
    nodes["c_{k}"] = _Node("c_{k}", DARTS_OUTPUT_LABEL, "output", out_col * _COLUMN_GAP, out_y)
    op_edges = [_Edge(names[j], names[2 + k // 2], op) for k, (op, j) in enumerate(gene)]
    concat_edges = [_Edge(names[s], "c_{k}", None) for s in concat]
    span = {id(e): depth[2 + k // 2] - depth[j] for k, (e, (_, j)) in enumerate(zip(op_edges, gene))}
    order = sorted(op_edges, key=lambda e: span[id(e)]) + sorted(concat_edges, key=lambda e: -nodes[e.src].x)
    return _finish(_Picture(nodes, op_edges + concat_edges, title), ruler, order)


# -- drawing -------------------------------------------------------------------------------

def _render(ax: Axes, pic: _Picture, ylim: Optional[Tuple[float, float]] = None) -> None:
    patches = {}
    for n in pic.nodes.values():
        x0, y0, _, _ = n.box()
        patch = FancyBboxPatch((x0, y0), n.w, n.h, boxstyle="round,pad=0,rounding_size=0.07",
                               facecolor=NODE_COLORS[n.kind], edgecolor="#333333", linewidth=1.0, zorder=3,
                               gid=f"node {n.name}")
        ax.add_patch(patch)
        patches[n.name] = patch
        ax.text(n.x, n.y, n.label, ha="center", va="center", fontsize=NODE_FONTSIZE, zorder=5, gid=f"node {n.name}",
                linespacing=1.1)
    for e in pic.edges:
        a, b = pic.nodes[e.src], pic.nodes[e.dst]
        color = CONCAT_COLOR if e.op is None else OP_COLORS.get(e.op, OTHER_OP_COLOR)
        ax.add_patch(FancyArrowPatch((a.x, a.y), (b.x, b.y), connectionstyle=f"arc3,rad={e.rad}", arrowstyle="-|>",
                                     mutation_scale=13, linewidth=1.2 if e.op is None else 1.6, color=color,
                                     patchA=patches[e.src], patchB=patches[e.dst], shrinkA=0, shrinkB=1, zorder=2,
                                     gid=e.gid))
        if e.op is not None:
            ax.text(*e.label_xy, e.op, ha="center", va="center", fontsize=LABEL_FONTSIZE, color=color, zorder=4,
                    gid=f"label {e.dst}<-{e.src}",
                    bbox=dict(boxstyle=f"round,pad={_LABEL_PAD}", facecolor="white", edgecolor=color, linewidth=0.8))
    x0, y0, x1, y1 = pic.bounds
    ax.set_xlim(x0, x1)
    ax.set_ylim(*(ylim or (y0, y1)))
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(pic.title, fontsize=TITLE_FONTSIZE)


def _figure(pics: Sequence[_Picture], ruler: _Ruler, suptitle: Optional[str] = None) -> Figure:
    """A figure of ``pics`` side by side, one inch per data unit, room for the titles."""
    side, gap, bottom = 0.1, 0.35, 0.1
    widths = []
    for p in pics:
        x0, y0, x1, y1 = p.bounds
        need = ruler.size(p.title, TITLE_FONTSIZE)[0] + 0.1
        if x1 - x0 < need:  # a title wider than its cell: widen the cell's axes around the cell
            grow = (need - (x1 - x0)) / 2
            p.bounds = (x0 - grow, y0, x1 + grow, y1)
        widths.append(p.bounds[2] - p.bounds[0])
    height = max(p.bounds[3] - p.bounds[1] for p in pics)
    top = max(ruler.size(p.title, TITLE_FONTSIZE)[1] for p in pics) + 0.2
    sup = ruler.size(suptitle, TITLE_FONTSIZE + 1)[1] + 0.2 if suptitle else 0.0
    fig_w = sum(widths) + 2 * side + gap * (len(pics) - 1)
    if suptitle:
        fig_w = max(fig_w, ruler.size(suptitle, TITLE_FONTSIZE + 1)[0] + 0.3)
    fig_h = height + top + sup + bottom
    fig = Figure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    x = (fig_w - (sum(widths) + gap * (len(pics) - 1))) / 2
    for p, w in zip(pics, widths):
        ax = fig.add_axes((x / fig_w, bottom / fig_h, w / fig_w, height / fig_h))
        y0, y1 = p.bounds[1], p.bounds[3]
        extra = (height - (y1 - y0)) / 2  # a shorter cell: same scale, centred
        _render(ax, p, ylim=(y0 - extra, y1 + extra))
        x += w + gap
    if suptitle:
        fig.suptitle(suptitle, fontsize=TITLE_FONTSIZE + 1, y=1 - 0.1 / fig_h, va="top")
    return fig


def _into(ax, pic: _Picture) -> Figure:
    if not isinstance(ax, Axes):
        raise TypeError(f"ax: must be a matplotlib Axes or None, got {type(ax).__name__}")
    _render(ax, pic)
    try:
        return ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10
        return ax.figure


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split("\n"))


def _title(title, arg: str = "title") -> Optional[str]:
    if title is not None and not isinstance(title, str):
        raise TypeError(f"{arg}: must be a str or None, got {type(title).__name__}")
    return title


# -- inputs --------------------------------------------------------------------------------

def _as_nb201_cell(cell, arg: str) -> NB201Cell:
    from ..spaces.nb201.genotype import NB201Cell

    if isinstance(cell, NB201Cell):
        return cell
    if not isinstance(cell, str):
        raise TypeError(f"{arg}: must be an NB201Cell or its benchmark string '|op~0|+|op~0|op~1|+|...|', "
                        f"got {type(cell).__name__}")
    if "Genotype(" in cell:
        raise ValueError(f"{arg}: got a DARTS genotype, not an NB201 cell "
                         "(draw it with draw_darts_cell, or space='darts')")
    try:
        return NB201Cell.from_str(cell)
    except (TypeError, ValueError) as err:
        msg = _one_line(err)
        if msg.startswith("arch_str "):
            msg = msg[len("arch_str "):]
        raise ValueError(f"{arg}: {msg.replace('arch_str', arg)}") from None


def _as_genotype(genotype, arg: str) -> Genotype:
    from ..spaces.darts.genotype import parse_genotype
    from ..spaces.nb201.genotype import NB201Cell

    if isinstance(genotype, str):
        try:
            NB201Cell.from_str(genotype)
        except ValueError:
            pass
        else:
            text = genotype.strip()
            shown = repr(text[:60] + ("..." if len(text) > 60 else ""))
            raise ValueError(f"{arg}: {shown} is an NB201 cell, not a DARTS genotype "
                             "(draw it with draw_nb201_cell, or space='nb201')")
    try:
        return parse_genotype(genotype)
    except ValueError as err:
        raise ValueError(f"{arg}: {_one_line(err)}") from None
    except TypeError as err:
        raise TypeError(f"{arg}: {_one_line(err)}") from None


def _check_which(which) -> str:
    if which not in DARTS_TITLES:
        raise ValueError(f"which: must be 'normal' or 'reduce', got {which!r}")
    return which


# -- public --------------------------------------------------------------------------------

def draw_nb201_cell(cell: Union[NB201Cell, str], ax: Optional[Axes] = None, title: Optional[str] = None) -> Figure:
    """A picture of a NAS-Bench-201 cell (an :class:`NB201Cell` or its ``|op~0|+|...|`` string).

    Nodes 0 (input) to 3 (output) from left to right, one labelled arrow per edge that is not
    ``none`` (``none`` edges are omitted).  Drawn into ``ax`` when given (its figure is
    returned), else into a new figure of its own.  ``title`` defaults to "NAS-Bench-201 cell".
    """
    cell = _as_nb201_cell(cell, "cell")
    ruler = _Ruler()
    pic = _nb201_picture(cell, _title(title), ruler)
    return _figure([pic], ruler) if ax is None else _into(ax, pic)


def draw_darts_cell(genotype, which: str = "normal", ax: Optional[Axes] = None, title: Optional[str] = None) -> Figure:
    """A picture of the normal or the reduction cell of a DARTS genotype.

    ``genotype``: a :class:`~sdarts.spaces.darts.genotype.Genotype`, or anything
    :func:`~sdarts.spaces.darts.genotype.parse_genotype` reads (a name such as "DARTS_V2",
    ``Genotype(...)`` text, JSON, a file).  Inputs c_{k-2} and c_{k-1} on the left, the
    intermediate nodes by depth, the output c_{k} on the right.  ``title`` defaults to
    "normal cell" or "reduction cell".
    """
    which = _check_which(which)
    genotype = _as_genotype(genotype, "genotype")
    ruler = _Ruler()
    if which == "normal":
        gene, concat = genotype.normal, genotype.normal_concat
    else:
        gene, concat = genotype.reduce, genotype.reduce_concat
    pic = _darts_picture(gene, concat, _title(title) or DARTS_TITLES[which], ruler)
    return _figure([pic], ruler) if ax is None else _into(ax, pic)


def draw_darts_genotype(genotype, title: Optional[str] = None) -> Figure:
    """Both cells of a DARTS genotype side by side (normal left, reduction right), in a new
    figure; ``title``, when given, goes above both."""
    genotype = _as_genotype(genotype, "genotype")
    ruler = _Ruler()
    pics = [_darts_picture(genotype.normal, genotype.normal_concat, DARTS_TITLES["normal"], ruler),
            _darts_picture(genotype.reduce, genotype.reduce_concat, DARTS_TITLES["reduce"], ruler)]
    return _figure(pics, ruler, suptitle=_title(title))


def save_cell_picture(space: str, genotype_or_str, path: Union[str, os.PathLike], dpi: int = 120) -> str:
    """Write the picture of a derived cell as a PNG at ``path`` (parent folders are created);
    returns the path.

    ``space`` "nb201": ``genotype_or_str`` is an NB201 cell or its string (:func:`draw_nb201_cell`);
    "darts": a DARTS genotype in any form :func:`draw_darts_cell` takes, drawn with both cells
    (:func:`draw_darts_genotype`).  ``dpi``: 10 to 600.
    """
    kind = space.strip().lower() if isinstance(space, str) else None
    if kind not in ("nb201", "darts"):
        raise ValueError(f"space: must be 'nb201' or 'darts', got {space!r}")
    lo, hi = DPI_RANGE
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real) or not lo <= dpi <= hi:  # also catches nan
        raise ValueError(f"dpi: must be a number of dots per inch from {lo} to {hi}, got {dpi!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        raise ValueError(f"path: {path!r} is a folder (or empty); give the PNG file to write")
    if kind == "nb201":
        fig = draw_nb201_cell(_as_nb201_cell(genotype_or_str, "genotype_or_str"))
    else:
        fig = draw_darts_genotype(_as_genotype(genotype_or_str, "genotype_or_str"))
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png", facecolor="white")
    except OSError as err:
        raise ValueError(f"path: cannot write {path}: {err.strerror or err}") from None
    return path
