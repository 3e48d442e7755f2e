"""The ImageNet retraining loader: standard augmentation, deterministic epochs, DDP shards."""

import numpy as np
import pytest
import torch
from PIL import Image

from sdarts.train.imagenet_data import ImageNetLoader


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog", "fox"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, size=(40 + i, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.jpg")
    return str(tmp_path)


def batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_batches_are_normalized_crops_of_the_requested_size(image_folder):
    loader = ImageNetLoader(image_folder, "train", 4, train=True, seed=0, device="cpu", num_workers=0, size=32)
    assert loader.num_classes == 3 and len(loader) == 3
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert set(y.tolist()) <= {0, 1, 2}
    # Normalized: uniform noise in [0, 1] maps to roughly zero-mean values around -mean/std.
    assert x.min() < -1.5 and x.max() > 1.5


def test_epochs_reshuffle_deterministically(image_folder):
    """Epoch 1 visits the images in another order than epoch 0 (so its batches differ, images
    and labels), and each epoch is the same again when rerun from the same seeds."""
    def epoch(e):
        loader = ImageNetLoader(image_folder, "train", 4, train=True, seed=3, device="cpu", num_workers=0, size=32)
        torch.manual_seed(0)  # the augmentation draws from torch's global generator
        got = batches(loader, e)
        return list(loader.sampler), torch.cat([x for x, _ in got]), torch.cat([y for _, y in got])

    order0, x0, y0 = epoch(0)
    order1, x1, y1 = epoch(1)
    for e, (order, x, y) in ((0, (order0, x0, y0)), (1, (order1, x1, y1))):
        again = epoch(e)
        assert again[0] == order and torch.equal(again[1], x) and torch.equal(again[2], y), f"epoch {e} not reproducible"
    assert x0.shape == x1.shape == (12, 3, 32, 32)
    assert sorted(order0) == sorted(order1) == list(range(12))  # every image once per epoch
    assert order0 != order1, "set_epoch did not reshuffle"
    assert not torch.equal(y0, y1), "epoch 1's labels come in epoch 0's order"
    assert not torch.equal(x0, x1), "epoch 1's images are epoch 0's"


def test_ranks_get_disjoint_shards_and_val_is_not_augmented(image_folder):
    shards = [
        ImageNetLoader(image_folder, "train", 2, train=True, seed=0, device="cpu", rank=r, world_size=2, num_workers=0, size=32)
        for r in (0, 1)
    ]
    idx = [list(s.sampler) for s in shards]
    assert not set(idx[0]) & set(idx[1]) and len(idx[0]) == len(idx[1]) == 6
    val = ImageNetLoader(image_folder, "val", 5, train=False, seed=0, device="cpu", num_workers=0, size=32)
    first = torch.cat([x for x, _ in val])
    second = torch.cat([x for x, _ in val])
    assert first.shape[0] == 12 and torch.equal(first, second)


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no train/ class folders"):
        ImageNetLoader(str(tmp_path), "train", 2, train=True, seed=0, device="cpu", num_workers=0)
