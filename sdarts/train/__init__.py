"""Retraining discrete DARTS-space networks: recipes, the loop, cutout, model size."""

from .augment import cutout
from .complexity import count_macs, count_parameters
from .loop import evaluate_checkpoint, fit
from .recipes import TrainConfig, make_config, recipe

__all__ = ["TrainConfig", "count_macs", "count_parameters", "cutout", "evaluate_checkpoint", "fit", "make_config", "recipe"]
