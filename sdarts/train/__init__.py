"""Retraining discrete DARTS-space networks: recipes, the loop, cutout, model size."""

from .augment import cutout
from .complexity import count_macs, count_parameters
from .recipes import TrainConfig, make_config, recipe

__all__ = ["TrainConfig", "count_macs", "count_parameters", "cutout", "evaluate_checkpoint", "fit", "make_config", "recipe"]


def __getattr__(name):
    # The loop imports sdarts.darts, which imports the counters above: load it on first use.
    if name in ("fit", "evaluate_checkpoint"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(name)
