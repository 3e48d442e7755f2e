"""Measuring what autograd keeps: the bytes saved for backward by a forward pass."""

from __future__ import annotations

import collections
from typing import Callable, Dict, Iterable, List

import torch


def saved_bytes(fn: Callable[[], object], ignore: Iterable[torch.Tensor] = ()) -> Dict[str, int]:
    """Bytes autograd saves for backward while ``fn()`` runs its forward.

    Counts unique storages (views of one tensor count once), skipping those of ``ignore``
    (e.g. module parameters, which every variant holds anyway).  Returns
    ``{"bytes": ..., "tensors": ...}``; ``fn``'s result is kept alive until counting ends
    so that no storage is freed and its address reused mid-count.
    """
    skip = {t.untyped_storage().data_ptr() for t in ignore}
    storages: Dict[tuple, int] = {}
    keep: List[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (t.device.type, t.device.index, storage.data_ptr())
        if storage.data_ptr() not in skip:
            storages[key] = storage.nbytes()
        keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    total = sum(storages.values())
    del result, keep
    return {"bytes": total, "tensors": len(storages)}


# Ops that launch no kernel: views, metadata, bare allocations.
_NO_KERNEL = {"detach", "empty", "empty_like", "new_empty", "empty_strided", "alias", "lift_fresh", "_local_scalar_dense"}


def kernel_ops(fn: Callable[[], object]) -> "collections.Counter[str]":
    """The aten ops ``fn()`` dispatches that do work (views and bare allocations left out),
    counted by name.  At search shapes a GPU step costs about one launch per op, so this
    device-independent count predicts the launch-bound GPU step from a CPU run."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts: "collections.Counter[str]" = collections.Counter()

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if not (func.is_view or name in _NO_KERNEL):
                counts[name] += 1
            return func(*args, **(kwargs or {}))

    with _Count():
        result = fn()
    del result
    return counts
