"""``sdarts-plot RUN_DIR``: the figures of a search run, as PNG files.

* ``p_<alpha>.png``: p of every op on every edge over the epochs, one panel per edge (the
  Single-DARTS paper's Figure 4);
* ``dLdp_<alpha>.png``: the epoch-mean dL/dp of every op on the chosen edges (``--edges``;
  all by default) over the epochs (its Figure 3);
* ``loss_acc.png``: train and valid loss and accuracy of the supernet;
* ``benchmark.png``: the benchmark accuracies of each epoch's derived cell, when the run had a
  table;
* ``cell.png``: a picture of the last epoch's derived cell (NB201 cell; DARTS normal and
  reduction cells, drawn as the DARTS code's graphviz pictures, with matplotlib only).

Bad input (a missing or broken run directory, an output folder that cannot be written, a bad
``--dpi`` or ``--edges``) is one line on stderr naming the argument, exit status 2.
:func:`build_figures` returns the figures without writing them.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator  # noqa: E402

PROG = "sdarts-plot"
DPI_RANGE = (10, 600)  # below: a few pixels; above: hundreds of MB of canvas for the DARTS grid
MARKERS_UP_TO = 20  # epochs: up to this many, every point gets a marker
EVERY_EPOCH_TICK_UP_TO = 10  # epoch span: up to this, one tick per epoch
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")  # one per op, so that coinciding points stay apart


class PlotError(Exception):
    """Bad input: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage block), exit status 2."""

    def error(self, message: str):
        if message.startswith("argument "):  # "argument --dpi: ..." -> "--dpi: ...", like the other errors
            message = message[len("argument "):]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _dpi(text: str) -> int:
    lo, hi = DPI_RANGE
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"must be a whole number of dots per inch from {lo} to {hi}, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Write the figures of a sdarts-search run as PNG files: p per "
                "edge and op (Figure 4 of the Single-DARTS paper), dL/dp per op (Figure 3), losses and "
                "accuracies, and the benchmark accuracy of each epoch's derived cell.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a sdarts-search run directory (metrics.jsonl, config.json)")
    p.add_argument("--out", default=None, help="where to write the PNGs (default: RUN_DIR/plots)")
    p.add_argument("--edges", nargs="+", default=None, metavar="EDGE",
                   help="edges of the dL/dp figure, by name (e.g. 1<-0 3<-2) or row number; default: all")
    p.add_argument("--dpi", type=_dpi, default=120,
                   help=f"resolution of the PNGs, {DPI_RANGE[0]} to {DPI_RANGE[1]} (default: 120)")
    return p


# -- reading the run -----------------------------------------------------------------------

def _is_number(value) -> bool:
    return value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _check_matrices(record: dict, key: str, shape: Optional[Dict[str, Tuple[int, int]]]) -> Optional[str]:
    """What is wrong with ``record[key]`` (alpha -> edges x ops numbers, of ``shape`` when given), or None."""
    value = record.get(key)
    if not isinstance(value, dict) or not value:
        return f"has no {key!r} (alpha name -> edges x ops)"
    for alpha, rows in value.items():
        if (not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows)
                or len({len(r) for r in rows}) != 1 or not all(_is_number(v) for r in rows for v in r)):
            return f"has a {key}[{alpha!r}] that is not an edges x ops table of numbers"
    if shape is not None:
        got = {alpha: (len(rows), len(rows[0])) for alpha, rows in value.items()}
        if got != shape:
            return f"has a {key} of shape {got}, the first epoch's is {shape}"
    return None


def read_run(run_dir: str) -> List[dict]:
    """The epochs of ``run_dir``'s metrics.jsonl, checked; PlotError (naming RUN_DIR) when unusable."""
    if not os.path.exists(run_dir):
        raise PlotError(f"RUN_DIR: {run_dir} does not exist")
    if not os.path.isdir(run_dir):
        raise PlotError(f"RUN_DIR: {run_dir} is not a directory (give the run directory of sdarts-search --out)")
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise PlotError(f"RUN_DIR: no metrics.jsonl in {run_dir} (is it a sdarts-search run directory?)")
    records: List[dict] = []
    shape = None
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError as err:
                    raise PlotError(f"RUN_DIR: {path} line {number} is not JSON ({getattr(err, 'msg', err)})") from None
                problem = None
                if not isinstance(record, dict):
                    problem = "is not a JSON object"
                elif not isinstance(record.get("epoch"), int) or isinstance(record["epoch"], bool):
                    problem = "has no whole-number 'epoch'"
                else:
                    problem = _check_matrices(record, "p", shape) or _check_matrices(
                        record, "dL_dp", {a: (len(r), len(r[0])) for a, r in record["p"].items()})
                    for key in ("train_loss", "valid_loss", "train_acc", "valid_acc"):
                        if problem is None and not _is_number(record.get(key)):
                            problem = f"has a non-numeric {key!r}"
                if problem:
                    raise PlotError(f"RUN_DIR: {path} line {number} {problem} (is it a sdarts-search metrics file?)")
                shape = shape or {a: (len(r), len(r[0])) for a, r in record["p"].items()}
                records.append(record)
    except UnicodeDecodeError:
        raise PlotError(f"RUN_DIR: {path} is not text (is it a sdarts-search metrics file?)") from None
    except OSError as err:
        raise PlotError(f"RUN_DIR: cannot read {path}: {err.strerror or err}") from None
    if not records:
        raise PlotError(f"RUN_DIR: {path} has no epochs yet")
    return records


def _labels(run_dir: Optional[str], records: List[dict]) -> tuple:
    """(op names, {alpha: edge names}) from config.json when they fit the data, else generic ones."""
    first = records[0]["p"]
    n_ops = len(next(iter(first.values()))[0])
    generic = ([f"op {k}" for k in range(n_ops)], {name: [str(i) for i in range(len(rows))] for name, rows in first.items()})
    if run_dir is None:
        return generic
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            space = json.load(f)["space"]
        ops, edges = [str(o) for o in space["ops"]], {a: [str(e) for e in names] for a, names in space["edges"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return generic
    if len(ops) != n_ops or set(edges) != set(first) or any(len(edges[a]) != len(rows) for a, rows in first.items()):
        print(f"{PROG}: warning: config.json's space does not match metrics.jsonl; generic op and edge names", file=sys.stderr)
        return generic
    return ops, {a: edges[a] for a in first}


def _select_edges(wanted: Optional[Sequence[str]], edges: Sequence[str]) -> List[int]:
    if not wanted:
        return list(range(len(edges)))
    chosen = []
    for item in wanted:
        if item in edges:
            index = list(edges).index(item)
        elif item.isdigit() and int(item) < len(edges):
            index = int(item)
        else:
            raise PlotError(f"--edges: unknown edge {item!r}; edges are {', '.join(edges)} (or 0..{len(edges) - 1})")
        if index not in chosen:
            chosen.append(index)
    return chosen


# -- figures -------------------------------------------------------------------------------

def _value(v) -> float:
    return math.nan if v is None else float(v)


def _style(n_points: int, k: int = 0) -> dict:
    """Line style: with few epochs every point is a marker (one point alone is otherwise invisible)."""
    if n_points > MARKERS_UP_TO:
        return {"linewidth": 1.5}
    # Hollow, one shape per op: ops with the same value (common in the first epochs) stay visible on top of each other.
    return {"linewidth": 1.5, "marker": MARKERS[k % len(MARKERS)], "markersize": 8 if n_points <= 3 else 5,
            "markerfacecolor": "none", "markeredgewidth": 1.5}


def _epoch_axis(ax, epochs: Sequence[int], label: bool = True) -> None:
    """Whole-epoch ticks: one per epoch on short runs, a few round ones on long ones."""
    lo, hi = min(epochs), max(epochs)
    if hi - lo <= EVERY_EPOCH_TICK_UP_TO:
        ax.set_xlim(lo - 0.5, hi + 0.5)  # points off the frame; a single epoch gets a window around it
    # One label per epoch while they fit side by side (11 of 2 digits, 8 of 3), else at most 8 round ones.
    if (hi - lo + 1) * len(str(hi)) <= 24:
        ax.xaxis.set_major_locator(FixedLocator(list(range(lo, hi + 1))))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=7, integer=True, steps=[1, 2, 4, 5, 10]))
    if label:
        ax.set_xlabel("epoch")


def _plain_y(ax) -> None:
    """No '+2e-1' offset above the axis: p values on a 1-epoch run differ in the 4th digit."""
    try:
        ax.ticklabel_format(axis="y", useOffset=False)
    except AttributeError:  # not a ScalarFormatter
        pass


def _grid(n: int):
    cols = min(n, 3 if n <= 9 else 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows + 0.8), squeeze=False, sharex=True,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    # The lowest visible panel of each column carries the epoch labels (sharex hides the others').
    bottom = []
    for c in range(cols):
        r = max(r for r in range(rows) if r * cols + c < n)
        axes[r, c].xaxis.set_tick_params(labelbottom=True)
        bottom.append(axes[r, c])
    return fig, list(axes.flat[:n]), bottom


def _per_edge_figure(records, key: str, alpha: str, edge_idx: Sequence[int], edges, ops, ylabel: str, title: str) -> Figure:
    epochs = [r["epoch"] for r in records]
    fig, axes, bottom = _grid(len(edge_idx))
    for ax, e in zip(axes, edge_idx):
        if key == "dL_dp":
            ax.axhline(0.0, color="black", linewidth=0.6)
        for k, op in enumerate(ops):
            ax.plot(epochs, [_value(r[key][alpha][e][k]) for r in records], label=op, **_style(len(epochs), k))
        ax.set_title(f"edge {edges[e]}", fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _epoch_axis(ax, epochs, label=ax in bottom)
        _plain_y(ax)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(ops), 5), fontsize=9)
    fig.suptitle(f"{title}, {_span(epochs)}")
    return fig


def _span(epochs: Sequence[int]) -> str:
    return f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {min(epochs)}-{max(epochs)}"


def _loss_acc_figure(records) -> Figure:
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for k, split in enumerate(("train", "valid")):
        ax_loss.plot(epochs, [_value(r.get(f"{split}_loss")) for r in records], label=split, **_style(len(epochs), k))
        ax_acc.plot(epochs, [_value(r.get(f"{split}_acc")) for r in records], label=split, **_style(len(epochs), k))
    for ax, ylabel in ((ax_loss, "loss"), (ax_acc, "accuracy (%)")):
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        _epoch_axis(ax, epochs)
    fig.suptitle(f"supernet: search half (train) and other half (valid), {_span(epochs)}")
    return fig


def _benchmark_figure(records) -> Optional[Figure]:
    bench = [r.get("benchmark") if isinstance(r.get("benchmark"), dict) else None for r in records]
    if not any(bench):
        return None
    columns = [c for c, v in next(b for b in bench if b).items() if c != "index" and _is_number(v) and v is not None]
    if not columns:
        return None
    epochs = [r["epoch"] for r in records]
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    for k, c in enumerate(columns):
        # Always markers: an epoch whose cell was not looked up leaves a gap, and a point between gaps has no line.
        style = _style(len(epochs), k) if len(epochs) <= MARKERS_UP_TO else {"linewidth": 1.5, "marker": "o", "markersize": 2.5}
        ax.plot(epochs, [_value(b.get(c)) if b and _is_number(b.get(c)) else math.nan for b in bench], label=c, **style)
    ax.set_ylabel("benchmark accuracy (%)")
    ax.set_title(f"derived cell of each epoch in the benchmark table, {_span(epochs)}", fontsize=10)
    ax.grid(alpha=0.3)
    _epoch_axis(ax, epochs)
    fig.legend(loc="outside right center", fontsize=8)
    return fig


def build_figures(records: List[dict], run_dir: Optional[str] = None, edges: Optional[Sequence[str]] = None) -> Dict[str, Figure]:
    """{PNG file name: Figure} of checked ``records`` (see :func:`read_run`), in writing order.

    Op and edge names come from ``run_dir``'s config.json when given.  The caller closes the
    figures (``plt.close``).
    """
    ops, edge_names = _labels(run_dir, records)
    return _figures(records, ops, edge_names, {alpha: _select_edges(edges, names) for alpha, names in edge_names.items()})


def _figures(records, ops, edge_names, chosen) -> Dict[str, Figure]:
    figures: Dict[str, Figure] = {}
    try:
        for alpha, names in edge_names.items():
            figures[f"p_{alpha}.png"] = _per_edge_figure(records, "p", alpha, range(len(names)), names, ops, "p",
                                                         f"p = activation({alpha}) per edge")
            figures[f"dLdp_{alpha}.png"] = _per_edge_figure(records, "dL_dp", alpha, chosen[alpha], names, ops,
                                                            "dL/dp (epoch mean)", f"dL/dp per op ({alpha})")
        figures["loss_acc.png"] = _loss_acc_figure(records)
        bench = _benchmark_figure(records)
        if bench is not None:
            figures["benchmark.png"] = bench
    except BaseException:
        for fig in figures.values():
            plt.close(fig)
        raise
    return figures


# -- writing -------------------------------------------------------------------------------

def _output_dir(out_dir: Optional[str], run_dir: str) -> str:
    """Create the output folder; PlotError naming --out when it cannot be written."""
    where = out_dir if out_dir is not None else os.path.join(run_dir, "plots")
    what = f"{where} (the default, RUN_DIR/plots)" if out_dir is None else where
    if os.path.exists(where) and not os.path.isdir(where):
        raise PlotError(f"--out: {what} is a file, not a folder")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError as err:
        raise PlotError(f"--out: cannot create {what}: {err.strerror or err}") from None
    if not os.access(where, os.W_OK | os.X_OK):
        raise PlotError(f"--out: {what} is not writable")
    return where


def plot_run(run_dir: str, out_dir: Optional[str] = None, edges: Optional[Sequence[str]] = None, dpi: int = 120) -> List[str]:
    """Write the run's figures; returns their paths."""
    lo, hi = DPI_RANGE
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real) or not lo <= dpi <= hi:  # also catches nan
        raise PlotError(f"--dpi: must be a whole number of dots per inch from {lo} to {hi}, got {dpi!r}")
    records = read_run(run_dir)
    ops, edge_names = _labels(run_dir, records)
    chosen = {alpha: _select_edges(edges, names) for alpha, names in edge_names.items()}  # before creating --out
    out = _output_dir(out_dir, run_dir)
    figures = _figures(records, ops, edge_names, chosen)
    written: List[str] = []
    try:
        for name, fig in figures.items():
            path = os.path.join(out, name)
            try:
                fig.savefig(path, dpi=dpi)
            except OSError as err:
                raise PlotError(f"--out: cannot write {path}: {err.strerror or err}") from None
            written.append(path)
    finally:
        for fig in figures.values():
            plt.close(fig)
    cell = _cell_picture(run_dir, records, out, dpi)
    if cell is not None:
        written.append(cell)
    return written


def _cell_picture(run_dir: str, records: List[dict], out: str, dpi: int) -> Optional[str]:
    """``cell.png``: the run's derived cell (its last epoch's, by the run's own --derive rule)."""
    from ..plots.cells import save_cell_picture

    space = None
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            space = json.load(f)["args"]["space"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    genotype = records[-1].get("genotype")
    if space not in ("nb201", "darts") or not isinstance(genotype, str):
        return None  # a run without its config (or from before genotypes were logged): no picture
    path = os.path.join(out, "cell.png")
    try:
        return save_cell_picture(space, genotype, path, dpi=dpi)
    except OSError as err:
        raise PlotError(f"--out: cannot write {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise PlotError(f"RUN_DIR: its last genotype cannot be drawn ({err})") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = plot_run(args.run_dir, args.out, args.edges, args.dpi)
    except PlotError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
