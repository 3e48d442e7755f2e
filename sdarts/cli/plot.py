"""``sdarts-plot RUN_DIR``: the figures of a search run, as PNG files.

* ``p_<alpha>.png``: p of every op on every edge over the epochs, one panel per edge (the
  Single-DARTS paper's Figure 4);
* ``dLdp_<alpha>.png``: the epoch-mean dL/dp of every op on the chosen edges (``--edges``;
  all by default) over the epochs (its Figure 3);
* ``loss_acc.png``: train and valid loss and accuracy of the supernet;
* ``benchmark.png``: the benchmark accuracies of each epoch's derived cell, when the run had a
  table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..search.metrics import read_metrics  # noqa: E402

PROG = "sdarts-plot"


class PlotError(Exception):
    """Bad input: one line on stderr, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Write the figures of a sdarts-search run as PNG files: p per "
                                "edge and op (Figure 4 of the Single-DARTS paper), dL/dp per op (Figure 3), losses and "
                                "accuracies, and the benchmark accuracy of each epoch's derived cell.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a sdarts-search run directory (metrics.jsonl, config.json)")
    p.add_argument("--out", default=None, help="where to write the PNGs (default: RUN_DIR/plots)")
    p.add_argument("--edges", nargs="+", default=None, metavar="EDGE",
                   help="edges of the dL/dp figure, by name (e.g. 1<-0 3<-2) or row number; default: all")
    p.add_argument("--dpi", type=int, default=120, help="resolution of the PNGs (default: 120)")
    return p


def _labels(run_dir: str, records: List[dict]) -> tuple:
    """(op names, {alpha: edge names}) from config.json, or generic ones from the data's shape."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            space = json.load(f)["space"]
        return space["ops"], space["edges"]
    except (OSError, ValueError, KeyError):
        first = records[0]["p"]
        ops = [f"op {k}" for k in range(len(next(iter(first.values()))[0]))]
        return ops, {name: [f"edge {i}" for i in range(len(rows))] for name, rows in first.items()}


def _grid(n: int):
    cols = min(n, 3 if n <= 9 else 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharex=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def _save(fig, out_dir: str, name: str, dpi: int, written: List[str]) -> None:
    path = os.path.join(out_dir, name)
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    written.append(path)


def _per_edge_figure(records, key: str, alpha: str, edge_idx: Sequence[int], edges, ops, ylabel: str, title: str):
    epochs = [r["epoch"] for r in records]
    fig, axes = _grid(len(edge_idx))
    for ax, e in zip(axes, edge_idx):
        for k, op in enumerate(ops):
            ax.plot(epochs, [r[key][alpha][e][k] for r in records], label=op, linewidth=1.5)
        ax.set_title(f"edge {edges[e]}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if key == "dL_dp":
            ax.axhline(0.0, color="black", linewidth=0.6)
    handles, names = fig.axes[0].get_legend_handles_labels()
    # Below the panels; savefig(bbox_inches="tight") keeps it in the picture.
    fig.legend(handles, names, loc="upper center", ncol=min(len(ops), 5), fontsize=9, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title)
    return fig


def _select_edges(wanted: Optional[Sequence[str]], edges: Sequence[str]) -> List[int]:
    if not wanted:
        return list(range(len(edges)))
    chosen = []
    for item in wanted:
        if item in edges:
            chosen.append(list(edges).index(item))
        elif item.isdigit() and int(item) < len(edges):
            chosen.append(int(item))
        else:
            raise PlotError(f"--edges: unknown edge {item!r}; edges are {', '.join(edges)} (or 0..{len(edges) - 1})")
    return chosen


def plot_run(run_dir: str, out_dir: Optional[str] = None, edges: Optional[Sequence[str]] = None, dpi: int = 120) -> List[str]:
    """Write the run's figures; returns their paths."""
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise PlotError(f"no metrics.jsonl in {run_dir} (is it a sdarts-search run directory?)")
    try:
        records = read_metrics(metrics)
    except ValueError as err:
        raise PlotError(str(err)) from None
    if not records:
        raise PlotError(f"{metrics} has no epochs yet")
    ops, edge_names = _labels(run_dir, records)
    chosen = {alpha: _select_edges(edges, names) for alpha, names in edge_names.items()}
    out_dir = out_dir or os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    written: List[str] = []

    for alpha, names in edge_names.items():
        fig = _per_edge_figure(records, "p", alpha, range(len(names)), names, ops, "p", f"p = activation({alpha}) per edge")
        _save(fig, out_dir, f"p_{alpha}.png", dpi, written)
        fig = _per_edge_figure(records, "dL_dp", alpha, chosen[alpha], names, ops, "dL/dp (epoch mean)", f"dL/dp per op ({alpha})")
        _save(fig, out_dir, f"dLdp_{alpha}.png", dpi, written)

    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split in ("train", "valid"):
        ax_loss.plot(epochs, [r[f"{split}_loss"] if r[f"{split}_loss"] is not None else math.nan for r in records], label=split)
        ax_acc.plot(epochs, [r[f"{split}_acc"] for r in records], label=split)
    for ax, ylabel in ((ax_loss, "loss"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("supernet: search half (train) and other half (valid)")
    _save(fig, out_dir, "loss_acc.png", dpi, written)

    bench = [r.get("benchmark") for r in records]
    if any(bench):
        columns = [c for c in next(b for b in bench if b) if c != "index"]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for c in columns:
            ax.plot(epochs, [b[c] if b else math.nan for b in bench], marker="o", markersize=3, label=c)
        ax.set_xlabel("epoch")
        ax.set_ylabel("benchmark accuracy of the derived cell (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _save(fig, out_dir, "benchmark.png", dpi, written)
    return written


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
