"""Architecture search: strategies (how a step updates w and alpha), the loop, the derived
cell's verdict.

Layering: :mod:`.strategies` (one step) -> :mod:`.loop` (epochs, evaluation, checkpoints) ->
``sdarts.cli.search`` (the command).  :mod:`.metrics`, :mod:`.graphed_step` and
:mod:`.decision` are the loop's helpers; run directories, checkpoints and the multi-process
set-up are ``sdarts.run``'s.
"""

from .loop import NonFiniteLoss, SearchData, Searcher
from .strategies import STRATEGIES, SearchStrategy, StepOutput, build_strategy

__all__ = ["STRATEGIES", "NonFiniteLoss", "SearchData", "SearchStrategy", "Searcher", "StepOutput", "build_strategy"]
