"""Architecture search: strategies (how a step updates w and alpha), the loop, its run directory.

Layering: :mod:`.strategies` (one step) -> :mod:`.loop` (epochs, evaluation, checkpoints) ->
``sdarts.cli.search`` (the command).  :mod:`.metrics`, :mod:`.checkpoint`, :mod:`.run_dir` and
:mod:`.distributed` are the loop's helpers.
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .loop import NonFiniteLoss, SearchData, Searcher
from .run_dir import RunDir
from .strategies import STRATEGIES, SearchStrategy, StepOutput, build_strategy

__all__ = [
    "STRATEGIES",
    "CheckpointError",
    "NonFiniteLoss",
    "RunDir",
    "SearchData",
    "SearchStrategy",
    "Searcher",
    "StepOutput",
    "build_strategy",
    "load_checkpoint",
    "save_checkpoint",
]
