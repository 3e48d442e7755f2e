"""``sdarts-sweep``: a grid of searches (a preset of the paper, or a spec file), resumable,
with the paper's tables and figures as output.

    sdarts-sweep table1 --out sweeps/t1                     # the paper's Table 1 (5 seeds x 2 methods)
    sdarts-sweep table1 --scale 0.05,10 --out sweeps/t1-cpu # a CPU-sized version (says so loudly)
    sdarts-sweep my_spec.toml --out sweeps/mine --jobs 4    # 4 searches at once
    sdarts-sweep table5 --dry-run                           # print the grid, run nothing
    sdarts-sweep --resume sweeps/t1                         # continue: skip finished, resume killed
    sdarts-sweep --report sweeps/t1                         # regenerate report/ from the run directories
    sdarts-sweep --list                                     # the presets

Started again with the same spec and ``--out``, a sweep continues where it stopped.  Bad
input is one line on stderr naming the argument or the spec key, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, Optional, Sequence

from ..search.config import SearchConfig
from ..sweep.presets import PRESETS, preset, preset_names
from ..sweep.report import write_report
from ..sweep.runner import Sweep, run_state, run_sweep
from ..sweep.spec import Scale, SpecError, SweepSpec

PROG = "sdarts-sweep"
PATH_FLAGS = ("data_dir", "nb201_table", "split_file", "device")  # settings for every run, changeable on --resume


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="presets: " + ", ".join(preset_names()) + " (sdarts-sweep --list says what each encodes)")
    p.add_argument("spec", nargs="?", help="a preset name or a spec file (.json or .toml)")
    p.add_argument("--out", help="the sweep directory (runs/NAME per search, report/ with tables and figures)")
    p.add_argument("--resume", metavar="SWEEP", help="continue the sweep in SWEEP with its own spec")
    p.add_argument("--report", metavar="SWEEP", help="only regenerate SWEEP/report/ from its run directories")
    p.add_argument("--list", action="store_true", help="list the presets with the paper's settings they encode")
    p.add_argument("--dry-run", action="store_true", help="print the grid (and each run's state) and run nothing")
    p.add_argument("--scale", metavar="FRACTION,EPOCHS",
                   help="a CPU-sized version: every run searches FRACTION of the data for EPOCHS epochs (its outputs "
                   "say it is not the paper's protocol)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="these seeds instead of the spec's seed axis (e.g. --seeds 0 1 for a quick version)")
    p.add_argument("--jobs", type=int, default=1, help="searches at once, each in its own process (default 1)")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs that stopped with an error")
    p.add_argument("--no-report", action="store_true", help="do not write report/ at the end")
    data = p.add_argument_group("settings for every run (paths may differ between machines)")
    data.add_argument("--data-dir", help="dataset directory (default for cifar10: $SDARTS_DATA/cifar10-jpeg when present)")
    data.add_argument("--nb201-table", help="NAS-Bench-201 table (default: the shared one when present)")
    data.add_argument("--split-file", help="the benchmark's train/valid split (default for NB201 on CIFAR-10: the "
                      "shared nb201/cifar-split.txt when present)")
    data.add_argument("--device", help="device of every run (default: auto)")
    data.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="any other search setting for every run, VALUE as JSON (e.g. --set max_steps_per_epoch=5)")
    return p


def _spec(name: str) -> SweepSpec:
    if name in PRESETS:
        return SweepSpec.from_dict(preset(name), where=f"preset {name}")
    if os.path.splitext(name)[1] in (".json", ".toml") or os.path.exists(name):
        return SweepSpec.from_file(name)
    raise SpecError(f"spec: {name!r} is neither a preset ({', '.join(preset_names())}) nor a .json/.toml spec file")


def _locations() -> Dict[str, str]:
    """The shared data present here, for runs that name none (``spec.fill_locations``)."""
    from ..data.locate import shared_data_dir
    from ..spaces.nb201.table import default_table_path

    shared = shared_data_dir()
    found = {"cifar10_dir": os.path.join(shared, "cifar10-jpeg"), "nb201_table": default_table_path(),
             "nb201_cifar_split": os.path.join(shared, "nb201", "cifar-split.txt")}
    return {k: v for k, v in found.items() if os.path.exists(v)}


def _overrides(args) -> Dict[str, Any]:
    """Settings for every run from the command line."""
    out: Dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value  # a bare word: a string
    return {**out, **_path_flags(args)}


def _path_flags(args) -> Dict[str, Any]:
    """The flags that say where things are on this machine, when given."""
    return {n: getattr(args, n) for n in PATH_FLAGS if getattr(args, n) is not None}


def _list() -> str:
    lines = []
    for name in preset_names():
        spec = SweepSpec.from_dict(preset(name))
        runs = spec.runs("<out>")
        lines += [f"{name}: {spec.description} ({len(runs)} runs)", f"  paper: {spec.paper}",
                  f"  our reading: {spec.interpretation}", ""]
    return "\n".join(lines).rstrip()


def _dry_run(sweep: Sweep) -> str:
    runs = sweep.plan()
    lines = [sweep.spec.describe()]
    if sweep.scale is not None:
        lines.append(sweep.scale.banner())
    for key, value in sorted((sweep.overrides or {}).items()):
        lines.append(f"every run: {key}={value}")
    for key, value in sorted((sweep.locations or {}).items()):
        lines.append(f"shared data, for runs that name none: {key}={value}")
    lines.append(f"{len(runs)} runs into {sweep.path}/runs/:")
    changing = [k for k in SearchConfig.field_names() if k != "out" and len({str(getattr(r.config, k)) for r in runs}) > 1]
    for run in runs:
        settings = " ".join(f"{k}={getattr(run.config, k)}" for k in changing)
        lines.append(f"  {run.name:<40} {run_state(run):<9} {settings}")
    return "\n".join(lines)


def _summary(states: Dict[str, str]) -> str:
    counts: Dict[str, int] = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        return _main(args)
    except SpecError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = args.resume or args.out
        print(f"\n{PROG}: interrupted; continue with: {PROG} --resume {where}", file=sys.stderr)
        return 130


def _main(args) -> int:
    modes = [m for m in ("spec", "resume", "report") if getattr(args, m)] + (["list"] if args.list else [])
    if len(modes) != 1:
        raise SpecError("give one of: a SPEC (preset or file) with --out, --resume SWEEP, --report SWEEP, --list")
    if args.list:
        print(_list())
        return 0
    if args.jobs < 1:
        raise SpecError(f"--jobs must be at least 1, got {args.jobs}")
    if args.report:
        print(write_report(Sweep.open(args.report)))
        return 0
    if args.resume:
        sweep = Sweep.open(args.resume)
        if args.scale or args.set or args.seeds:
            raise SpecError("--resume: a resumed sweep keeps its own spec and scale (only --data-dir, --nb201-table, "
                            "--split-file, --device may change)")
        sweep.overrides = {**(sweep.overrides or {}), **_path_flags(args)}
    else:
        spec = _spec(args.spec)
        if args.seeds:
            spec = spec.with_seeds(args.seeds)
        scale = Scale.parse(args.scale) if args.scale else None
        out = args.out or (os.path.join("sweeps", spec.name + ("-scaled" if scale else "")) if args.dry_run else None)
        if out is None:
            raise SpecError("--out SWEEP is required (the sweep directory)")
        sweep = Sweep.create_or_open(out, spec, scale, _overrides(args), _locations())
    if args.dry_run:
        print(_dry_run(sweep))
        return 0
    states = run_sweep(sweep, jobs=args.jobs, retry_failed=args.retry_failed)
    print(f"{PROG}: {_summary(states)}", file=sys.stderr)
    if not args.no_report:
        print(write_report(sweep))
    return 0 if all(s == "finished" for s in states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
