"""Architecture search: strategies (how a step updates w and alpha), the loop, the derived
cell's verdict.

Layering: :mod:`.strategies` (one step) -> :mod:`.loop` (epochs, evaluation, checkpoints) ->
:mod:`.assembly` (``run_search(SearchConfig)``: a whole search) -> ``sdarts.cli.search``.  :mod:`.metrics`, :mod:`.graphed_step` and
:mod:`.decision` are the loop's helpers; run directories, checkpoints and the multi-process
set-up are ``sdarts.run``'s.
"""

from .assembly import SearchResult, SearchStopped, run_search
from .config import ConfigError, SearchConfig
from .loop import NonFiniteLoss, SearchData, Searcher
from .strategies import STRATEGIES, SearchStrategy, StepOutput, build_strategy

__all__ = ["STRATEGIES", "ConfigError", "NonFiniteLoss", "SearchConfig", "SearchData", "SearchResult", "SearchStopped",
           "SearchStrategy", "Searcher", "StepOutput", "build_strategy", "run_search"]
