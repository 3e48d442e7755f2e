"""Running a sweep: each planned search as an ordinary run directory under ``SWEEP/runs/``.

A sweep directory holds ``sweep.json`` (the spec as given, its scale and command-line
settings) and ``runs/NAME/`` per search.  Started again, it skips finished runs, resumes
killed ones exactly (``--resume`` semantics: the run's checkpoint) and starts the others; a
run that stopped with an error is recorded in its ``sweep_error.txt`` and skipped until asked
to retry.  One sweep process owns the sweep directory (``SWEEP/.lock``); each run's directory
has its own lock as always, so two sweeps cannot write one run.

``jobs > 1`` runs that many searches at once, each in its own process (a fresh interpreter,
CPU threads split between them), all on the device each run names (a big GPU holds several
NB201 searches).  A worker that dies (killed, out of memory) costs only its own run, which is
resumed next time; Ctrl-C stops every worker.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..run.run_dir import RunDir, RunDirError, read_metrics, write_text_atomic
from ..search.config import SearchConfig
from .spec import LOCATION_FIELDS, PlannedRun, Scale, SpecError, SweepSpec

SWEEP_FILE = "sweep.json"
ERROR_FILE = "sweep_error.txt"
STATES = ("finished", "partial", "new", "failed")


@dataclass
class Sweep:
    """A sweep directory and what it runs."""

    path: Path
    spec: SweepSpec
    scale: Optional[Scale] = None
    overrides: Optional[Dict[str, Any]] = None  # settings from the command line (--set, paths, device)
    locations: Optional[Dict[str, str]] = None  # the shared data, for runs that name none (spec.fill_locations)

    @classmethod
    def create_or_open(cls, path: str, spec: SweepSpec, scale: Optional[Scale], overrides: Dict[str, Any],
                       locations: Optional[Dict[str, str]] = None) -> "Sweep":
        """A new sweep in ``path``, or the one already there if it is the same spec, scale and
        settings (started again: it continues); SpecError if ``path`` holds a different sweep.
        Only where things are (``LOCATION_FIELDS``) may differ, as on another machine."""
        sweep = cls(Path(path), spec, scale, overrides, locations)
        saved = read_saved(path)
        if saved is not None:
            mine = sweep.to_json()
            for key in ("spec", "scale", "settings"):
                if saved.get(key) != mine[key]:
                    raise SpecError(f"--out {path} holds another sweep ({key} differs from this one's); continue it with "
                                    f"sdarts-sweep --resume {path}, or choose another directory")
        return sweep

    @classmethod
    def open(cls, path: str) -> "Sweep":
        saved = read_saved(path)
        if saved is None:
            raise SpecError(f"{path}: not a sweep directory (no {SWEEP_FILE})")
        try:
            scale = Scale(**saved["scale"]) if saved.get("scale") else None
            spec = SweepSpec.from_dict(saved["spec"], where=f"{path}/{SWEEP_FILE}")
        except (KeyError, TypeError) as err:
            raise SpecError(f"{path}/{SWEEP_FILE}: not a sweep record ({type(err).__name__}: {err})") from None
        return cls(Path(path), spec, scale, saved.get("overrides") or {}, saved.get("locations") or {})

    def to_json(self) -> Dict[str, Any]:
        overrides = dict(self.overrides or {})
        return {"spec": self.spec.raw, "scale": self.scale.to_json() if self.scale else None,
                "settings": {k: v for k, v in sorted(overrides.items()) if k not in LOCATION_FIELDS},
                "overrides": overrides, "locations": dict(self.locations or {})}

    def write(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path / SWEEP_FILE, json.dumps(self.to_json(), indent=2) + "\n")

    def plan(self) -> List[PlannedRun]:
        return self.spec.runs(str(self.path), self.overrides, self.scale, self.locations)


def read_saved(path: str) -> Optional[Dict[str, Any]]:
    """``SWEEP/sweep.json``, or None when there is none."""
    file = Path(path) / SWEEP_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise SpecError(f"{file}: cannot read it ({err})") from None


def run_state(run: PlannedRun) -> str:
    """finished (all its epochs and genotype.json), partial (a checkpoint to resume), failed
    (stopped with an error, see its sweep_error.txt) or new."""
    run_dir = RunDir(run.config.out)
    if run_dir.genotype.is_file() and run_dir.metrics.is_file():
        try:
            if len(read_metrics(run_dir.metrics)) >= run.config.epochs:
                return "finished"
        except (OSError, ValueError):
            pass
    if (run_dir.path / ERROR_FILE).is_file():
        return "failed"
    return "partial" if run_dir.checkpoint.is_file() else "new"


def run_one(config_json: Dict[str, Any], resume: bool, threads: Optional[int] = None) -> Optional[str]:
    """One search of a sweep, in this process; returns None, or the one-line error it stopped
    with (also written to the run's sweep_error.txt)."""
    import torch

    from ..run.checkpoint import CheckpointError
    from ..search.assembly import SearchStopped, run_search
    from ..search.config import ConfigError

    if threads:
        torch.set_num_threads(threads)
    config = SearchConfig(**config_json)  # a planned config (from_saved is for run directories)
    error_file = Path(config.out) / ERROR_FILE
    try:
        if resume:
            check_unchanged(config)
        run_search(config, resume=resume, command=["sdarts-sweep", "run", config.out], progress=False)
    except (ConfigError, SearchStopped, CheckpointError, RunDirError, OSError) as err:
        message = f"{type(err).__name__}: {err}"
    except Exception as err:  # a bug: keep its traceback for the report, go on with the sweep
        message = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    else:
        if error_file.exists():
            error_file.unlink()
        return None
    error_file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(error_file, message + "\n")
    return message.splitlines()[0]


def check_unchanged(config: SearchConfig) -> None:
    """ConfigError unless the run in ``config.out`` was started with these settings (a resumed
    run must end where an uninterrupted one would); only ``RESUMABLE`` ones may change."""
    from ..search.config import ConfigError, flag

    try:
        saved = RunDir(config.out).read_config()["args"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{config.out}: cannot read its config.json ({type(err).__name__}: {err})") from None
    started = SearchConfig.from_saved(saved)
    for name in SearchConfig.field_names():
        planned = getattr(config, name)
        if name in SearchConfig.RESUMABLE or name == "out" or planned is None:
            continue  # None: the device's default, which the saved run holds resolved
        if planned != getattr(started, name):
            raise ConfigError(f"{flag(name)} is {planned} in the sweep but {getattr(started, name)} in the run started "
                              f"in {config.out}; a run keeps its settings (move its directory away to start it anew)")


def _say(text: str) -> None:
    print(f"sdarts-sweep: {text}", file=sys.stderr, flush=True)


def run_sweep(sweep: Sweep, jobs: int = 1, retry_failed: bool = False, say: Callable[[str], None] = _say) -> Dict[str, str]:
    """Run every run of ``sweep`` that is not finished; returns run name -> state at the end."""
    if jobs < 1:
        raise SpecError(f"--jobs must be at least 1, got {jobs}")
    lock = RunDir(sweep.path)
    try:
        lock.acquire()
    except RunDirError as err:
        raise SpecError(f"sweep directory: {err}") from None
    try:
        planned = sweep.plan()  # a spec that cannot run leaves no sweep.json behind
        sweep.write()
        todo = []
        for run in planned:
            state = run_state(run)
            if state == "finished" or (state == "failed" and not retry_failed):
                say(f"{run.name}: {state}, skipped" + (" (--retry-failed runs it again)" if state == "failed" else ""))
                continue
            if state == "failed":
                (Path(run.config.out) / ERROR_FILE).unlink()
                state = "partial" if RunDir(run.config.out).checkpoint.is_file() else "new"
            todo.append((run, state == "partial"))
        say(f"{len(planned)} runs, {len(todo)} to run" + (f", {jobs} at a time" if jobs > 1 and todo else ""))
        if jobs == 1:
            for i, (run, resume) in enumerate(todo, 1):
                _run_and_report(run, resume, i, len(todo), say, None)
        else:
            _run_parallel(todo, jobs, say)
        return {run.name: run_state(run) for run in planned}
    finally:
        lock.release()


def _run_and_report(run: PlannedRun, resume: bool, i: int, n: int, say, threads: Optional[int]) -> None:
    say(f"[{i}/{n}] {'resuming' if resume else 'starting'} {run.name}")
    start = time.perf_counter()
    error = run_one(run.config.to_json(), resume, threads)
    took = (time.perf_counter() - start) / 60
    say(f"[{i}/{n}] {run.name}: " + (f"failed after {took:.1f} min: {error}" if error else f"done in {took:.1f} min"))


def _run_parallel(todo, jobs: int, say) -> None:
    """At most ``jobs`` runs at once, each in a fresh spawned interpreter; a dead worker costs
    only its run, and Ctrl-C (or any error here) stops every worker before it propagates."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    queue = list(enumerate(todo, 1))
    running: Dict[Any, PlannedRun] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                i, (run, resume) = queue.pop(0)
                say(f"[{i}/{len(todo)}] {'resuming' if resume else 'starting'} {run.name}")
                worker = context.Process(target=run_one, args=(run.config.to_json(), resume, threads), name=run.name)
                worker.start()
                running[worker] = run
            for worker in list(running):
                worker.join(timeout=0.5)
                if worker.exitcode is None:
                    continue
                run = running.pop(worker)
                error_file = Path(run.config.out) / ERROR_FILE
                if worker.exitcode != 0:
                    say(f"{run.name}: its worker died (exit code {worker.exitcode}); it resumes on the next start")
                elif error_file.is_file():
                    say(f"{run.name}: failed: {error_file.read_text().splitlines()[0]}")
                else:
                    say(f"{run.name}: done")
    except BaseException:
        for worker in running:
            worker.terminate()
        for worker in running:
            worker.join()
        raise
