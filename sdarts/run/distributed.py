"""Several processes searching together (``torchrun``): setup, gradient averaging, checks.

Every rank holds the whole supernet; each step every rank averages the gradients of w and
alpha over all ranks before its optimizers step, so that w and alpha stay identical
everywhere (checked each epoch by :func:`alpha_rank_spread`).  One flat all-reduce per
parameter group keeps the step to a single collective.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (NCCL for CUDA,
    gloo otherwise); a single process when ``WORLD_SIZE`` is absent or 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_(tensors: Sequence[Tensor], op: str = "sum") -> None:
    """In-place all-reduce of ``tensors`` (``"sum"``, ``"mean"`` or ``"min"``), one collective
    per dtype."""
    reduce_op = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op]
    by_dtype = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=reduce_op)
        if op == "mean":  # gloo has no AVG
            flat /= dist.get_world_size()
        offset = 0
        for t in group:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()


def average_grads(params: Sequence[Tensor]) -> None:
    """Average ``.grad`` over ranks.  Every rank runs the same graph, so the parameters
    without a gradient are the same everywhere and are skipped, as a single process would."""
    all_reduce_([p.grad for p in params if p.grad is not None], "mean")


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (same start everywhere)."""
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def alpha_rank_spread(alphas: Sequence[Tensor]) -> Optional[float]:
    """Largest difference between any rank's alpha and rank 0's (0.0 when identical); None
    in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    mine = torch.cat([a.detach().reshape(-1) for a in alphas])
    reference = mine.clone()
    dist.broadcast(reference, src=0)
    spread = (mine - reference).abs().max().reshape(1)
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return float(spread.item())
