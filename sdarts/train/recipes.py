"""The standard retraining recipes of the DARTS family, and their per-epoch schedules.

CIFAR (DARTS ``cnn/train.py``): 20 cells, C=36, 600 epochs, batch 128, SGD lr 0.025 with
cosine decay to 0, momentum 0.9, weight decay 3e-4, gradient clip 5, auxiliary weight 0.4,
cutout 16, drop-path 0.3 increased linearly from 0.

ImageNet (PC-DARTS ``train_imagenet.py``): 14 cells, C=48, 250 epochs, batch 1024 with lr 0.5,
momentum 0.9, weight decay 3e-5, gradient clip 5, label smoothing 0.1, auxiliary weight 0.4,
5 warm-up epochs, then the lr decays linearly to 0 (PC-DARTS' default ``linear`` schedule).

The learning rate follows the linear scaling rule: ``lr = ref_lr * global_batch / ref_batch``
(global batch = per-process batch x processes) unless an lr is given explicitly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

SCHEDULES = ("cosine", "linear")
# What ``sdarts-train --dataset`` takes: imagenet -> the ImageNet recipe, the others -> CIFAR's.
DATASETS = ("cifar10", "cifar100", "imagenet", "synthetic", "digits")
FLOAT_SETTINGS = ("auxiliary_weight", "drop_path", "lr", "ref_lr", "momentum", "weight_decay", "grad_clip", "label_smoothing")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one retraining run (what ``config.json`` holds)."""

    genotype: Dict[str, Any]
    dataset: str
    data_dir: Optional[str] = None
    layers: int = 20
    init_channels: int = 36
    auxiliary_weight: float = 0.4
    cutout: int = 16
    drop_path: float = 0.3
    epochs: int = 600
    batch_size: int = 128
    lr: Optional[float] = None
    ref_lr: float = 0.025
    ref_batch: int = 128
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    label_smoothing: float = 0.0
    lr_schedule: str = "cosine"
    warmup_epochs: int = 0
    amp: bool = False
    seed: int = 0
    workers: int = 8
    max_steps_per_epoch: Optional[int] = None

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        for name in FLOAT_SETTINGS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        positive = ("layers", "init_channels", "epochs", "batch_size", "ref_batch")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("auxiliary_weight", "cutout", "weight_decay", "grad_clip", "warmup_epochs", "momentum", "workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        problem = network_problem(self.dataset, self.layers, self.init_channels, self.auxiliary_weight)
        if problem:
            raise ValueError(problem)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}")
        return cls(**data)

    def resolved_lr(self, world_size: int) -> float:
        """The peak learning rate: ``lr`` if given, else scaled from the recipe's reference."""
        if self.lr is not None:
            return self.lr
        return self.ref_lr * self.batch_size * world_size / self.ref_batch


def network_problem(dataset: str, layers: int, init_channels: int, auxiliary_weight: float, flags: bool = False) -> Optional[str]:
    """Why these settings build no network (None if they do); ``flags``: name the settings as
    ``sdarts-train``'s options."""
    name = (lambda s: "--" + s.replace("_", "-")) if flags else (lambda s: s)
    if auxiliary_weight > 0 and layers < 3:
        return (f"an auxiliary head ({name('auxiliary_weight')} {auxiliary_weight}) needs {name('layers')} >= 3 (it sits "
                f"after cell 2*layers//3), got {name('layers')} {layers}; give {name('auxiliary_weight')} 0 for fewer cells")
    if dataset == "imagenet" and init_channels < 2:
        return f"the ImageNet stem needs {name('init_channels')} >= 2 (its first conv has half as many), got {init_channels}"
    return None


CIFAR = dict(layers=20, init_channels=36, auxiliary_weight=0.4, cutout=16, drop_path=0.3, epochs=600,
             batch_size=128, ref_lr=0.025, ref_batch=128, momentum=0.9, weight_decay=3e-4, grad_clip=5.0,
             label_smoothing=0.0, lr_schedule="cosine", warmup_epochs=0)
# Per-process batch 128: eight processes give PC-DARTS' 1024 at lr 0.5.
IMAGENET = dict(layers=14, init_channels=48, auxiliary_weight=0.4, cutout=0, drop_path=0.0, epochs=250,
                batch_size=128, ref_lr=0.5, ref_batch=1024, momentum=0.9, weight_decay=3e-5, grad_clip=5.0,
                label_smoothing=0.1, lr_schedule="linear", warmup_epochs=5)


def recipe(dataset: str) -> Dict[str, Any]:
    """The default settings for ``dataset`` (ImageNet's for ``imagenet``, CIFAR's otherwise)."""
    return dict(IMAGENET if dataset == "imagenet" else CIFAR)


def make_config(genotype: Dict[str, Any], dataset: str, **overrides) -> TrainConfig:
    """The recipe of ``dataset`` with ``overrides`` (None values keep the recipe's)."""
    settings = recipe(dataset)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(genotype=genotype, dataset=dataset, **settings)


def learning_rate(config: TrainConfig, epoch: int, peak_lr: float) -> float:
    """The lr of ``epoch`` (0-based), set once at the start of the epoch as in the originals."""
    progress = epoch / config.epochs
    if config.lr_schedule == "cosine":
        lr = 0.5 * peak_lr * (1.0 + math.cos(math.pi * progress))
    else:
        lr = peak_lr * (1.0 - progress)
    if epoch < config.warmup_epochs:
        lr *= (epoch + 1) / config.warmup_epochs
    return lr


def drop_path_prob(config: TrainConfig, epoch: int) -> float:
    """Drop-path probability of ``epoch``: increased linearly from 0 to ``drop_path``."""
    return config.drop_path * epoch / config.epochs


__all__ = ["TrainConfig", "DATASETS", "CIFAR", "IMAGENET", "recipe", "make_config", "learning_rate", "drop_path_prob"]
