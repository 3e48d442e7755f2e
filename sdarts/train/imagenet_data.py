"""ImageNet retraining data with the standard augmentation of DARTS / PC-DARTS.

Train: RandomResizedCrop(224), horizontal flip, ColorJitter(0.4, 0.4, 0.4, 0.2); test: resize
to 256 then center-crop 224; both normalized with the ImageNet mean/std.  Read from an
ImageFolder tree (``DATA_DIR/train``, ``DATA_DIR/val``) by a DataLoader with workers; under
DDP a DistributedSampler gives each rank its shard.
"""

from __future__ import annotations

import os
from typing import Iterator, Tuple

import torch
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_transforms(train: bool, size: int = 224) -> transforms.Compose:
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
            transforms.ToTensor(),
            normalize,
        ])
    # 256/224: the usual resize-then-center-crop ratio.
    return transforms.Compose([transforms.Resize(size * 256 // 224), transforms.CenterCrop(size), transforms.ToTensor(), normalize])


class ImageNetLoader:
    """Batches of one split on ``device``; ``set_epoch`` reshuffles deterministically."""

    def __init__(self, data_dir: str, split: str, batch_size: int, *, train: bool, seed: int, device,
                 rank: int = 0, world_size: int = 1, num_workers: int = 8, size: int = 224, drop_last: bool = True):
        folder = os.path.join(data_dir, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"data_dir={data_dir!r} has no {split}/ class folders (ImageFolder layout)")
        self.dataset = datasets.ImageFolder(folder, imagenet_transforms(train, size))
        self.sampler = DistributedSampler(self.dataset, num_replicas=world_size, rank=rank, shuffle=train,
                                          seed=seed, drop_last=drop_last and train)
        self.device = torch.device(device)
        self.loader = DataLoader(self.dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
                                 pin_memory=self.device.type == "cuda", drop_last=drop_last and train,
                                 persistent_workers=num_workers > 0)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
