"""Image datasets as uint8 tensors, ready to live on the accelerator.

``load_dataset(name, data_dir)`` returns a :class:`DatasetArrays`: train and test images as
uint8 (N, 3, H, W) tensors with int64 labels, the class count and the normalization used by
the benchmark.  Data sets too large to hold in memory (``imagefolder`` past a size budget)
come back with ``streaming=True`` and torch ``Dataset``s instead, for a DataLoader with workers.

Names:
  cifar10      torchvision CIFAR-10 in ``data_dir``, or the JPEG copy (``train.npz``/``test.npz``
               in ``data_dir`` or ``data_dir/cifar10-jpeg``), decoded once and cached
  cifar100     torchvision CIFAR-100 in ``data_dir``
  imagenet16   the benchmark's ImageNet16-120 pickles (``train_data_batch_1..10``, ``val_data``)
  imagefolder  ``data_dir/train`` and ``data_dir/val`` (or ``test``) in torchvision ImageFolder layout
  imagenet     an ImageFolder tree as above (ILSVRC-2012), at 224x224 unless image_size says otherwise
  digits       scikit-learn's bundled 8x8 digits upscaled to 32x32 RGB: real data, always offline
  synthetic    a few hundred learnable 32x32 images with class-dependent patterns (for tests)
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

Stats = Tuple[float, ...]

# Normalizations of the NAS-Bench-201 training recipe (AutoDL-Projects' values).
CIFAR_MEAN: Stats = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_STD: Stats = tuple(v / 255 for v in (63.0, 62.1, 66.7))
IMAGENET16_MEAN: Stats = tuple(v / 255 for v in (122.68, 116.66, 104.01))
IMAGENET16_STD: Stats = tuple(v / 255 for v in (63.22, 61.26, 65.09))

DATASET_NAMES = ("cifar10", "cifar100", "imagenet16", "imagefolder", "imagenet", "digits", "synthetic")
IMAGENET_SIZE = 224
IMAGENET16_CLASSES = 120
IN_MEMORY_BUDGET_BYTES = 2 << 30  # imagefolder data above this streams from disk


@dataclass
class DatasetArrays:
    """A data set's two splits and how to normalize it.

    In memory (``streaming=False``): ``train_x``/``test_x`` uint8 (N, C, H, W), ``train_y``/
    ``test_y`` int64.  Streaming: ``train_set``/``test_set`` yield (uint8 (C, H, W) tensor, label).
    ``crop_padding`` is the zero padding of the random-crop augmentation for this image size.
    """

    name: str
    num_classes: int
    mean: Stats
    std: Stats
    train_x: Optional[torch.Tensor] = None
    train_y: Optional[torch.Tensor] = None
    test_x: Optional[torch.Tensor] = None
    test_y: Optional[torch.Tensor] = None
    crop_padding: int = 4
    streaming: bool = False
    train_set: Optional[Dataset] = None
    test_set: Optional[Dataset] = None

    @property
    def num_train(self) -> int:
        return len(self.train_set) if self.streaming else len(self.train_y)

    @property
    def num_test(self) -> int:
        return len(self.test_set) if self.streaming else len(self.test_y)


def load_dataset(
    name: str,
    data_dir: Optional[str] = None,
    download: bool = False,
    *,
    cache_dir: Optional[str] = None,
    image_size: Optional[int] = None,
    in_memory: Optional[bool] = None,
) -> DatasetArrays:
    """Load data set ``name`` (see the module doc for names and the files each expects).

    Args:
        data_dir: where the files are (default ``./data``; ignored by ``digits`` and ``synthetic``).
        download: let torchvision download CIFAR (needs internet).
        cache_dir: where decoded JPEG arrays are cached (default ``$SDARTS_CACHE`` or
            ``~/.cache/sdarts``).
        image_size: ``imagefolder`` only: square side images are resized and center-cropped to
            (default: the first training image's smaller side).
        in_memory: ``imagefolder`` only: force (True) or forbid (False) decoding everything into
            memory; default: in memory when the decoded train+val fit in 2 GiB.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"name must be one of {list(DATASET_NAMES)}, got {name!r}")
    if name not in ("imagefolder", "imagenet") and (image_size is not None or in_memory is not None):
        raise ValueError(f"image_size and in_memory apply to name='imagefolder' or 'imagenet' only, not {name!r}")
    if name == "digits":
        return _digits()
    if name == "synthetic":
        return _synthetic()
    data_dir = os.path.expanduser(data_dir) if data_dir is not None else os.path.join(os.getcwd(), "data")
    if not (download and name in ("cifar10", "cifar100")) and not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data_dir={data_dir!r} does not exist (needed for dataset {name!r})")
    if name == "cifar10":
        return _cifar10(data_dir, download, cache_dir)
    if name == "cifar100":
        return _torchvision_cifar("cifar100", data_dir, download)
    if name == "imagenet16":
        return _imagenet16(data_dir)
    if name == "imagenet":
        return _imagefolder(data_dir, image_size or IMAGENET_SIZE, in_memory)
    return _imagefolder(data_dir, image_size, in_memory)


# ----------------------------------------------------------------------------- CIFAR


def _cifar10(data_dir: str, download: bool, cache_dir: Optional[str]) -> DatasetArrays:
    for folder in (data_dir, os.path.join(data_dir, "cifar10-jpeg")):
        if all(os.path.isfile(os.path.join(folder, f"{split}.npz")) for split in ("train", "test")):
            train_x, train_y = _jpeg_split(os.path.join(folder, "train.npz"), cache_dir)
            test_x, test_y = _jpeg_split(os.path.join(folder, "test.npz"), cache_dir)
            return DatasetArrays("cifar10", 10, CIFAR_MEAN, CIFAR_STD, train_x, train_y, test_x, test_y)
    return _torchvision_cifar("cifar10", data_dir, download)


def _torchvision_cifar(name: str, data_dir: str, download: bool) -> DatasetArrays:
    from torchvision import datasets

    cls, folder = (datasets.CIFAR10, "cifar-10-batches-py") if name == "cifar10" else (datasets.CIFAR100, "cifar-100-python")
    try:
        train = cls(data_dir, train=True, download=download)
        test = cls(data_dir, train=False, download=download)
    except (RuntimeError, OSError) as err:  # torchvision: not found / corrupted / no network
        jpeg_hint = " or the JPEG copy's train.npz/test.npz" if name == "cifar10" else ""
        raise FileNotFoundError(
            f"{name} not found in data_dir={data_dir!r}: put the python version ({folder}/){jpeg_hint} there, "
            f"or pass download=True on a machine with internet ({err})"
        ) from err
    return DatasetArrays(
        name,
        len(train.classes),
        CIFAR_MEAN,
        CIFAR_STD,
        _nhwc_to_tensor(train.data),
        torch.as_tensor(train.targets, dtype=torch.int64),
        _nhwc_to_tensor(test.data),
        torch.as_tensor(test.targets, dtype=torch.int64),
    )


def _nhwc_to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def default_cache_dir() -> str:
    return os.environ.get("SDARTS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sdarts")


JPEG_COPY_FORMAT = "an npz with arrays jpeg, offsets, labels"
CIFAR_SHAPE = (3, 32, 32)  # one decoded image, as cached: uint8 CHW


def _jpeg_split(npz_path: str, cache_dir: Optional[str]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decode one JPEG-copy split to uint8 NCHW, reusing a cache keyed by the file's size and mtime.

    A file that is not the JPEG copy raises a one-line ValueError naming it; a cache file that
    cannot be loaded or does not match the split (count, shape, dtype) is rebuilt, with a warning.
    """
    stat = os.stat(npz_path)
    split = os.path.splitext(os.path.basename(npz_path))[0]
    cache = os.path.join(cache_dir or default_cache_dir(), "cifar10-jpeg", f"{split}-{stat.st_size}-{stat.st_mtime_ns}.npy")
    with open(npz_path, "rb") as f:
        head = f.read(6)
        if not head.startswith(b"PK"):
            what = "an empty file" if not head else "a single .npy array" if head == b"\x93NUMPY" else f"starts with {head!r}"
            raise _not_jpeg_copy(npz_path, f"not an npz (zip) archive: {what}")
        f.seek(0)
        try:
            with np.load(f) as archive:
                missing = [k for k in ("jpeg", "offsets", "labels") if k not in archive.files]
                if missing:
                    raise _not_jpeg_copy(npz_path, f"lacks {', '.join(missing)} (has {', '.join(archive.files) or 'no arrays'})")
                labels, offsets = archive["labels"], archive["offsets"]
                _check_jpeg_index(npz_path, labels, offsets)
                images, reason = _load_cache(cache, len(labels)) if os.path.isfile(cache) else (None, None)
                if images is None:
                    images = _decode_split(npz_path, archive["jpeg"], offsets)
                    saved = _save_quietly(cache, images)
                    if reason is not None:
                        done = "rebuilt it" if saved else "decoded again but could not rewrite it"
                        print(f"sdarts: warning: decode cache {cache} was unreadable ({reason}); {done}", file=sys.stderr)
        except NotJpegCopyError:
            raise
        except zipfile.BadZipFile as err:
            raise _not_jpeg_copy(npz_path, f"a damaged or truncated zip archive ({_one_line(err)})") from None
        except _CORRUPT_NPZ as err:
            raise _not_jpeg_copy(npz_path, _one_line(err)) from None
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


# What np.load and reading an npz member raise on a damaged file (a zip that is truncated, a
# member that is not a valid .npy array, a pickled array, a failed decompression).
_CORRUPT_NPZ = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, KeyError, OSError, NotImplementedError)


class NotJpegCopyError(ValueError):
    """A ``train.npz``/``test.npz`` that is not the CIFAR-10 JPEG copy (the message names the file)."""


def _not_jpeg_copy(path: str, reason: str) -> NotJpegCopyError:
    return NotJpegCopyError(f"{path}: not the CIFAR-10 JPEG copy ({JPEG_COPY_FORMAT}): {reason}")


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()).strip("'\"") or "no details"
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_jpeg_index(path: str, labels: np.ndarray, offsets: np.ndarray) -> None:
    """The labels and offsets arrays agree with each other (the jpeg bytes are checked when decoded)."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise _not_jpeg_copy(path, f"labels must be 1-D integers, got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise _not_jpeg_copy(path, f"labels must be 0..9, got {labels.min()}..{labels.max()}")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) != len(labels) + 1:
        raise _not_jpeg_copy(path, f"offsets must be {len(labels) + 1} integers (one more than labels), got {offsets.dtype} {offsets.shape}")
    if len(offsets) and (offsets[0] < 0 or (np.diff(offsets) <= 0).any()):
        raise _not_jpeg_copy(path, "offsets must increase from >= 0")


def _load_cache(cache: str, count: int) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """(the cached images, None), or (None, why it is unusable) after deleting a bad cache file."""
    expected = (count,) + CIFAR_SHAPE
    try:
        images = np.load(cache)
    except (ValueError, EOFError, OSError) as err:  # truncated, not an .npy file, pickled
        reason = _one_line(err)
    else:
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape == expected:
            return images, None
        found = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        reason = f"holds {found}, expected uint8 {expected}"
    try:
        os.remove(cache)
    except OSError:
        pass
    return None, reason


def _decode_split(path: str, data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    if data.ndim != 1 or data.dtype != np.uint8:
        raise _not_jpeg_copy(path, f"jpeg must be 1-D uint8 bytes, got {data.dtype} {data.shape}")
    if len(offsets) and offsets[-1] > len(data):
        raise _not_jpeg_copy(path, f"offsets run to byte {offsets[-1]} but jpeg has {len(data)} bytes")
    try:
        images = decode_jpegs(data, offsets)
    except ValueError as err:  # an image that does not decode, or images of different sizes
        raise _not_jpeg_copy(path, str(err)) from None
    if images.shape[1:] != CIFAR_SHAPE:
        raise _not_jpeg_copy(path, f"the images decode to {images.shape[1:]}, not {CIFAR_SHAPE}")
    return images


def decode_jpegs(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Concatenated JPEG files (image i = data[offsets[i]:offsets[i+1]]) to uint8 (N, 3, H, W).

    Raises a one-line ValueError for an image that does not decode or images of different sizes.
    """
    from PIL import Image, UnidentifiedImageError

    def decode(i: int) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]].tobytes())) as image:
                return np.asarray(image.convert("RGB"))
        except UnidentifiedImageError:
            raise ValueError(f"image {i} (bytes {offsets[i]}..{offsets[i + 1]}) is not an image file") from None
        except (OSError, ValueError, SyntaxError) as err:  # PIL: truncated / broken image
            raise ValueError(f"image {i} (bytes {offsets[i]}..{offsets[i + 1]}) does not decode ({_one_line(err)})") from None

    # PIL releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        decoded = list(pool.map(decode, range(len(offsets) - 1), chunksize=512))
    shapes = {image.shape for image in decoded}
    if len(shapes) > 1:
        first = next(i for i, image in enumerate(decoded) if image.shape != decoded[0].shape)
        raise ValueError(f"image {first} is {decoded[first].shape[:2]} but image 0 is {decoded[0].shape[:2]} (sizes differ)")
    nhwc = np.stack(decoded) if decoded else np.zeros((0, 32, 32, 3), np.uint8)
    return np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))


def _save_quietly(path: str, array: np.ndarray) -> bool:
    """Write a cache file atomically (True when written); an unwritable cache only costs a re-decode next time."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        return False
    return True


# ----------------------------------------------------------------------------- ImageNet16-120


def _imagenet16(data_dir: str) -> DatasetArrays:
    train_files = [f"train_data_batch_{i}" for i in range(1, 11)]
    missing = [f for f in train_files + ["val_data"] if not os.path.isfile(os.path.join(data_dir, f))]
    if missing:
        raise FileNotFoundError(f"data_dir={data_dir!r} lacks the ImageNet16 file(s) {missing}")
    train_x, train_y = _imagenet16_files([os.path.join(data_dir, f) for f in train_files])
    test_x, test_y = _imagenet16_files([os.path.join(data_dir, "val_data")])
    return DatasetArrays(
        "imagenet16", IMAGENET16_CLASSES, IMAGENET16_MEAN, IMAGENET16_STD, train_x, train_y, test_x, test_y, crop_padding=2
    )


def _imagenet16_files(paths: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The benchmark's pickles: 'data' (N, 3*16*16, channel-major) and 1-based 'labels'; keep classes <= 120."""
    images, labels = [], []
    for path in paths:
        data, targets = _imagenet16_file(path)
        images.append(data)
        labels.append(targets)
    x, y = np.concatenate(images), np.concatenate(labels)
    keep = y <= IMAGENET16_CLASSES
    return torch.from_numpy(np.ascontiguousarray(x[keep])), torch.from_numpy(y[keep] - 1)


IMAGENET16_FORMAT = "a pickled dict with 'data' (N, 768) uint8 and 'labels' (N,) 1-based"


def _imagenet16_file(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """One pickle as (uint8 (N, 3, 16, 16), int64 (N,) labels); a bad file raises a one-line ValueError naming it."""

    def bad(reason: str) -> ValueError:
        return ValueError(f"{path}: not an ImageNet16-120 file ({IMAGENET16_FORMAT}): {reason}")

    with open(path, "rb") as f:
        try:
            entry = pickle.load(f, encoding="latin1")  # the benchmark's own format; trusted input
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as err:
            raise bad(_one_line(err)) from None  # truncated (EOFError, "truncated"), not a pickle ("invalid load key")
    if not isinstance(entry, dict):
        raise bad(f"it holds a {type(entry).__name__}, not a dict")
    missing = [k for k in ("data", "labels") if k not in entry]
    if missing:
        raise bad(f"lacks {', '.join(repr(k) for k in missing)} (has {', '.join(repr(k) for k in entry)})")
    try:
        data = np.asarray(entry["data"])
        labels = np.asarray(entry["labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as err:
        raise bad(_one_line(err)) from None
    if data.ndim != 2 or data.shape[1] != 3 * 16 * 16 or data.dtype.kind not in "iu":
        raise bad(f"'data' is {data.dtype} {data.shape}, expected uint8 (N, {3 * 16 * 16})")
    if labels.shape != (len(data),):
        raise bad(f"'labels' has shape {labels.shape} for {len(data)} images")
    if len(labels) and labels.min() < 1:
        raise bad(f"'labels' must be 1-based class numbers, found {labels.min()}")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 16, 16), labels


# ----------------------------------------------------------------------------- ImageFolder


class SquareUint8:
    """PIL image -> uint8 (3, size, size) tensor: resize the smaller side, then center-crop."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = TF.center_crop(TF.resize(image, self.size), [self.size, self.size])
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()


def _imagefolder(data_dir: str, image_size: Optional[int], in_memory: Optional[bool]) -> DatasetArrays:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    train_dir = os.path.join(data_dir, "train")
    eval_dir = next((os.path.join(data_dir, d) for d in ("val", "test") if os.path.isdir(os.path.join(data_dir, d))), None)
    if not os.path.isdir(train_dir) or eval_dir is None:
        raise FileNotFoundError(f"data_dir={data_dir!r} must hold train/ and val/ (or test/) class folders")
    if image_size is None:
        with Image.open(ImageFolder(train_dir).samples[0][0]) as first:
            image_size = min(first.size)
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    transform = SquareUint8(image_size)
    train_set, test_set = ImageFolder(train_dir, transform=transform), ImageFolder(eval_dir, transform=transform)
    if test_set.classes != train_set.classes:
        raise ValueError(f"{eval_dir} has classes {test_set.classes}, {train_dir} has {train_set.classes}")
    if in_memory is None:
        in_memory = (len(train_set) + len(test_set)) * 3 * image_size**2 <= IN_MEMORY_BUDGET_BYTES
    padding = max(1, image_size // 8)  # 4 for 32x32, as for CIFAR
    if not in_memory:
        sample = [train_set[i][0] for i in np.linspace(0, len(train_set) - 1, min(len(train_set), 1000)).astype(int)]
        mean, std = channel_stats(torch.stack(sample))
        return DatasetArrays(
            "imagefolder", len(train_set.classes), mean, std, crop_padding=padding, streaming=True, train_set=train_set, test_set=test_set
        )
    train_x, train_y = _decode_all(train_set)
    test_x, test_y = _decode_all(test_set)
    mean, std = channel_stats(train_x)
    return DatasetArrays("imagefolder", len(train_set.classes), mean, std, train_x, train_y, test_x, test_y, crop_padding=padding)


def _decode_all(dataset) -> Tuple[torch.Tensor, torch.Tensor]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        images = list(pool.map(lambda i: dataset[i][0], range(len(dataset)), chunksize=64))
    return torch.stack(images), torch.as_tensor(dataset.targets, dtype=torch.int64)


def channel_stats(images_u8: torch.Tensor) -> Tuple[Stats, Stats]:
    """Per-channel mean and std of uint8 (N, C, H, W) images, on the [0, 1] scale."""
    x = images_u8.to(torch.float64).div_(255).transpose(0, 1).reshape(images_u8.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


# ----------------------------------------------------------------------------- built-in


def _digits() -> DatasetArrays:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) as 32x32 RGB; 80/20 split, fixed seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = torch.from_numpy(bunch.images).to(torch.float32).mul_(255 / 16).unsqueeze(1)
    big = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False)
    images = big.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return _split_built_in("digits", images, labels, 10, test_fraction=0.2)


def _synthetic(num_classes: int = 10, per_class: int = 50, size: int = 32) -> DatasetArrays:
    """Each class is a fixed smooth colour pattern; images are that pattern, randomly shifted, plus noise."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g) * 255
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    shifts = torch.randint(-3, 4, (len(labels), 2), generator=g)
    images = torch.stack([torch.roll(patterns[c], (int(dy), int(dx)), dims=(1, 2)) for c, (dy, dx) in zip(labels.tolist(), shifts)])
    images = images + torch.randn(images.shape, generator=g) * 30
    return _split_built_in("synthetic", images.round_().clamp_(0, 255).to(torch.uint8), labels, num_classes, test_fraction=0.2)


def _split_built_in(name: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int, test_fraction: float) -> DatasetArrays:
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test].sort().values, order[n_test:].sort().values
    mean, std = channel_stats(images[train])
    return DatasetArrays(name, num_classes, mean, std, images[train], labels[train], images[test], labels[test])


