"""A sweep's report, regenerated from its run directories at any time.

``write_report(sweep)`` reads every run's ``config.json``, ``metrics.jsonl`` and
``genotype.json`` and writes ``SWEEP/report/``: ``table.md`` and ``table.csv`` (the paper's
layout: one row per group of runs that differ only in their seed, mean +- std over the
finished seeds of the benchmark accuracies of each run's final derived cell, the benchmark's
optimum as the first row, for each derivation rule), ``runs.csv`` (every run: cell strings,
accuracies, wall time, search cost), and the figures.  Runs that are not finished are listed
as such, never averaged in.  std is the sample standard deviation (n - 1), as tables over
seeds report it; with one seed only the mean is shown.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..run.run_dir import RunDir, read_metrics, write_text_atomic
from ..spaces.base import DERIVE_RULES
from ..spaces.nb201.table import ACCURACY_COLUMNS
from .runner import ERROR_FILE, Sweep, run_state
from .spec import SEED_AXIS, PlannedRun

COLUMN_TITLES = {"cifar10_valid": "C10 valid", "cifar10_test": "C10 test", "cifar100_valid": "C100 valid",
                 "cifar100_test": "C100 test", "imagenet16_valid": "IN16 valid", "imagenet16_test": "IN16 test"}


@dataclass
class RunReport:
    """What the report knows of one run."""

    name: str
    group: str
    seed: Optional[int]
    state: str
    epochs_done: int
    epochs: int
    records: List[Dict[str, Any]] = field(default_factory=list)
    config: Dict[str, Any] = field(default_factory=dict)  # its config.json (empty before its start)
    error: Optional[str] = None

    @property
    def last(self) -> Dict[str, Any]:
        return self.records[-1] if self.records else {}

    def cell(self, rule: str) -> Optional[str]:
        return (self.last.get("cells") or {}).get(rule, self.last.get("genotype") if rule == self.last.get("derive", "argmax") else None)

    def accuracies(self, rule: str) -> Optional[Dict[str, float]]:
        bench = (self.last.get("benchmarks") or {}).get(rule)
        if bench is None and rule == self.last.get("derive", "argmax"):
            bench = self.last.get("benchmark")
        return bench

    @property
    def wall_min(self) -> Optional[float]:
        return self.last["elapsed_s"] / 60 if self.records else None

    @property
    def device_hours(self) -> Optional[float]:
        """Search cost: epoch wall time x processes (each on its own device under torchrun)."""
        return self.last["elapsed_s"] / 3600 * int(self.config.get("world_size", 1)) if self.records else None

    @property
    def device(self) -> str:
        return str(self.config.get("device_name") or self.config.get("device") or "")


def collect(sweep: Sweep) -> Tuple[List[PlannedRun], List[RunReport]]:
    planned = sweep.plan()
    reports = []
    for run in planned:
        run_dir = RunDir(run.config.out)
        state, error = run_state(run), None
        try:
            records = read_metrics(run_dir.metrics) if run_dir.metrics.is_file() else []
            config = run_dir.read_config() if run_dir.config.is_file() else {}
            error_file = run_dir.path / ERROR_FILE
            if error_file.is_file():
                error = (error_file.read_text().splitlines() or [""])[0]
        except (OSError, ValueError) as err:  # a damaged file: the run is listed, not averaged
            records, config, state, error = [], {}, "unreadable", f"{type(err).__name__}: {err}"
        reports.append(RunReport(run.name, run.group, run.config.seed if any(a == SEED_AXIS for a, _ in run.levels) else None,
                                 state, len(records), run.config.epochs, records, config, error))
    return planned, reports


def mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def optimum(table_path: Optional[str]) -> Optional[Dict[str, float]]:
    """The benchmark's best value of each accuracy column (each column's own best cell), as the
    NAS-Bench-201 tables' "optimal" row."""
    if not table_path or not Path(table_path).is_file():
        return None
    from ..spaces.nb201.table import NB201Table

    table = NB201Table.from_csv(table_path)
    return {c: table.best(c)[c] for c in ACCURACY_COLUMNS}


@dataclass
class GroupRow:
    group: str
    finished: List[RunReport]
    others: List[RunReport]
    stats: Dict[str, Tuple[Optional[float], Optional[float]]]

    looked_up: int = 0  # finished runs whose cell the benchmark knows (the means are over these)

    @property
    def n(self) -> str:
        return f"{self.looked_up}/{len(self.finished) + len(self.others)}"


def group_rows(reports: Sequence[RunReport], rule: str) -> List[GroupRow]:
    groups: Dict[str, List[RunReport]] = {}
    for r in reports:
        groups.setdefault(r.group, []).append(r)
    rows = []
    for group, members in groups.items():
        finished = [r for r in members if r.state == "finished"]
        found = [r.accuracies(rule) for r in finished if r.accuracies(rule)]
        stats = {c: mean_std([a[c] for a in found if a.get(c) is not None]) for c in ACCURACY_COLUMNS}
        rows.append(GroupRow(group, finished, [r for r in members if r.state != "finished"], stats, len(found)))
    return rows


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_table(reports: Sequence[RunReport], rule: str, best: Optional[Dict[str, float]]) -> Tuple[List[str], List[List[str]]]:
    header = ["method", "seeds done"] + [COLUMN_TITLES[c] for c in ACCURACY_COLUMNS] + ["mean search time (min)"]
    # "seeds done": finished runs whose cell the benchmark knows, of the group's runs
    rows = []
    if best is not None:
        rows.append(["optimum (benchmark)", "-"] + [f"{best[c]:.2f}" for c in ACCURACY_COLUMNS] + ["-"])
    for row in group_rows(reports, rule):
        times = [r.wall_min for r in row.finished if r.wall_min is not None]
        rows.append([row.group, row.n] + [_fmt(*row.stats[c]) for c in ACCURACY_COLUMNS]
                    + [f"{statistics.fmean(times):.1f}" if times else "-"])
    return header, rows


def runs_table(reports: Sequence[RunReport]) -> Tuple[List[str], List[List[str]]]:
    header = ["run", "group", "seed", "state", "epochs"]
    for rule in DERIVE_RULES:
        header += [f"cell ({rule})"] + [f"{COLUMN_TITLES[c]} ({rule})" for c in ACCURACY_COLUMNS]
    header += ["wall (min)", "search cost (device-hours)", "device", "note"]
    rows = []
    for r in reports:
        row = [r.name, r.group, "" if r.seed is None else str(r.seed), r.state, f"{r.epochs_done}/{r.epochs}"]
        for rule in DERIVE_RULES:
            acc = r.accuracies(rule) or {}
            row += [r.cell(rule) or ""] + [f"{acc[c]:.2f}" if c in acc else "" for c in ACCURACY_COLUMNS]
        row += [f"{r.wall_min:.1f}" if r.wall_min is not None else "", f"{r.device_hours:.3f}" if r.device_hours is not None else "",
                r.device, r.error or r.last.get("warning", "")]
        rows.append(row)
    return header, rows


def _csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def darts_genotypes(reports: Sequence[RunReport]) -> Tuple[List[str], List[List[str]]]:
    """DARTS-space runs: each final genotype and the parameters of its CIFAR-10 network
    (20 cells, 36 channels, auxiliary head excluded; sdarts-train's recipe)."""
    from ..train.loop import describe_model, network_for
    from ..train.recipes import make_config

    rows = []
    for r in reports:
        if r.state != "finished":
            rows.append([r.name, r.state, "", ""])
            continue
        genotype = r.cell("exclude-none") or r.last.get("genotype")
        config = make_config(_genotype_json(genotype), "cifar10")
        size = describe_model(network_for(config, 10), (3, 32, 32))
        rows.append([r.name, r.state, f"`{genotype}`", f"{size['params_m']:.2f}"])
    return ["run", "state", "genotype", "params (M), CIFAR-10 network"], rows


def _genotype_json(genotype_str: str):
    from ..spaces.darts.genotype import genotype_to_json, parse_genotype

    return genotype_to_json(parse_genotype(genotype_str))


def write_report(sweep: Sweep, figures: bool = True) -> Path:
    """Write ``SWEEP/report/`` (tables and figures); returns the path of table.md."""
    planned, reports = collect(sweep)
    out = sweep.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    space = planned[0].config.space if planned else "nb201"
    table_path = next((p.config.nb201_table for p in planned if p.config.nb201_table), None)
    best = optimum(table_path) if space == "nb201" else None
    states = {s: sum(r.state == s for r in reports) for s in ("finished", "partial", "new", "failed", "unreadable")}

    md = [f"# Sweep {sweep.spec.name}", ""]
    if sweep.scale is not None:
        md += [f"**{sweep.scale.banner()}.**", ""]
    md += [sweep.spec.describe().replace("\n", "  \n"), "",
           "Runs: " + ", ".join(f"{n} {s}" for s, n in states.items() if n) + f" (of {len(reports)}).", ""]
    csv_header, csv_rows = [], []
    if space == "nb201":
        md += ["Benchmark accuracies (NAS-Bench-201, 200 epochs, mean over its seeds) of each run's final derived cell: "
               "mean ± std (sample) over the finished seeds.", ""]
        for rule in DERIVE_RULES:
            header, rows = accuracy_table(reports, rule, best)
            md += [f"## Cells derived by {rule}" + (" (the default)" if rule == "argmax" else ""), "", _markdown_table(header, rows), ""]
            csv_header = ["derive"] + header
            csv_rows += [[rule] + row for row in rows]
    else:
        header, rows = darts_genotypes(reports)
        md += ["## Genotypes", "", _markdown_table(header, rows), ""]
        csv_header, csv_rows = header, rows
    unfinished = [r for r in reports if r.state != "finished"]
    if unfinished:
        md += ["## Not finished (not in the means)", "",
               _markdown_table(["run", "state", "epochs", "note"],
                               [[r.name, r.state, f"{r.epochs_done}/{r.epochs}", r.error or ""] for r in unfinished]), ""]
    header, rows = runs_table(reports)
    write_text_atomic(out / "runs.csv", _csv(header, rows))
    write_text_atomic(out / "table.csv", _csv(csv_header, csv_rows))
    if figures:
        from ..plots.sweep import write_sweep_figures

        names = write_sweep_figures(reports, out, space)
        if names:
            md += ["## Figures", ""] + [f"![{Path(n).stem}]({Path(n).name})" for n in names] + [""]
    md += ["Every run: `runs.csv`; regenerate with `sdarts-sweep --report " + str(sweep.path) + "`."]
    write_text_atomic(out / "table.md", "\n".join(md) + "\n")
    return out / "table.md"

