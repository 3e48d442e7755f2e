"""Checkpoints written atomically, read with a clear error, and the RNG states they carry.

A checkpoint is written to a temporary file in the destination's directory and moved over
the old one with ``os.replace``, so a run killed while saving keeps its previous checkpoint
intact.  Together with per-epoch loader seeding, the saved RNG states make a resumed run end
bit-for-bit where an uninterrupted one would (on the CPU).
"""

from __future__ import annotations

import math
import os
import pickle
import random
import tempfile
import zipfile
from collections import defaultdict
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read."""


def _float_leaves(obj: Any, name: str) -> Iterator[Tuple[str, Any]]:
    """Every floating tensor or float inside nested dicts / lists / tuples, with its path."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            yield name, obj
    elif isinstance(obj, float):
        yield name, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _float_leaves(value, f"{name}.{key}" if name else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _float_leaves(value, f"{name}[{i}]")


def first_nonfinite(state: Any) -> Optional[str]:
    """The path (e.g. ``model.cells.3.bn.running_var``) of the first NaN/inf value in ``state``,
    or None when every float in it is finite.  One host synchronisation per device."""
    tensors: Dict[torch.device, List[Tuple[str, torch.Tensor]]] = defaultdict(list)
    for name, value in _float_leaves(state, ""):
        if isinstance(value, float):
            if not math.isfinite(value):
                return name
        else:
            tensors[value.device].append((name, value))
    for entries in tensors.values():
        flags = torch.stack([torch.isfinite(t).all() for _, t in entries]).cpu()
        if not bool(flags.all()):
            return entries[int((~flags).nonzero()[0])][0]
    return None


def save_checkpoint(state: Dict[str, Any], path: os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same directory + rename).

    A failed write (a full disk, say) raises CheckpointError and leaves the previous
    checkpoint at ``path`` untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=directory)
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path} ({err.strerror or err}){_previous(path)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        # torch reports a full disk as a RuntimeError from its zip writer; say what happened.
        os.unlink(tmp)
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise CheckpointError(f"cannot write checkpoint {path} ({reason}){_previous(path)}") from None
    except BaseException:
        os.unlink(tmp)
        raise


def _previous(path: str) -> str:
    return "; the previous checkpoint there is intact" if os.path.isfile(path) else ""


def load_checkpoint(path: os.PathLike) -> Dict[str, Any]:
    """The state saved at ``path`` (on the CPU); CheckpointError saying why it cannot be read."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        # torch's own messages here are long and about pickling; say what the user can act on.
        raise CheckpointError(f"cannot read checkpoint {path} ({type(err).__name__}): truncated, corrupt or not an sdarts checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot read checkpoint {path}: it holds a {type(state).__name__}, not a search state")
    return state


def capture_rng_state() -> Dict[str, Any]:
    """Every global RNG a search may draw from (torch CPU/CUDA, numpy, Python)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy's state as plain values, so the checkpoint loads with weights_only=True.
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": random.getstate(),
    }


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
