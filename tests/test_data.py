"""Data sets, the search split, and the on-device loaders."""

import io
import os
import pickle

import numpy as np
import pytest
import torch

from sdarts.data import (
    DeviceLoader,
    StreamingLoader,
    crop_flip,
    load_dataset,
    load_split_file,
    make_loader,
    search_split,
)
from sdarts.data import datasets as datasets_module
from sdarts.data.datasets import channel_stats




def check_arrays(data, num_classes, size):
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1:] == (3, size, size) and x.is_contiguous()
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert 0 <= int(y.min()) and int(y.max()) < num_classes
    assert data.num_classes == num_classes and len(data.mean) == len(data.std) == 3
    assert data.num_train == len(data.train_y) and not data.streaming


# ----------------------------------------------------------------------------- data sets


def test_digits_loads_offline():
    data = load_dataset("digits")
    check_arrays(data, 10, 32)
    assert data.num_train + data.num_test == 1797
    assert set(data.train_y.tolist()) == set(range(10))
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 1])  # grey: three equal channels
    np.testing.assert_allclose(data.mean, channel_stats(data.train_x)[0])


def test_synthetic_is_small_balanced_and_deterministic():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    check_arrays(a, 10, 32)
    assert 100 <= a.num_train <= 1000
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert torch.bincount(a.train_y).min() > 0


def test_synthetic_classes_are_separable():
    # Nearest class mean on raw pixels already beats chance by far: the data is learnable.
    data = load_dataset("synthetic")
    x, xt = data.train_x.flatten(1).float(), data.test_x.flatten(1).float()
    means = torch.stack([x[data.train_y == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(xt, means).argmin(1) == data.test_y).float().mean()
    assert accuracy > 0.5


def test_bad_names_and_dirs_are_named(tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="data_dir="):
        load_dataset("imagenet16", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_dataset("cifar100", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"train_data_batch_1"):
        load_dataset("imagenet16", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train/ and val/"):
        load_dataset("imagefolder", str(tmp_path))


def write_jpeg_npz(path, images_nhwc, labels):
    from PIL import Image

    blobs = []
    for image in images_nhwc:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(path, jpeg=np.concatenate(blobs), offsets=offsets, labels=np.asarray(labels, dtype=np.uint8))


def smooth_images(n, seed):
    # Smooth images survive JPEG nearly unchanged, so decoding can be checked against them.
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 255
    big = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    return big.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_cifar10_jpeg_copy_is_decoded_and_cached(tmp_path, monkeypatch):
    train, test = smooth_images(12, 0), smooth_images(5, 1)
    folder = tmp_path / "cifar10-jpeg"
    folder.mkdir()
    write_jpeg_npz(folder / "train.npz", train, np.arange(12) % 10)
    write_jpeg_npz(folder / "test.npz", test, [3, 1, 4, 1, 5])
    cache = tmp_path / "cache"
    data = load_dataset("cifar10", str(tmp_path), cache_dir=str(cache))  # finds the cifar10-jpeg subfolder
    check_arrays(data, 10, 32)
    assert data.test_y.tolist() == [3, 1, 4, 1, 5]
    error = (data.train_x.float() - torch.from_numpy(train).permute(0, 3, 1, 2).float()).abs().mean()
    assert error < 3
    assert len(list(cache.rglob("*.npy"))) == 2

    def no_decoding(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(datasets_module, "decode_jpegs", no_decoding)
    again = load_dataset("cifar10", str(folder), cache_dir=str(cache))
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_x, data.test_x)


def test_real_cifar10_jpeg_copy(data_dir):
    if not (data_dir / "cifar10-jpeg" / "train.npz").is_file():
        pytest.skip("CIFAR-10 JPEG copy not in the shared data")
    data = load_dataset("cifar10", str(data_dir))
    check_arrays(data, 10, 32)
    assert (data.num_train, data.num_test) == (50000, 10000)
    assert torch.bincount(data.train_y).tolist() == [5000] * 10
    means = data.train_x.sum(dim=(0, 2, 3), dtype=torch.int64) / (50000 * 32 * 32 * 255)
    np.testing.assert_allclose(means.tolist(), (0.4913, 0.4821, 0.4465), atol=2e-4)  # the README's figures


def test_imagenet16_pickles(tmp_path):
    rng = np.random.default_rng(0)
    kept = []
    for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
        labels = rng.integers(1, 131, size=6)  # the full files have 1000 classes; keep <= 120
        images = rng.integers(0, 256, size=(6, 3 * 16 * 16), dtype=np.uint8)
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"data": images, "labels": labels.tolist()}, f)
        kept.append((images[labels <= 120].reshape(-1, 3, 16, 16), labels[labels <= 120] - 1))
    data = load_dataset("imagenet16", str(tmp_path))
    check_arrays(data, 120, 16)
    assert data.crop_padding == 2
    assert torch.equal(data.train_x, torch.from_numpy(np.concatenate([k[0] for k in kept[:10]])))
    assert data.train_y.tolist() == np.concatenate([k[1] for k in kept[:10]]).tolist()
    assert torch.equal(data.test_x, torch.from_numpy(kept[10][0]))


def write_image_folder(root, size=32, per_class=5):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for split, n in (("train", per_class), ("val", 2)):
        for c in ("cat", "dog", "emu"):
            os.makedirs(root / split / c)
            for i in range(n):
                image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / split / c / f"{i}.png")
                pixels[(split, c, i)] = image
    return pixels


def test_imagefolder_in_memory_matches_the_files(tmp_path):
    pixels = write_image_folder(tmp_path)
    data = load_dataset("imagefolder", str(tmp_path))
    check_arrays(data, 3, 32)
    assert data.num_train == 15 and data.num_test == 6 and data.crop_padding == 4
    assert torch.equal(data.train_x[5], torch.from_numpy(pixels[("train", "dog", 0)]).permute(2, 0, 1))
    assert data.train_y.tolist() == [0] * 5 + [1] * 5 + [2] * 5


def test_imagefolder_streaming_gives_the_device_loaders_batches(tmp_path):
    write_image_folder(tmp_path)
    memory = load_dataset("imagefolder", str(tmp_path), in_memory=True)
    streamed = load_dataset("imagefolder", str(tmp_path), in_memory=False)
    assert streamed.streaming and streamed.train_x is None and streamed.num_train == 15
    args = dict(batch_size=4, augment=True, seed=3, drop_last=False)
    indices = torch.tensor([0, 2, 3, 5, 7, 8, 11, 12, 14])
    device_loader = make_loader(memory, "train", indices, **args)
    streaming_loader = make_loader(streamed, "train", indices, num_workers=0, **args)
    assert isinstance(device_loader, DeviceLoader) and isinstance(streaming_loader, StreamingLoader)
    streaming_loader.set_epoch(2)
    device_loader.set_epoch(2)
    a, b = list(device_loader), list(streaming_loader)
    assert len(a) == len(b) == len(device_loader) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        torch.testing.assert_close(xa, xb)
        assert torch.equal(ya, yb)


def test_imagefolder_resizes_to_image_size(tmp_path):
    write_image_folder(tmp_path, size=20, per_class=1)
    data = load_dataset("imagefolder", str(tmp_path), image_size=16)
    check_arrays(data, 3, 16)
    assert data.crop_padding == 2
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("imagefolder", str(tmp_path), image_size=0)


# ----------------------------------------------------------------------------- splits


def test_random_search_split():
    a, b = search_split(50000, seed=0)
    assert len(a) == len(b) == 25000
    assert a.dtype == torch.int64 and torch.equal(a, a.sort().values)
    assert torch.equal(torch.cat([a, b]).sort().values, torch.arange(50000))
    again, _ = search_split(50000, seed=0)
    other, _ = search_split(50000, seed=1)
    assert torch.equal(a, again) and not torch.equal(a, other)
    small_a, small_b = search_split(50000, seed=0, fraction=0.1)
    assert len(small_a) == len(small_b) == 2500 and not torch.isin(small_a, small_b).any()
    assert torch.isin(small_a, a).all()


def test_split_arguments_are_checked():
    with pytest.raises(ValueError, match="fraction"):
        search_split(100, 0, fraction=0)
    with pytest.raises(ValueError, match="num_train"):
        search_split(1, 0)
    with pytest.raises(FileNotFoundError, match="split_file"):
        search_split(100, 0, split_file="/nonexistent/split.txt")


def write_split(path, **lists):
    body = ",\n".join(f'  "{k}" : ["int", [{", ".join(f"{chr(34)}{i}{chr(34)}" for i in v)}]]' for k, v in lists.items())
    path.write_text("{\n" + body + "\n}\n")
    return str(path)


def test_split_file_in_the_benchmark_format(tmp_path):
    path = write_split(tmp_path / "split.txt", train=[0, 3, 5, 8], valid=[1, 2, 9])
    assert {k: v.tolist() for k, v in load_split_file(path).items()} == {"train": [0, 3, 5, 8], "valid": [1, 2, 9]}
    a, b = search_split(10, seed=0, split_file=path)
    assert a.tolist() == [0, 3, 5, 8] and b.tolist() == [1, 2, 9]
    xpath = write_split(tmp_path / "x.txt", xvalid=[4, 0], xtest=[1])
    assert [t.tolist() for t in search_split(5, 0, split_file=xpath)] == [[0, 4], [1]]
    with pytest.raises(ValueError, match="outside 0..7"):
        search_split(8, 0, split_file=path)
    with pytest.raises(ValueError, match="share indices"):
        search_split(10, 0, split_file=write_split(tmp_path / "o.txt", train=[1, 2], valid=[2]))
    with pytest.raises(ValueError, match="expected one of"):
        search_split(10, 0, split_file=write_split(tmp_path / "k.txt", a=[1], b=[2]))
    (tmp_path / "bad.txt").write_text("train: 1 2 3")
    with pytest.raises(ValueError, match="JSON-like"):
        load_split_file(str(tmp_path / "bad.txt"))


def test_the_benchmarks_cifar_split(data_dir):
    path = data_dir / "nb201" / "cifar-split.txt"
    if not path.is_file():
        pytest.skip(f"{path} not in the shared data")
    a, b = search_split(50000, seed=0, split_file=str(path))
    assert len(a) == len(b) == 25000
    assert torch.equal(torch.cat([a, b]).sort().values, torch.arange(50000))
    tests = load_split_file(str(data_dir / "nb201" / "cifar100-test-split.txt"))
    assert sorted(tests) == ["xtest", "xvalid"] and len(tests["xvalid"]) == len(tests["xtest"]) == 5000


# ----------------------------------------------------------------------------- augmentation


def reference_crop_flip(image, dy, dx, flip, padding):
    """torchvision's RandomCrop(padding) + RandomHorizontalFlip for one image, spelled out in numpy."""
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
    crop = padded[:, dy : dy + h, dx : dx + w]
    return crop[:, :, ::-1] if flip else crop


def test_crop_flip_matches_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (16, 3, 12, 10), generator=g, dtype=torch.uint8)
    for padding in (0, 2, 4):
        shifts = torch.randint(0, 2 * padding + 1, (16, 2), generator=g)
        shifts[0] = torch.tensor([0, 0])
        shifts[1] = torch.tensor([2 * padding, 2 * padding])
        flips = torch.arange(16) % 3 == 0
        out = crop_flip(images, shifts, flips, padding)
        assert out.shape == images.shape and out.dtype == torch.uint8
        for n in range(16):
            expected = reference_crop_flip(images[n].numpy(), int(shifts[n, 0]), int(shifts[n, 1]), bool(flips[n]), padding)
            np.testing.assert_array_equal(out[n].numpy(), expected)
    # Shifted to the top-left corner: the first `padding` rows are the zero border, the rest the image.
    out = crop_flip(images[:1], torch.tensor([[0, 4]]), torch.tensor([False]), 4)
    assert (out[0, :, :4] == 0).all() and torch.equal(out[0, :, 4:], images[0, :, :-4])
    centred = crop_flip(images, torch.full((16, 2), 4), torch.ones(16, dtype=torch.bool), 4)
    assert torch.equal(centred, images.flip(-1))


# ----------------------------------------------------------------------------- loaders


def indexed_images(n=50):
    """Image i is filled with i and has label i, so every batch says what it holds."""
    images = torch.arange(n).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    return images, torch.arange(n)


def loader(images=None, labels=None, **kwargs):
    if images is None:
        images, labels = indexed_images()
    args = dict(batch_size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment=False, seed=0)
    args.update(kwargs)
    return DeviceLoader(images, labels, **args)


def test_batches_are_normalized_float32():
    images, labels = indexed_images()
    it = loader(images, labels, shuffle=False)
    x, y = next(iter(it))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 8, 8) and y.dtype == torch.int64
    torch.testing.assert_close(x, (images[:8].float() / 255 - 0.5) / 0.25)
    assert y.tolist() == list(range(8))


def test_an_epoch_visits_every_sample_once():
    full = loader(drop_last=False)
    assert len(full) == 7 and len(loader(drop_last=True)) == 6
    seen = torch.cat([y for _, y in full])
    assert sorted(seen.tolist()) == list(range(50))
    assert seen.tolist() != list(range(50))  # shuffled
    assert [len(y) for _, y in full] == [8] * 6 + [2]


def test_set_epoch_replays_exactly():
    a, b = loader(augment=True), loader(augment=True)
    a.set_epoch(3)
    b.set_epoch(3)
    first = [(x.clone(), y.clone()) for x, y in a]
    for (xa, ya), (xb, yb) in zip(first, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert all(torch.equal(x, xr) for (x, _), (xr, _) in zip(first, a))  # iterating again: same epoch
    b.set_epoch(4)
    assert not all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(first, b))


def test_augmented_batches_are_crops_and_flips_of_their_samples():
    images = torch.randint(1, 256, (24, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    it = loader(images, torch.arange(24), augment=True, padding=2, mean=(0, 0, 0), std=(1 / 255,) * 3)
    for x, y in it:
        for xi, i in zip(x, y.tolist()):
            candidates = [
                reference_crop_flip(images[i].numpy(), dy, dx, flip, 2) for dy in range(5) for dx in range(5) for flip in (False, True)
            ]
            assert any(np.array_equal(xi.round().to(torch.uint8).numpy(), c) for c in candidates)


def test_ranks_split_every_global_batch():
    whole = [(x, y) for x, y in loader(augment=True, drop_last=False)]
    ranks = [list(loader(augment=True, drop_last=False, rank=r, world_size=4)) for r in range(4)]
    assert all(len(r) == len(whole) for r in ranks)
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([ranks[r][b][0] for r in range(4)]), x)
        assert torch.equal(torch.cat([ranks[r][b][1] for r in range(4)]), y)
    assert [len(ranks[r][0][1]) for r in range(4)] == [2] * 4


def test_channels_last_output():
    x, _ = next(iter(loader(channels_last=True, shuffle=False, augment=True)))
    x_ref, _ = next(iter(loader(shuffle=False, augment=True)))
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, x_ref)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 6, "world_size": 4}, ValueError, "divisible by world_size"),
        ({"rank": 2, "world_size": 2}, ValueError, "rank"),
        ({"seed": -1}, ValueError, "seed"),
        ({"batch_size": 64}, ValueError, "no batch"),
        ({"mean": (0.5,), "std": (0.2,)}, ValueError, "channels"),
    ],
)
def test_loader_arguments_are_checked(kwargs, error, message):
    with pytest.raises(error, match=message):
        loader(**kwargs)


def test_loader_inputs_are_checked():
    images, labels = indexed_images()
    with pytest.raises(TypeError, match="images_u8"):
        loader(images.float(), labels)
    with pytest.raises(ValueError, match="labels"):
        loader(images, labels[:-1])
    with pytest.raises(ValueError, match="epoch"):
        loader().set_epoch(-1)


def test_make_loader_takes_a_subset_of_a_split():
    data = load_dataset("synthetic")
    indices = torch.tensor([5, 1, 9, 30, 7, 100])
    it = make_loader(data, "train", indices, batch_size=3, augment=False, shuffle=False)
    assert isinstance(it, DeviceLoader) and len(it) == 2
    assert torch.cat([y for _, y in it]).tolist() == data.train_y[indices].tolist()
    test = make_loader(data, "test", batch_size=32, augment=False, drop_last=False)
    assert sum(len(y) for _, y in test) == data.num_test
    with pytest.raises(ValueError, match="split"):
        make_loader(data, "valid", batch_size=3, augment=False)
