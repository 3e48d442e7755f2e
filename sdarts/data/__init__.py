"""Data: uint8 datasets, the search split, and loaders that batch and augment on the device."""

from .datasets import DATASET_NAMES, DatasetArrays, load_dataset
from .device_loader import DeviceLoader, StreamingLoader, crop_flip, make_loader
from .locate import shared_data_dir
from .splits import load_split_file, search_split

__all__ = [
    "DATASET_NAMES",
    "DatasetArrays",
    "load_dataset",
    "DeviceLoader",
    "StreamingLoader",
    "crop_flip",
    "make_loader",
    "shared_data_dir",
    "load_split_file",
    "search_split",
]
