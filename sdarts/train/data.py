"""The retraining data: ``sdarts.data`` loaders for the training and test splits of a config.

Batches are produced on the device (uint8 images stay there; crop + flip in batch).  Under
DDP every rank takes its slice of each global batch, so ``--batch-size`` is per process and
the global batch is ``batch_size * world_size``.  ``imagenet`` means an ImageFolder tree
(``DATA_DIR/train``, ``DATA_DIR/val``) read with the standard ImageNet augmentation
(:mod:`.imagenet_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import torch

from ..data import DatasetArrays, load_dataset, make_loader, shared_data_dir
from ..search.distributed import DistContext
from .imagenet_data import ImageNetLoader
from .recipes import TrainConfig

IMAGENET_SIZE = 224


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
    return load_dataset(config.dataset, config.data_dir or shared_data_dir())


def load_imagenet(config: TrainConfig, ctx: DistContext, device: torch.device) -> TrainData:
    if not config.data_dir:
        raise ValueError("--data-dir is required for --dataset imagenet (an ImageFolder tree with train/ and val/)")
    common = dict(seed=config.seed, device=device, rank=ctx.rank, world_size=ctx.world_size,
                  num_workers=config.workers, size=IMAGENET_SIZE)
    train = ImageNetLoader(config.data_dir, "train", config.batch_size, train=True, **common)
    test = ImageNetLoader(config.data_dir, "val", config.batch_size, train=False, drop_last=False, **common)
    return TrainData(train, test, train.num_classes, (3, IMAGENET_SIZE, IMAGENET_SIZE))


def load_train_data(config: TrainConfig, ctx: DistContext, device: torch.device) -> TrainData:
    if config.dataset == "imagenet":
        return load_imagenet(config, ctx, device)
    data = load_arrays(config)
    common = dict(batch_size=config.batch_size * ctx.world_size, seed=config.seed, device=device,
                  rank=ctx.rank, world_size=ctx.world_size, num_workers=config.workers)
    train = make_loader(data, "train", augment=True, shuffle=True, drop_last=True, **common)
    test = make_loader(data, "test", augment=False, shuffle=False, drop_last=False, **common)
    sample = data.train_set[0][0] if data.streaming else data.train_x[0]
    return TrainData(train, test, data.num_classes, tuple(sample.shape))
