"""Every setting of a search, with the Single-DARTS paper's defaults, as one value.

``SearchConfig`` is what ``sdarts-search`` parses its command line into and what
:func:`sdarts.search.run_search` runs; a sweep or a notebook builds one directly::

    from sdarts.search import SearchConfig, run_search
    result = run_search(SearchConfig(space="nb201", dataset="cifar10", data_dir=DATA, out="runs/s0", seed=0))

Field names are the command's flags (``--data-dir`` is ``data_dir``), and a run directory's
``config.json`` stores them under ``"args"``, so a saved run reloads as its config
(:meth:`SearchConfig.from_saved`).  A few settings are resolved from the device when left at
``None`` (``lr``, ``channels_last``, ``recompute``); :meth:`resolved` fills them in.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ..data.datasets import DATASET_NAMES
from ..ops.backends import BACKENDS, EDGE_KERNELS
from ..primitives import DARTS, NB201
from ..spaces.base import DERIVE_RULES
from .strategies import STRATEGIES

SPACE_NAMES = ("darts", "nb201")
BENCHMARK_APIS = ("auto", "nats_bench", "nas_201_api")
ACTIVATIONS = ("sigmoid", "softmax")
IMAGENET_SCALE = ("imagefolder", "imagenet")
# The paper's optimiser settings (Single-DARTS, Section 4): w by SGD, alpha by Adam.
NB201_LR = 0.005
DARTS_IMAGENET_LR = 0.025
W_MOMENTUM, W_WEIGHT_DECAY, W_GRAD_CLIP = 0.9, 3e-4, 5.0
ALPHA_LR, ALPHA_BETAS, ALPHA_WEIGHT_DECAY = 3e-4, (0.5, 0.999), 0.0
# alpha by SGD (the paper's Tables 4 and 5): constant lr (w's lr unless --alpha-lr is given),
# w's momentum, no weight decay.  The paper gives only the optimizer and its lr; momentum
# and the constant schedule are our reading (DARTS' alpha optimizer has no schedule either).
ALPHA_OPTIMIZERS = ("adam", "sgd")
ALPHA_SGD_MOMENTUM = W_MOMENTUM
# Recomputed by default where it was measured to pay (bench/results): on the CPU, the DARTS
# SepConvs (most of a DARTS edge's internals) and NB201's 1x1 convolutions.
DEFAULT_RECOMPUTE = {("darts", "cpu"): ("sep_conv_3x3", "sep_conv_5x5"), ("nb201", "cpu"): ("nor_conv_1x1",)}

Recompute = Union[None, bool, List[str], Tuple[str, ...]]


class ConfigError(ValueError):
    """A setting out of range or settings that contradict each other (one line, naming them
    as the command's flags)."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def default_lr(space: str, dataset: str) -> float:
    return DARTS_IMAGENET_LR if space == "darts" and dataset in IMAGENET_SCALE else NB201_LR


def default_recompute(space: str, device: torch.device) -> Union[bool, List[str]]:
    return list(DEFAULT_RECOMPUTE.get((space, device.type), ())) or False


def recompute_setting(value: Recompute) -> Union[bool, Tuple[str, ...]]:
    """``recompute`` as MixedOp takes it: None or False -> False; True or [] (a bare
    ``--recompute``) -> True (every candidate); names -> those.  (Runs saved before names were
    accepted stored a bool.)"""
    if value is None or value is False:
        return False
    if value is True or len(value) == 0:
        return True
    return tuple(value)


@dataclass
class SearchConfig:
    # -- what and where
    space: str = "nb201"
    dataset: str = "digits"
    data_dir: Optional[str] = None
    download: bool = False
    out: Optional[str] = None
    nb201_table: Optional[str] = None
    split_file: Optional[str] = None
    data_fraction: float = 1.0
    # -- method (the paper's defaults)
    optimizer_level: str = "single"
    activation: str = "sigmoid"
    alpha_init: Optional[float] = None
    alpha_optimizer: str = "adam"
    alpha_lr: Optional[float] = None  # None: 3e-4 for Adam, w's lr for SGD
    derive: str = "argmax"  # how the cell is derived from p (both rules are logged every epoch)
    epochs: int = 50
    batch_size: int = 64
    eval_batch_size: int = 512
    lr: Optional[float] = None
    seed: int = 0
    init_channels: Optional[int] = None
    layers: Optional[int] = None
    # -- engine and speed
    device: str = "auto"
    backend: str = "auto"
    edge_kernels: str = "auto"  # the one-node edge's statistics and backward tail: torch ops or Triton
    no_fused: bool = False
    recompute: Recompute = None
    amp: bool = False
    channels_last: Optional[bool] = None
    cuda_graph: bool = False
    cuda_graph_strict: bool = False  # a failed capture stops the search (else: warn, go on eagerly)
    max_steps_per_epoch: Optional[int] = None
    log_every: int = 50
    # -- diagnostics and where results go
    grad_correlation_every: Optional[int] = None  # steps between gradient-correlation probes (Eq. 8)
    tensorboard: bool = False  # also log the epoch records to RUN_DIR/tensorboard
    benchmark_api: Optional[str] = None  # look cells up with nats_bench / nas_201_api (auto: either)
    benchmark_file: Optional[str] = None  # the user's own benchmark file for --benchmark-api
    # Settings a resumed run may take anew; every other one is the run's own.
    RESUMABLE = ("data_dir", "device", "nb201_table", "benchmark_file", "log_every")

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_saved(cls, saved: Dict[str, Any]) -> "SearchConfig":
        """The config a run directory's ``config.json["args"]`` holds (settings it predates take
        their defaults; keys this version does not know are ignored)."""
        known = set(cls.field_names())
        config = cls(**{k: v for k, v in saved.items() if k in known})
        if config.recompute is None:  # saved before the default existed: it recomputed nothing
            config.recompute = False
        if config.alpha_lr is None:  # saved before --alpha-lr existed: it ran at the default
            config.alpha_lr = config.default_alpha_lr()
        return config

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "SearchConfig":
        return dataclasses.replace(self, **changes)

    # -- checks ---------------------------------------------------------------------------

    def validate(self) -> None:
        """ConfigError naming the first bad setting (as its flag)."""
        if self.out is None:
            raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
        if self.space not in SPACE_NAMES:
            raise ConfigError(f"--space must be one of {', '.join(SPACE_NAMES)}, got {self.space!r}")
        if self.dataset not in DATASET_NAMES:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASET_NAMES)}")
        if self.optimizer_level not in STRATEGIES:
            raise ConfigError(f"--optimizer-level must be one of {', '.join(STRATEGIES)}, got {self.optimizer_level!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.alpha_optimizer not in ALPHA_OPTIMIZERS:
            raise ConfigError(f"--alpha-optimizer must be one of {', '.join(ALPHA_OPTIMIZERS)}, got {self.alpha_optimizer!r}")
        if self.derive not in DERIVE_RULES:
            raise ConfigError(f"--derive must be one of {', '.join(DERIVE_RULES)}, got {self.derive!r}")
        if self.edge_kernels not in EDGE_KERNELS:
            raise ConfigError(f"--edge-kernels must be one of {', '.join(EDGE_KERNELS)}, got {self.edge_kernels!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps_per_epoch", "init_channels", "layers", "grad_correlation_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{flag(name)} must be at least 1, got {value}")
        for name in ("data_fraction", "lr", "alpha_init", "alpha_lr"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{flag(name)} must be a finite number, got {value}")
        recompute = recompute_setting(self.recompute)
        if not isinstance(recompute, bool):
            names = (NB201 if self.space == "nb201" else DARTS).names
            unknown = [name for name in recompute if name not in names]
            if unknown:
                raise ConfigError(f"--recompute {' '.join(unknown)}: not a candidate of the {self.space} space ({', '.join(names)})")
        if not 0.0 < self.data_fraction <= 1.0:
            raise ConfigError(f"--data-fraction must be in (0, 1], got {self.data_fraction}")
        for name in ("lr", "alpha_lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{flag(name)} must be positive, got {value}")
        if self.benchmark_api is not None:
            if self.space != "nb201":
                raise ConfigError("--benchmark-api needs --space nb201")
            if self.benchmark_api not in BENCHMARK_APIS:
                raise ConfigError(f"--benchmark-api must be one of {', '.join(BENCHMARK_APIS)}, got {self.benchmark_api!r}")
            if self.benchmark_file is None:
                raise ConfigError("--benchmark-api needs --benchmark-file (the benchmark's own file, e.g. NATS-tss-v1_0-3ffb9-simple)")
            if self.nb201_table is not None:
                raise ConfigError("--benchmark-api and --nb201-table both look cells up: give one")
        elif self.benchmark_file is not None:
            raise ConfigError("--benchmark-file needs --benchmark-api")
        if self.nb201_table is not None and self.space != "nb201":
            raise ConfigError("--nb201-table needs --space nb201")
        if (self.cuda_graph or self.cuda_graph_strict) and self.optimizer_level == "bilevel-second":
            raise ConfigError("--cuda-graph does not support --optimizer-level bilevel-second")

    def resolved(self, device: torch.device) -> "SearchConfig":
        """The settings left to the device filled in: the paper's lr for the space and data,
        channels_last on the CPU only, the measured recompute defaults."""
        return self.replace(
            cuda_graph=self.cuda_graph or self.cuda_graph_strict,
            lr=default_lr(self.space, self.dataset) if self.lr is None else self.lr,
            channels_last=device.type == "cpu" if self.channels_last is None else self.channels_last,
            recompute=default_recompute(self.space, device) if self.recompute is None else self.recompute,
            alpha_lr=self.default_alpha_lr() if self.alpha_lr is None else self.alpha_lr,
        )

    def default_alpha_lr(self) -> float:
        if self.alpha_optimizer == "adam":
            return ALPHA_LR
        return default_lr(self.space, self.dataset) if self.lr is None else self.lr

    # -- the optimisers' settings (constants of the paper, recorded with every run) ---------

    def hyperparameters(self) -> Dict[str, Any]:
        return {
            "w": {"optimizer": "SGD", "lr": self.lr, "schedule": "cosine to 0, stepped per epoch", "momentum": W_MOMENTUM,
                  "weight_decay": W_WEIGHT_DECAY, "grad_clip": W_GRAD_CLIP},
            "alpha": self.alpha_hyperparameters(),
        }

    def alpha_hyperparameters(self) -> Dict[str, Any]:
        lr = self.default_alpha_lr() if self.alpha_lr is None else self.alpha_lr
        if self.alpha_optimizer == "sgd":
            return {"optimizer": "SGD", "lr": lr, "schedule": "constant", "momentum": ALPHA_SGD_MOMENTUM, "weight_decay": 0.0}
        return {"optimizer": "Adam", "lr": lr, "betas": list(ALPHA_BETAS), "weight_decay": ALPHA_WEIGHT_DECAY}

