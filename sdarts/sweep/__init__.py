"""Grids of searches (``sdarts-sweep``): a spec or one of the paper's presets, run as ordinary
run directories, resumable, reported as the paper's tables and figures."""

from .presets import PRESETS, preset
from .report import write_report
from .runner import Sweep, run_state, run_sweep
from .spec import Scale, SpecError, SweepSpec

__all__ = ["PRESETS", "Scale", "SpecError", "Sweep", "SweepSpec", "preset", "run_state", "run_sweep", "write_report"]
