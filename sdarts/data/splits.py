"""The search split: the training set cut into two disjoint halves (weights / architecture batches).

Either a seeded random half/half split, or the benchmark's own split file
(``nb201/cifar-split.txt``: ``{"train": ["int", ["0", "5", ...]], "valid": ["int", [...]]}``,
25k/25k indices into CIFAR-10's original training order).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

import torch

# Key pairs the benchmark's split files use, in (first, second) order.
_SPLIT_KEYS = (("train", "valid"), ("xvalid", "xtest"))


def load_split_file(path: str) -> Dict[str, torch.Tensor]:
    """Every index list of a benchmark split file, as int64 tensors keyed by name."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split_file={path!r} does not exist")
    with open(path, encoding="utf-8-sig") as f:
        try:
            content = json.load(f)
        except UnicodeDecodeError as err:
            raise ValueError(
                f"split_file={path!r}: not a text split file (the benchmark's JSON-like index lists): "
                f"it holds byte 0x{err.object[err.start]:02x}, which is not UTF-8 text"
            ) from None
        except json.JSONDecodeError as err:
            raise ValueError(f"split_file={path!r} is not the benchmark's JSON-like split format: {err}") from None
    if not isinstance(content, dict):
        raise ValueError(f"split_file={path!r} must hold a mapping of split names, got {type(content).__name__}")
    splits = {}
    for name, value in content.items():
        if not (isinstance(value, list) and len(value) == 2 and value[0] == "int" and isinstance(value[1], list)):
            raise ValueError(f"split_file={path!r}: entry {name!r} must be [\"int\", [indices...]]")
        try:
            splits[name] = torch.tensor([int(i) for i in value[1]], dtype=torch.int64)
        except (TypeError, ValueError, OverflowError, RuntimeError):
            bad = next((i for i in value[1] if not _is_index(i)), value[1])
            raise ValueError(f"split_file={path!r}: entry {name!r} holds {bad!r}, not an integer index") from None
    return splits


def _is_index(value) -> bool:
    try:
        torch.tensor([int(value)], dtype=torch.int64)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        return False
    return True


def search_split(
    num_train: int, seed: int, split_file: Optional[str] = None, fraction: float = 1.0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint, sorted int64 index sets into the training set.

    Args:
        num_train: training set size (50,000 for CIFAR-10).
        seed: seeds the random half/half split, and the subsample when ``fraction < 1``.
        split_file: the benchmark's split file instead of a random split.
        fraction: keep this fraction of each half (a seeded subsample) for quick runs.
    """
    if not isinstance(num_train, int) or num_train < 2:
        raise ValueError(f"num_train must be an int >= 2, got {num_train!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    g = torch.Generator().manual_seed(seed)
    if split_file is None:
        order = torch.randperm(num_train, generator=g)
        half = num_train // 2
        a, b = order[:half], order[half:]
    else:
        splits = load_split_file(split_file)
        keys = next((pair for pair in _SPLIT_KEYS if all(k in splits for k in pair)), None)
        if keys is None:
            raise ValueError(f"split_file={split_file!r} has lists {sorted(splits)}; expected one of {list(_SPLIT_KEYS)}")
        a, b = splits[keys[0]], splits[keys[1]]
        for name, idx in zip(keys, (a, b)):
            if len(idx) and (idx.min() < 0 or idx.max() >= num_train):
                raise ValueError(f"split_file={split_file!r}: {name!r} indexes outside 0..{num_train - 1} (num_train={num_train})")
        if torch.isin(a, b).any():
            raise ValueError(f"split_file={split_file!r}: {keys[0]!r} and {keys[1]!r} share indices")
    if fraction < 1.0:
        a = a[torch.randperm(len(a), generator=g)[: max(1, round(len(a) * fraction))]]
        b = b[torch.randperm(len(b), generator=g)[: max(1, round(len(b) * fraction))]]
    return a.sort().values, b.sort().values
