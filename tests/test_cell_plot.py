"""Pictures of derived cells (sdarts.plots): what is drawn, that it is readable, bad input."""

import itertools
import subprocess
import sys
from collections import Counter

import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from PIL import Image

from sdarts.nb201 import EDGES, NB201Cell
from sdarts.plots import OP_COLORS, draw_darts_cell, draw_darts_genotype, draw_nb201_cell, save_cell_picture
from sdarts.plots.cells import DARTS_INPUT_LABELS, DARTS_OUTPUT_LABEL, NB201_NODE_LABELS
from sdarts.spaces.darts.genotype import DARTS_V2, GENOTYPES

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = NB201Cell(("none",) * 6).tostr()
ALL_SKIP = NB201Cell(("skip_connect",) * 6).tostr()
MIXED = "|avg_pool_3x3~0|+|none~0|nor_conv_1x1~1|+|nor_conv_1x1~0|none~1|skip_connect~2|"
NB201_CELLS = [BEST, ALL_NONE, ALL_SKIP, MIXED]
DARTS_NODE_LABELS = [*DARTS_INPUT_LABELS, "0", "1", "2", "3", DARTS_OUTPUT_LABEL]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _texts(ax, prefix=None):
    return [t for t in ax.texts if prefix is None or (t.get_gid() or "").startswith(prefix)]


def _arrows(ax, prefix=None):
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    return [p for p in arrows if prefix is None or p.get_gid().startswith(prefix)]


def _check_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 50


def _check_readable(fig):
    """No two edge labels, and no edge label and node, overlap; everything lies inside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    for ax in fig.axes:
        labels = [t.get_bbox_patch().get_window_extent(renderer) for t in _texts(ax, "label")]
        nodes = [p.get_window_extent(renderer) for p in ax.patches if (p.get_gid() or "").startswith("node")]
        for a, b in itertools.combinations(labels, 2):
            assert not a.overlaps(b), f"labels overlap in {ax.get_title()!r}: {a} {b}"
        for a, b in itertools.product(labels, nodes):
            assert not a.overlaps(b), f"a label covers a node in {ax.get_title()!r}"
        for box in labels + nodes + [ax.title.get_window_extent(renderer)]:
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        for arrow, label in zip(_arrows(ax, "edge"), _texts(ax, "label")):  # one colour per op, arrow and label alike
            assert arrow.get_gid()[len("edge "):] == label.get_gid()[len("label "):]
            assert to_rgba(arrow.get_edgecolor()) == to_rgba(label.get_color()) == to_rgba(OP_COLORS[label.get_text()])


# -- NAS-Bench-201 -------------------------------------------------------------------------

@pytest.mark.parametrize("arch", NB201_CELLS, ids=["best", "all-none", "all-skip", "mixed"])
def test_nb201_picture(arch, tmp_path):
    cell = NB201Cell.from_str(arch)
    path = tmp_path / "new" / "folder" / "cell.png"
    assert save_cell_picture("nb201", arch, path) == str(path)
    _check_png(path)

    for given in (arch, cell):
        fig = draw_nb201_cell(given)
        (ax,) = fig.axes
        drawn = [(j, i, op) for op, (j, i) in zip(cell.ops, EDGES) if op != "none"]  # none edges are omitted
        ops = Counter(op for _, _, op in drawn)
        assert Counter(t.get_text() for t in ax.texts) == ops + Counter(NB201_NODE_LABELS)
        assert Counter(t.get_text() for t in _texts(ax, "label")) == ops
        assert [t.get_text() for t in _texts(ax, "node")] == list(NB201_NODE_LABELS)
        assert len(_arrows(ax)) == len(drawn)
        assert sorted(a.get_gid() for a in _arrows(ax)) == sorted(f"edge {j}<-{i}" for j, i, _ in drawn)
        assert ax.get_title().startswith("NAS-Bench-201 cell")
        _check_readable(fig)
    if arch == ALL_NONE:
        assert "every edge is none" in ax.get_title()


def test_nb201_overlapping_edges_are_curved():
    fig = draw_nb201_cell(ALL_SKIP)
    rad = {a.get_gid(): float(a.get_connectionstyle().rad) for a in _arrows(fig.axes[0])}
    assert all(rad[f"edge {i + 1}<-{i}"] == 0 for i in range(3))  # neighbours: straight
    assert all(rad[g] != 0 for g in ("edge 2<-0", "edge 3<-1", "edge 3<-0"))  # would run through a node
    assert len({rad["edge 2<-0"], rad["edge 3<-1"], rad["edge 3<-0"]}) == 3


def test_nb201_into_given_axes_and_title():
    fig = Figure()
    ax = fig.add_subplot()
    assert draw_nb201_cell(BEST, ax=ax, title="best cell") is fig
    assert ax.get_title() == "best cell"
    assert len(_arrows(ax)) == 6 and len(_texts(ax, "label")) == 6


# -- DARTS ---------------------------------------------------------------------------------

def _check_darts_axes(ax, gene, concat):
    ops = Counter(op for op, _ in gene)
    assert Counter(t.get_text() for t in _texts(ax, "label")) == ops
    assert Counter(t.get_text() for t in ax.texts) == ops + Counter(DARTS_NODE_LABELS)
    assert len(_arrows(ax, "edge")) == len(gene) == 8
    assert len(_arrows(ax, "concat")) == len(concat) == 4
    assert len(_arrows(ax)) == 12


def test_darts_genotype_picture(tmp_path):
    path = tmp_path / "pics" / "darts_v2.png"
    assert save_cell_picture("darts", DARTS_V2, path, dpi=80) == str(path)
    _check_png(path)
    assert save_cell_picture("DARTS", "DARTS_V2", tmp_path / "by_name.png")  # a name parse_genotype knows
    _check_png(tmp_path / "by_name.png")

    fig = draw_darts_genotype(DARTS_V2)
    normal, reduce = fig.axes
    assert (normal.get_title(), reduce.get_title()) == ("normal cell", "reduction cell")
    _check_darts_axes(normal, DARTS_V2.normal, DARTS_V2.normal_concat)
    _check_darts_axes(reduce, DARTS_V2.reduce, DARTS_V2.reduce_concat)
    _check_readable(fig)
    assert draw_darts_genotype(str(DARTS_V2), title="DARTS (2nd order)").get_suptitle() == "DARTS (2nd order)"


@pytest.mark.parametrize("which", ["normal", "reduce"])
def test_darts_one_cell(which):
    fig = draw_darts_cell(DARTS_V2, which=which)
    (ax,) = fig.axes
    _check_darts_axes(ax, getattr(DARTS_V2, which), getattr(DARTS_V2, f"{which}_concat"))
    assert ax.get_title() == {"normal": "normal cell", "reduce": "reduction cell"}[which]
    _check_readable(fig)
    fig = Figure()
    ax = fig.add_subplot()
    assert draw_darts_cell(DARTS_V2, which, ax=ax, title="mine") is fig and ax.get_title() == "mine"


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_published_genotypes_are_readable(name):
    fig = draw_darts_genotype(GENOTYPES[name])
    for ax, which in zip(fig.axes, ("normal", "reduce")):
        _check_darts_axes(ax, getattr(GENOTYPES[name], which), getattr(GENOTYPES[name], f"{which}_concat"))
    _check_readable(fig)


def test_no_pyplot(tmp_path):
    """Drawing and saving never import pyplot (so never pick or switch a backend)."""
    code = ("import sys, matplotlib; from sdarts.plots import save_cell_picture, draw_darts_genotype; "
            "draw_darts_genotype('DARTS_V2'); "
            f"save_cell_picture('nb201', {BEST!r}, sys.argv[1]); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    out = tmp_path / "a.png"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=300)
    _check_png(out)


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, arg", [
    (lambda p: save_cell_picture("nb999", BEST, p), ValueError, "space"),
    (lambda p: save_cell_picture(None, BEST, p), ValueError, "space"),
    (lambda p: save_cell_picture("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|", p), ValueError, "genotype_or_str"),
    (lambda p: save_cell_picture("nb201", BEST.replace("skip_connect", "conv_7x7"), p), ValueError, "genotype_or_str"),
    (lambda p: save_cell_picture("nb201", str(DARTS_V2), p), ValueError, "genotype_or_str"),
    (lambda p: save_cell_picture("darts", BEST, p), ValueError, "genotype_or_str"),
    (lambda p: save_cell_picture("darts", "Genotype(normal=[", p), ValueError, "genotype_or_str"),
    (lambda p: save_cell_picture("darts", "DARTS_V9", p), ValueError, "genotype_or_str"),
    (lambda p: save_cell_picture("nb201", BEST, p, dpi=0), ValueError, "dpi"),
    (lambda p: save_cell_picture("nb201", BEST, p, dpi=True), ValueError, "dpi"),
    (lambda p: save_cell_picture("nb201", BEST, p.parent), ValueError, "path"),
    (lambda p: draw_nb201_cell("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|"), ValueError, "cell"),
    (lambda p: draw_nb201_cell("not a cell"), ValueError, "cell"),
    (lambda p: draw_nb201_cell(42), TypeError, "cell"),
    (lambda p: draw_nb201_cell(BEST, ax="axes"), TypeError, "ax"),
    (lambda p: draw_darts_cell(DARTS_V2, which="both"), ValueError, "which"),
    (lambda p: draw_darts_cell("not a genotype"), ValueError, "genotype"),
    (lambda p: draw_darts_genotype(BEST), ValueError, "genotype"),
    (lambda p: draw_darts_genotype(3.5), TypeError, "genotype"),
])
def test_bad_input(call, exc, arg, tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(exc) as info:
        call(target)
    message = str(info.value)
    assert message.startswith(f"{arg}: ") and "\n" not in message, message
    assert not target.exists()
