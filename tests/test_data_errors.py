"""Bad data files: a one-line error that names the file and says what it should be."""

import io
import os
import pickle

import numpy as np
import pytest
import torch

from sdarts.nb201 import NB201Table
from sdarts.data import load_dataset, load_split_file
from sdarts.data.datasets import _jpeg_split

JPEG_COPY = "not the CIFAR-10 JPEG copy (an npz with arrays jpeg, offsets, labels)"


def jpeg_npz(path, n=6, seed=0, size=32):
    """A tiny real JPEG copy: n smooth images, JPEG-encoded with PIL."""
    from PIL import Image

    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 255
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    blobs = []
    for image in images.round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(path, jpeg=np.concatenate(blobs), offsets=offsets, labels=(np.arange(n) % 10).astype(np.uint8))
    return str(path)


def one_line_naming(err, path, *phrases):
    message = str(err.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for phrase in phrases:
        assert phrase in message, message
    return message


# ----------------------------------------------------------------------------- CIFAR-10 JPEG copy


def test_npz_with_other_arrays(tmp_path):
    path = tmp_path / "train.npz"
    np.savez(path, images=np.zeros((2, 32, 32, 3), np.uint8), targets=np.zeros(2, np.uint8))
    with pytest.raises(ValueError) as err:
        _jpeg_split(str(path), str(tmp_path / "cache"))
    message = one_line_naming(err, path, JPEG_COPY, "lacks jpeg, offsets, labels", "has images, targets")
    assert not isinstance(err.value, KeyError), message


def test_truncated_npz(tmp_path):
    path = tmp_path / "train.npz"
    jpeg_npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as err:
        _jpeg_split(str(path), str(tmp_path / "cache"))
    one_line_naming(err, path, JPEG_COPY, "a damaged or truncated zip archive")


def test_random_bytes_npz(tmp_path):
    path = tmp_path / "test.npz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError) as err:
        _jpeg_split(str(path), str(tmp_path / "cache"))
    message = one_line_naming(err, path, JPEG_COPY, "not an npz (zip) archive")
    assert "pickle" not in message


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "an empty file"), (b"\x93NUMPY\x01\x00", "a single .npy array")],
)
def test_empty_file_or_npy_named_npz(tmp_path, content, reason):
    path = tmp_path / "train.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        _jpeg_split(str(path), str(tmp_path / "cache"))
    one_line_naming(err, path, JPEG_COPY, reason)


def test_npz_whose_arrays_disagree(tmp_path):
    path = tmp_path / "train.npz"
    np.savez(path, jpeg=np.zeros(10, np.uint8), offsets=np.arange(3), labels=np.zeros(5, np.uint8))
    with pytest.raises(ValueError) as err:
        _jpeg_split(str(path), str(tmp_path / "cache"))
    one_line_naming(err, path, JPEG_COPY, "offsets must be 6 integers")


def test_npz_with_bytes_that_are_not_jpeg(tmp_path):
    path = tmp_path / "train.npz"
    np.savez(path, jpeg=np.arange(40, dtype=np.uint8), offsets=np.array([0, 20, 40]), labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError) as err:
        _jpeg_split(str(path), str(tmp_path / "cache"))
    one_line_naming(err, path, JPEG_COPY, "image 0 (bytes 0..20) is not an image file")
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_load_dataset_names_the_bad_split(tmp_path):
    jpeg_npz(tmp_path / "train.npz")
    (tmp_path / "test.npz").write_bytes(b"not an archive at all")
    with pytest.raises(ValueError) as err:
        load_dataset("cifar10", str(tmp_path), cache_dir=str(tmp_path / "cache"))
    one_line_naming(err, tmp_path / "test.npz", JPEG_COPY)


# ----------------------------------------------------------------------------- decode cache


def only_cache(cache_dir):
    files = list(cache_dir.rglob("*.npy"))
    assert len(files) == 1, files
    return files[0]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:300]), "ValueError"),  # truncated mid-array
        (lambda p: p.write_bytes(p.read_bytes()[:20]), "ValueError"),  # truncated in the header
        (lambda p: p.write_bytes(b""), "EOFError"),
        (lambda p: np.save(p, np.zeros((4, 3, 32, 32), np.uint8)), "holds uint8 (4, 3, 32, 32), expected uint8 (6, 3, 32, 32)"),
        (lambda p: np.save(p, np.zeros((6, 32, 32, 3), np.uint8)), "holds uint8 (6, 32, 32, 3)"),
        (lambda p: np.save(p, np.zeros((6, 3, 32, 32), np.float32)), "holds float32 (6, 3, 32, 32)"),
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "ValueError"),  # pickled
    ],
)
def test_bad_decode_cache_is_rebuilt_with_a_warning(tmp_path, capsys, damage, reason):
    npz = jpeg_npz(tmp_path / "train.npz")
    cache_dir = tmp_path / "cache"
    images, labels = _jpeg_split(npz, str(cache_dir))
    assert capsys.readouterr().err == ""
    cache = only_cache(cache_dir)
    damage(cache)
    again, again_labels = _jpeg_split(npz, str(cache_dir))
    assert torch.equal(again, images) and torch.equal(again_labels, labels)
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"sdarts: warning: decode cache {cache} was unreadable (")
    assert err.endswith("); rebuilt it\n") and reason in err, err
    assert only_cache(cache_dir) == cache  # the same key, rewritten
    assert torch.equal(torch.from_numpy(np.load(cache)), images)
    _jpeg_split(npz, str(cache_dir))  # now quiet again
    assert capsys.readouterr().err == ""


def test_bad_cache_under_sdarts_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDARTS_CACHE", str(tmp_path / "env-cache"))
    jpeg_npz(tmp_path / "train.npz", n=4)
    jpeg_npz(tmp_path / "test.npz", n=3, seed=1)
    first = load_dataset("cifar10", str(tmp_path))
    train_cache = next((tmp_path / "env-cache" / "cifar10-jpeg").glob("train-*.npy"))
    train_cache.write_bytes(train_cache.read_bytes()[:100])
    capsys.readouterr()
    again = load_dataset("cifar10", str(tmp_path))
    assert torch.equal(again.train_x, first.train_x)
    assert f"decode cache {train_cache} was unreadable" in capsys.readouterr().err


# ----------------------------------------------------------------------------- text files


def test_binary_nb201_table(tmp_path):
    path = tmp_path / "nb201.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(ValueError) as err:
        NB201Table.from_csv(path)
    message = one_line_naming(err, path, "not a text CSV table", "arch_str, index")
    assert "codec" not in message


def test_nul_bytes_nb201_table(tmp_path):
    path = tmp_path / "zeros.csv"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError) as err:
        NB201Table.from_csv(path)
    one_line_naming(err, path, "not a text CSV table")


def test_binary_split_file(tmp_path):
    path = tmp_path / "cifar-split.txt"
    path.write_bytes(pickle.dumps({"train": list(range(5))}) + b"\xff\xfe")
    with pytest.raises(ValueError) as err:
        load_split_file(str(path))
    message = one_line_naming(err, path, "not a text split file")
    assert "codec" not in message


def test_split_file_with_a_non_integer_index(tmp_path):
    path = tmp_path / "split.txt"
    path.write_text('{"train": ["int", ["0", "x1"]], "valid": ["int", ["2"]]}')
    with pytest.raises(ValueError) as err:
        load_split_file(str(path))
    one_line_naming(err, path, "entry 'train' holds 'x1', not an integer index")


# ----------------------------------------------------------------------------- ImageNet16-120

IMAGENET16 = "not an ImageNet16-120 file"


def imagenet16_dir(tmp_path, val_bytes=None):
    rng = np.random.default_rng(0)
    for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
        entry = {"data": rng.integers(0, 256, size=(4, 768), dtype=np.uint8), "labels": [1, 2, 3, 4]}
        (tmp_path / name).write_bytes(pickle.dumps(entry))
    if val_bytes is not None:
        (tmp_path / "val_data").write_bytes(val_bytes(pickle.dumps(entry)))
    return str(tmp_path)


@pytest.mark.parametrize(
    "val_bytes, reason",
    [
        (lambda good: good[: len(good) // 2], "truncated"),
        (lambda good: b"", "EOFError"),
        (lambda good: bytes(range(7, 200)), "UnpicklingError"),
        (lambda good: pickle.dumps([1, 2, 3]), "it holds a list, not a dict"),
        (lambda good: pickle.dumps({"x": 1}), "lacks 'data', 'labels'"),
        (lambda good: pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [1] * 4}), "'data' is uint8 (4, 100)"),
        (lambda good: pickle.dumps({"data": np.zeros((4, 768), np.uint8), "labels": [1] * 3}), "'labels' has shape (3,)"),
        (lambda good: pickle.dumps({"data": np.zeros((4, 768), np.uint8), "labels": ["a"] * 4}), "ValueError"),
    ],
)
def test_bad_imagenet16_file(tmp_path, val_bytes, reason):
    data_dir = imagenet16_dir(tmp_path, val_bytes)
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet16", data_dir)
    one_line_naming(err, os.path.join(data_dir, "val_data"), IMAGENET16, reason)


def test_good_imagenet16_still_loads(tmp_path):
    data = load_dataset("imagenet16", imagenet16_dir(tmp_path))
    assert data.train_x.shape == (40, 3, 16, 16) and data.train_x.dtype == torch.uint8
    assert data.test_y.tolist() == [0, 1, 2, 3]


def test_npz_with_a_truncated_jpeg(tmp_path):
    path = tmp_path / "train.npz"
    jpeg_npz(path, n=2)
    with np.load(path) as archive:
        jpeg, offsets, labels = archive["jpeg"], archive["offsets"], archive["labels"]
    cut = np.concatenate([jpeg[: offsets[1]], jpeg[offsets[1] : offsets[1] + 200]])
    np.savez(path, jpeg=cut, offsets=np.array([0, offsets[1], len(cut)]), labels=labels)
    with pytest.raises(ValueError) as err:
        _jpeg_split(str(path), str(tmp_path / "cache"))
    one_line_naming(err, path, JPEG_COPY, f"image 1 (bytes {offsets[1]}..{len(cut)}) does not decode")


def test_npz_of_images_that_are_not_32x32(tmp_path):
    path = tmp_path / "train.npz"
    jpeg_npz(path, n=2, size=16)
    with pytest.raises(ValueError) as err:
        _jpeg_split(str(path), str(tmp_path / "cache"))
    one_line_naming(err, path, JPEG_COPY, "the images decode to (3, 16, 16), not (3, 32, 32)")
    small, big = tmp_path / "small.npz", tmp_path / "big.npz"
    jpeg_npz(small, n=1, size=16)
    jpeg_npz(big, n=1)
    with np.load(small) as a, np.load(big) as b:
        jpeg = np.concatenate([b["jpeg"], a["jpeg"]])
        offsets = np.array([0, len(b["jpeg"]), len(jpeg)])
    np.savez(path, jpeg=jpeg, offsets=offsets, labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError) as err:
        _jpeg_split(str(path), str(tmp_path / "cache"))
    one_line_naming(err, path, JPEG_COPY, "image 1 is (16, 16) but image 0 is (32, 32) (sizes differ)")
