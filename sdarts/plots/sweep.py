"""A sweep's comparison figures (the Single-DARTS paper's Figures 1-4) and its best cell.

Each figure overlays the sweep's groups (runs that differ only in their seed): a line is the
mean over the group's runs at each epoch (every run that reached that epoch, finished or
not), the band its min-max over seeds.  Matplotlib only (``Figure`` objects, no pyplot state).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MAX_GROUPS_PER_FIGURE = 8  # beyond this a legend is unreadable: the first ones are drawn, the title says so
FEW_EPOCHS = 2
FIG4_GROUPS = 4  # Figure 4 (p per op per edge) is one figure per group: at most this many


def _groups(reports) -> Dict[str, List[Any]]:
    groups: Dict[str, List[Any]] = {}
    for r in reports:
        if r.records:
            groups.setdefault(r.group, []).append(r)
    return groups


def _series(runs, value: Callable[[Dict[str, Any]], Optional[float]]):
    """epochs, mean, min, max over the runs of ``value(record)`` (None values left out)."""
    by_epoch: Dict[int, List[float]] = {}
    for r in runs:
        for rec in r.records:
            v = value(rec)
            if v is not None and math.isfinite(v):
                by_epoch.setdefault(rec["epoch"], []).append(float(v))
    epochs = sorted(by_epoch)
    return (epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs],
            [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs])


def _band(ax, runs, value, label: str, color=None) -> bool:
    epochs, mean, lo, hi = _series(runs, value)
    if not epochs:
        return False
    line, = ax.plot(epochs, mean, label=f"{label} (n={len(runs)})", marker="o" if len(epochs) <= 20 else None,
                    markersize=4, color=color)
    if len(runs) > 1:
        if len(epochs) <= FEW_EPOCHS:  # a band over one or two epochs is an invisible sliver: whiskers instead
            ax.errorbar(epochs, mean, yerr=[[m - a for m, a in zip(mean, lo)], [b - m for m, b in zip(mean, hi)]],
                        fmt="none", ecolor=line.get_color(), capsize=4)
        else:
            ax.fill_between(epochs, lo, hi, alpha=0.2, color=line.get_color())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return True


def _title(base: str, shown: int, total: int) -> str:
    return base if shown == total else f"{base} (first {shown} of {total} groups)"


def _bench(column: str):
    return lambda rec: (rec.get("benchmark") or {}).get(column)


def figure1(groups) -> Optional[Figure]:
    """The derived cell's benchmark accuracy and the supernet's accuracy per epoch."""
    names = list(groups)[:MAX_GROUPS_PER_FIGURE]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_bench, ax_super = fig.subplots(1, 2)
    drew_bench = any([_band(ax_bench, groups[g], _bench("cifar10_test"), g) for g in names])
    for g in names:
        _band(ax_super, groups[g], lambda rec: rec.get("valid_acc"), g)
    ax_bench.set_title("derived cell: NAS-Bench-201 CIFAR-10 test (%)" if drew_bench else "no benchmark lookups")
    ax_super.set_title("supernet: accuracy on the other half (%)")
    for ax in (ax_bench, ax_super):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(_title("Figure 1: accuracy per epoch, mean and min-max over seeds", len(names), len(groups)))
    return fig


def _correlation(rec) -> Optional[float]:
    probes = rec.get("grad_correlation") or []
    values = [v for p in probes for k, v in p.items() if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def figure2(groups) -> Optional[Figure]:
    """Gradient correlation (Eq. 8) per epoch: mean over the epoch's probes and edges."""
    names = [g for g in groups if any(_correlation(rec) is not None for r in groups[g] for rec in r.records)]
    if not names:
        return None
    names = names[:MAX_GROUPS_PER_FIGURE]
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for g in names:
        _band(ax, groups[g], _correlation, g)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("correlation (mean over probes and edges)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(_title("Figure 2: correlation of the gradients moving alpha and w", len(names), len(groups)))
    return fig


def figure3(groups, ops: Sequence[str], alpha: str, edge: int, edge_name: str) -> Optional[Figure]:
    """dL/dp per operation on one edge, one panel per group (mean over seeds)."""
    names = list(groups)[:MAX_GROUPS_PER_FIGURE]
    cols = min(len(names), 4)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flat
    for ax, g in zip(axes, names):
        for k, op in enumerate(ops):
            _band(ax, groups[g], lambda rec, k=k: _matrix(rec, "dL_dp", alpha, edge, k), op, color=f"C{k}")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_title(g, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes)[len(names):]:
        ax.set_visible(False)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, [label.split(" (n=")[0] for label in labels], loc="outside lower center", ncol=min(len(ops), 5), fontsize=8)
    fig.suptitle(_title(f"Figure 3: dL/dp per operation on edge {edge_name} ({alpha})", len(names), len(groups)))
    return fig


def _matrix(rec, key: str, alpha: str, edge: int, k: int) -> Optional[float]:
    m = (rec.get(key) or {}).get(alpha)
    return None if m is None else m[edge][k]


def figure4(runs, group: str, ops: Sequence[str], alpha: str, edges: Sequence[str]) -> Figure:
    """p per operation per edge for one group (mean and min-max over seeds)."""
    cols = min(len(edges), 3 if len(edges) <= 9 else 5)
    rows = math.ceil(len(edges) / cols)
    fig = Figure(figsize=(3.8 * cols, 2.7 * rows + 0.9), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for e, (ax, name) in enumerate(zip(axes, edges)):
        for k, op in enumerate(ops):
            _band(ax, runs, lambda rec, e=e, k=k: _matrix(rec, "p", alpha, e, k), op, color=f"C{k}")
        ax.set_title(f"edge {name}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(edges):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, [label.split(" (n=")[0] for label in labels], loc="outside lower center", ncol=min(len(ops), 5), fontsize=8)
    fig.suptitle(f"Figure 4: p per operation per edge ({alpha}), {group}, n={len(runs)}")
    return fig


def _best_run(reports, space: str):
    finished = [r for r in reports if r.state == "finished" and r.records]
    if space == "nb201":
        scored = [(r.accuracies("argmax") or {}).get("cifar10_valid") for r in finished]
        pairs = [(s, r) for s, r in zip(scored, finished) if s is not None]
        if pairs:  # the benchmark's valid accuracy picks it (test stays unseen), as NB201 papers select
            return max(pairs, key=lambda t: t[0])[1]
    return max(finished, key=lambda r: r.last.get("valid_acc", 0.0)) if finished else None


def write_sweep_figures(reports, out: Path, space: str, dpi: int = 120) -> List[str]:
    """Write the figures of a sweep's runs into ``out``; returns the files written."""
    from ..spaces import get_space

    groups = _groups(reports)
    if not groups:
        return []
    space_record = get_space(space)
    ops = list(space_record.primitives.names)
    alpha = next(iter(space_record.edges))
    edges = list(space_record.edges[alpha])
    written = []

    def save(fig: Optional[Figure], name: str) -> None:
        if fig is not None:
            path = out / name
            fig.savefig(path, dpi=dpi)
            written.append(str(path))

    save(figure1(groups), "fig1_accuracy.png")
    save(figure2(groups), "fig2_grad_correlation.png")
    save(figure3(groups, ops, alpha, 0, edges[0]), f"fig3_dLdp_edge{edges[0].replace('<-', '-')}.png")
    for i, (g, runs) in enumerate(list(groups.items())[:FIG4_GROUPS]):
        save(figure4(runs, g, ops, alpha, edges), f"fig4_p_{g}.png")
    best = _best_run(reports, space)
    if best is not None:
        from .cells import save_cell_picture

        cell = best.cell("argmax" if space == "nb201" else "exclude-none") or best.last.get("genotype")
        path = out / f"best_cell_{best.name}.png"
        save_cell_picture(space, cell, str(path), dpi=dpi)
        written.append(str(path))
    return written
