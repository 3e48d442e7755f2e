"""The retraining data: ``sdarts.data`` loaders for the training and test splits of a config.

Batches are produced on the device (uint8 images stay there; crop + flip in batch).  Under
DDP every rank takes its slice of each global batch, so ``--batch-size`` is per process and
the global batch is ``batch_size * world_size``.  ``imagenet`` means an ImageFolder tree
(``DATA_DIR/train``, ``DATA_DIR/val``) read with the standard ImageNet augmentation
(:mod:`.imagenet_data`).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch

from ..data import DatasetArrays, load_dataset, make_loader, shared_data_dir
from ..run.distributed import DistContext
from .imagenet_data import ImageNetLoader
from .recipes import TrainConfig

IMAGENET_SIZE = 224
BUILT_IN = ("synthetic", "digits")  # generated / bundled: no data directory


class DataError(RuntimeError):
    """The data of a run cannot be found or read (one line for the user, naming the option)."""


# What load_dataset / ImageNetLoader read, per dataset: the entries any one of which will do.
LAYOUTS = {
    "cifar10": (("cifar-10-batches-py",), ("train.npz", "test.npz"), ("cifar10-jpeg/train.npz", "cifar10-jpeg/test.npz")),
    "cifar100": (("cifar-100-python",),),
    "imagenet": (("train", "val"),),
}
LAYOUT_TEXT = {
    "cifar10": "cifar-10-batches-py/ (the python version), or train.npz and test.npz of the JPEG copy (there or in cifar10-jpeg/)",
    "cifar100": "cifar-100-python/ (the python version)",
    "imagenet": "train/ and val/ class folders (ImageFolder layout)",
}


def data_dir_of(config: TrainConfig) -> str:
    """The directory the run reads: ``--data-dir``, else $SDARTS_DATA or ../shared/data."""
    return config.data_dir or shared_data_dir()


def _where(config: TrainConfig) -> str:
    if config.data_dir:
        return f"--data-dir {config.data_dir}"
    return f"the default data directory {data_dir_of(config)} ($SDARTS_DATA or ../shared/data; no --data-dir given)"


def data_problem(config: TrainConfig) -> Optional[str]:
    """Why ``config``'s data cannot be there, from a look at its directory (None if it may be):
    the cheap check made before anything else."""
    if config.dataset in BUILT_IN:
        return None
    if config.data_dir == "":
        return "--data-dir is empty; give the directory that holds the dataset"
    if config.dataset == "imagenet" and not config.data_dir:
        return "--data-dir is required for --dataset imagenet (a directory with train/ and val/ class folders)"
    root = data_dir_of(config)
    if not os.path.isdir(root):
        what = "is not a directory" if os.path.exists(root) else "does not exist"
        return f"{_where(config)} {what}; --dataset {config.dataset} expects a directory holding {LAYOUT_TEXT[config.dataset]}"
    layouts = LAYOUTS[config.dataset]
    if not any(all(os.path.exists(os.path.join(root, entry)) for entry in layout) for layout in layouts):
        return f"{_where(config)} holds no {config.dataset} data: expected {LAYOUT_TEXT[config.dataset]}"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# What reading a broken or incomplete dataset raises (torchvision, numpy, PIL, pickle).
READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError)


@dataclass
class TrainData:
    train: object  # DeviceLoader or StreamingLoader
    test: object
    num_classes: int
    input_size: Tuple[int, int, int]

    @property
    def train_steps(self) -> int:
        return len(self.train)

    def train_batches(self, epoch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        self.train.set_epoch(epoch)
        return iter(self.train)

    def test_batches(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.test)


def load_arrays(config: TrainConfig) -> DatasetArrays:
    problem = data_problem(config)
    if problem:
        raise DataError(problem)
    try:
        return load_dataset(config.dataset, data_dir_of(config))
    except READ_ERRORS as err:
        raise DataError(f"{_where(config)}: cannot read {config.dataset} ({_first_line(err)})") from None


def load_imagenet(config: TrainConfig, ctx: DistContext, device: torch.device) -> TrainData:
    problem = data_problem(config)
    if problem:
        raise DataError(problem)
    common = dict(seed=config.seed, device=device, rank=ctx.rank, world_size=ctx.world_size,
                  num_workers=config.workers, size=IMAGENET_SIZE)
    try:
        train = ImageNetLoader(config.data_dir, "train", config.batch_size, train=True, **common)
        test = ImageNetLoader(config.data_dir, "val", config.batch_size, train=False, drop_last=False, **common)
    except READ_ERRORS as err:
        raise DataError(f"{_where(config)}: cannot read imagenet ({_first_line(err)})") from None
    if len(train) == 0:
        raise DataError(f"--batch-size {config.batch_size}: the imagenet training split ({len(train.dataset)} images) "
                        f"makes no full batch per process ({ctx.world_size} process(es))")
    return TrainData(train, test, train.num_classes, (3, IMAGENET_SIZE, IMAGENET_SIZE))


def load_train_data(config: TrainConfig, ctx: DistContext, device: torch.device) -> TrainData:
    """The loaders of ``config``; DataError (one line, naming the option) when the data is
    missing or unreadable, or the batch larger than the training split."""
    if config.dataset == "imagenet":
        return load_imagenet(config, ctx, device)
    data = load_arrays(config)
    common = dict(batch_size=config.batch_size * ctx.world_size, seed=config.seed, device=device,
                  rank=ctx.rank, world_size=ctx.world_size, num_workers=config.workers)
    if data.num_train < config.batch_size * ctx.world_size:
        raise DataError(f"--batch-size {config.batch_size}: the {config.dataset} training split has {data.num_train} images, "
                        f"too few for one batch of {config.batch_size} x {ctx.world_size} process(es)")
    train = make_loader(data, "train", augment=True, shuffle=True, drop_last=True, **common)
    test = make_loader(data, "test", augment=False, shuffle=False, drop_last=False, **common)
    sample = data.train_set[0][0] if data.streaming else data.train_x[0]
    return TrainData(train, test, data.num_classes, tuple(sample.shape))
