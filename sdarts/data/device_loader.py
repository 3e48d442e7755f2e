"""Batches straight from the accelerator: uint8 images on the device, augmentation in batch there.

:class:`DeviceLoader` keeps a whole (CIFAR-scale) split on the device as uint8 and produces
each batch with one gather, one random-crop-and-flip gather and one normalization: no worker
processes, no per-image Python.  :class:`StreamingLoader` does the same for data sets read
from disk (a torch DataLoader with workers only decodes; augmentation still runs on the device).

Every random draw of an epoch (order, crop offsets, flips) comes from a CPU generator seeded by
``(seed, epoch)``, so ``set_epoch(e)`` replays epoch e exactly (a resumed run sees the same
batches) on any device, and DDP ranks, each taking its own slice of every global batch, agree
on the plan without communicating.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from .datasets import DatasetArrays

Batch = Tuple[torch.Tensor, torch.Tensor]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for one epoch; (seed, epoch) pairs are mixed so nearby pairs do not collide."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def crop_flip(images: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Random crop with zero padding plus horizontal flip, for a whole batch in one gather.

    Image n is zero-padded by ``padding`` on every side, the window at (row, col) =
    ``shifts[n]`` (each in 0..2*padding) of the original size is taken, and mirrored left-right
    when ``flips[n]``: torchvision's RandomCrop(size, padding) then RandomHorizontalFlip.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = shifts[:, :1] + torch.arange(h, device=images.device)
    cols_fwd = torch.arange(w, device=images.device)
    cols = shifts[:, 1:] + torch.where(flips[:, None], (w - 1) - cols_fwd, cols_fwd)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chan = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


class _EpochBatches:
    """What both loaders share: argument checks, the per-epoch random plan and the batch slices."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        seed: int,
        device,
        drop_last: bool,
        channels_last: bool,
        shuffle: bool,
        padding: int,
        rank: int,
        world_size: int,
    ):
        for name, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1), ("seed", seed, 0), ("padding", padding, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in 0..{world_size - 1} (world_size={world_size}), got {rank!r}")
        if batch_size % world_size:
            raise ValueError(f"batch_size (the global batch, {batch_size}) must be divisible by world_size ({world_size})")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one entry per channel and std > 0, got mean={mean}, std={std}")
        if num_samples < 1 or (drop_last and num_samples < batch_size):
            raise ValueError(f"{num_samples} samples make no batch of batch_size={batch_size} (drop_last={drop_last})")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.augment = augment
        self.seed = seed
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.shuffle = shuffle
        self.padding = padding
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        shape = (1, len(mean), 1, 1)
        # (x - 255 mean) / (255 std) on the raw uint8 values.
        self._shift = torch.tensor([255.0 * m for m in mean], device=self.device).view(shape)
        self._inv_scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=self.device).view(shape)

    def set_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _plan(self) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """This epoch's sample order, crop offsets and flips (CPU), indexed by position in the epoch."""
        g = epoch_generator(self.seed, self.epoch)
        n = self.num_samples
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if not self.augment:
            return order, None, None
        shifts = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g)
        flips = torch.randint(0, 2, (n,), generator=g).bool()
        return order, shifts, flips

    def _slices(self) -> Iterator[Tuple[int, int]]:
        """Epoch positions [start, stop) of this rank's part of each global batch."""
        for b in range(len(self)):
            start = b * self.batch_size
            size = min(self.batch_size, self.num_samples - start)
            base, extra = divmod(size, self.world_size)
            start += self.rank * base + min(self.rank, extra)
            yield start, start + base + (self.rank < extra)

    def _finish(self, images_u8: torch.Tensor, shifts, flips, start: int, stop: int) -> torch.Tensor:
        """Augment (with the plan's draws for positions start..stop), lay out, normalize."""
        if self.augment:
            images_u8 = crop_flip(images_u8, shifts[start:stop], flips[start:stop], self.padding)
        if self.channels_last:
            images_u8 = images_u8.contiguous(memory_format=torch.channels_last)
        return images_u8.to(torch.float32).sub_(self._shift).mul_(self._inv_scale)


class DeviceLoader(_EpochBatches):
    """Iterate (x float32 normalized, y int64) batches of uint8 images kept on ``device``.

    Args:
        images_u8: uint8 (N, C, H, W) images (moved to ``device`` once).
        labels: (N,) integer labels.
        batch_size: the global batch; with ``world_size > 1`` each rank gets its slice.
        mean, std: per-channel normalization on the [0, 1] scale.
        augment: random crop (zero padding ``padding``) + horizontal flip.
        seed: with the epoch (:meth:`set_epoch`), seeds every random draw.
        drop_last: drop the last partial batch (training) or keep it (evaluation).
        channels_last: return x in channels_last memory format.
        shuffle: visit samples in a fresh random order each epoch (else in index order).
    """

    def __init__(
        self,
        images_u8: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        seed: int,
        device="cpu",
        drop_last: bool = True,
        channels_last: bool = False,
        *,
        shuffle: bool = True,
        padding: int = 4,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not isinstance(images_u8, torch.Tensor) or images_u8.dtype != torch.uint8 or images_u8.dim() != 4:
            raise TypeError(f"images_u8 must be a uint8 (N, C, H, W) tensor, got {getattr(images_u8, 'dtype', type(images_u8))} {tuple(getattr(images_u8, 'shape', ()))}")
        if not isinstance(labels, torch.Tensor) or labels.shape != (len(images_u8),):
            raise ValueError(f"labels must be a ({len(images_u8)},) tensor, got {tuple(getattr(labels, 'shape', ()))}")
        super().__init__(
            len(images_u8), batch_size, mean, std, augment, seed, device, drop_last, channels_last, shuffle, padding, rank, world_size
        )
        if images_u8.shape[1] != len(mean):
            raise ValueError(f"images have {images_u8.shape[1]} channels but mean/std have {len(mean)} entries")
        self.images = images_u8.to(self.device).contiguous()
        self.labels = labels.to(self.device, torch.int64)

    def __iter__(self) -> Iterator[Batch]:
        order, shifts, flips = self._plan()
        order = order.to(self.device)
        if self.augment:
            shifts, flips = shifts.to(self.device), flips.to(self.device)
        for start, stop in self._slices():
            idx = order[start:stop]
            yield self._finish(self.images.index_select(0, idx), shifts, flips, start, stop), self.labels.index_select(0, idx)


class StreamingLoader(_EpochBatches):
    """:class:`DeviceLoader`'s batches for a data set read from disk by a DataLoader with workers.

    ``dataset`` yields (uint8 (C, H, W) tensor, label); the batches (order, augmentation) are
    identical to those a DeviceLoader with the same arguments would give on the decoded data.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        seed: int,
        device="cpu",
        drop_last: bool = True,
        channels_last: bool = False,
        *,
        shuffle: bool = True,
        padding: int = 4,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 4,
    ):
        super().__init__(
            len(dataset), batch_size, mean, std, augment, seed, device, drop_last, channels_last, shuffle, padding, rank, world_size
        )
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        self.dataset = dataset
        self.num_workers = num_workers

    def __iter__(self) -> Iterator[Batch]:
        order, shifts, flips = self._plan()
        if self.augment:
            shifts, flips = shifts.to(self.device), flips.to(self.device)
        slices = list(self._slices())
        loader = DataLoader(
            self.dataset,
            batch_sampler=[order[start:stop].tolist() for start, stop in slices],
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for (start, stop), (x, y) in zip(slices, loader):
            x = self._finish(x.to(self.device, non_blocking=True), shifts, flips, start, stop)
            yield x, y.to(self.device, torch.int64, non_blocking=True)


def make_loader(
    data: DatasetArrays,
    split: str = "train",
    indices: Optional[torch.Tensor] = None,
    *,
    batch_size: int,
    augment: bool,
    seed: int = 0,
    device="cpu",
    shuffle: bool = True,
    drop_last: bool = True,
    channels_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 4,
):
    """A :class:`DeviceLoader` over ``data``'s ``split`` (``"train"``/``"test"``), restricted to
    ``indices`` if given; a :class:`StreamingLoader` (DataLoader with ``num_workers``) when
    ``data.streaming``.  The other arguments are the loaders'."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    common = dict(
        batch_size=batch_size,
        mean=data.mean,
        std=data.std,
        augment=augment,
        seed=seed,
        device=device,
        drop_last=drop_last,
        channels_last=channels_last,
        shuffle=shuffle,
        padding=data.crop_padding,
        rank=rank,
        world_size=world_size,
    )
    if data.streaming:
        dataset = data.train_set if split == "train" else data.test_set
        if indices is not None:
            dataset = Subset(dataset, torch.as_tensor(indices).tolist())
        return StreamingLoader(dataset, num_workers=num_workers, **common)
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    if indices is not None:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        x, y = x[indices], y[indices]
    return DeviceLoader(x, y, **common)
