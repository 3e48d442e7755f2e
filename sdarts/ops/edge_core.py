"""The engine's core, shared by every mixed-edge entry point (``mixed_sum``, ``mixed_edge``,
``mixed_normalized_edge``): argument checks, the one-layout rule, the forward and backward
passes on a backend (chunked over K when an edge has more branches than one kernel call
takes), and per-channel moments.  Only public names: the entry points build on these and
import nothing private from each other.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import backends
from .reference import MAX_BRANCHES

# -- argument checks ------------------------------------------------------------------------


def check_float(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_branch_list(branches) -> None:
    # A stacked tensor would be iterated along dim 0, silently, as K slices.
    if isinstance(branches, Tensor) or not isinstance(branches, (list, tuple)):
        raise TypeError(f"branches must be a list or tuple of tensors, got {type(branches).__name__}")


def check_operands(branches: Sequence[Tensor], x: Optional[Tensor] = None, four_d: bool = True) -> None:
    """Every branch (and x) a floating-point tensor of branch 0's shape, dtype and device."""
    operands = [*branches, x] if x is not None else list(branches)
    like = operands[0]
    # One pass of cheap reads first: this runs on every edge of every step; a failure is
    # then explained by the checks below, operand by operand.
    if isinstance(like, Tensor) and like.is_floating_point() and (not four_d or like.dim() == 4):
        shape, dtype, device = like.shape, like.dtype, like.device
        if all(isinstance(t, Tensor) and t.shape == shape and t.dtype == dtype and t.device == device for t in operands):
            return
    named = [(f"branches[{i}]", b) for i, b in enumerate(branches)] + ([("x", x)] if x is not None else [])
    for name, t in named:
        check_float(name, t)
        if four_d and t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(t.shape)}")
    first, like = named[0]
    for name, t in named[1:]:
        if t.shape != like.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, {first} has {tuple(like.shape)}")
        if t.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, {first} has {like.dtype}")
        if t.device != like.device:
            raise ValueError(f"{name} is on {t.device}, {first} on {like.device}")


def check_coef(coef: Tensor, num_branches: int) -> None:
    check_float("coef", coef)
    if coef.shape != (num_branches + 2,):
        raise ValueError(f"coef must have shape ({num_branches + 2},) (B branches + skip + pool), got {tuple(coef.shape)}")


# -- layouts --------------------------------------------------------------------------------


def common_layout(tensors: Sequence[Tensor]) -> List[Tensor]:
    """One dense layout for all operands: keep contiguous / channels_last, copy anything else."""
    first = tensors[0]
    strides = first.stride()
    dense = first.is_contiguous() or (first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last))
    if dense and all(t.stride() == strides for t in tensors):
        return list(tensors)
    fmt = torch.channels_last if first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return [t.contiguous(memory_format=fmt) for t in tensors]


def like_layout(t: Tensor, like: Tensor) -> Tensor:
    """Give ``t`` the strides of ``like`` (kernels require one layout for all operands)."""
    if t.stride() == like.stride():
        return t
    out = torch.empty_like(like, dtype=t.dtype)
    out.copy_(t)
    return out


# -- the passes on one backend ---------------------------------------------------------------


def forward_pass(
    branches: List[Tensor],
    coef: Tensor,
    scale: Optional[Tensor],
    shift: Optional[Tensor],
    x: Optional[Tensor],
    has_skip: bool,
    has_pool: bool,
    backend: str,
) -> Tensor:
    """The forward on one backend (the custom op and the eager Function both call this)."""
    impl = backends.implementation(backend)
    if len(branches) <= MAX_BRANCHES:
        return impl.mixed_forward(list(branches), coef, scale, shift, x, has_skip, has_pool)
    # More branches than one kernel call takes: chunk, and add the partial sums.
    out = None
    for start in range(0, len(branches), MAX_BRANCHES):
        stop = min(start + MAX_BRANCHES, len(branches))
        first = start == 0
        chunk_coef = torch.cat([coef[start:stop], coef[-2:] if first else torch.zeros_like(coef[-2:])])
        part = impl.mixed_forward(
            list(branches[start:stop]),
            chunk_coef,
            None if scale is None else scale[start:stop],
            None if shift is None else shift[start:stop],
            x,
            has_skip and first,
            has_pool and first,
        )
        out = part if out is None else out.add_(part)
    return out


def backward_pass(
    grad_out: Tensor,
    branches: List[Tensor],
    coef: Tensor,
    scale: Optional[Tensor],
    x: Optional[Tensor],
    has_skip: bool,
    has_pool: bool,
    need_branch_grads: bool,
    need_x_grad: bool,
    backend: str,
) -> Tuple[List[Tensor], Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(branch grads (if requested), grad_x, chan_dot, chan_gsum, dot_skip, dot_pool) on one backend."""
    impl = backends.implementation(backend)
    if len(branches) <= MAX_BRANCHES:
        gb, gx, cd, gs, ds, dp = impl.mixed_backward(
            grad_out, list(branches), coef, scale, x, has_skip, has_pool, need_branch_grads, need_x_grad
        )
        return list(gb), gx, cd, gs, ds, dp
    grad_branches, chan_dots = [], []
    for start in range(0, len(branches), MAX_BRANCHES):
        stop = min(start + MAX_BRANCHES, len(branches))
        first = start == 0
        chunk_coef = torch.cat([coef[start:stop], coef[-2:]])
        gb, gx, cd, gs, ds, dp = impl.mixed_backward(
            grad_out,
            list(branches[start:stop]),
            chunk_coef,
            None if scale is None else scale[start:stop],
            x,
            has_skip and first,
            has_pool and first,
            need_branch_grads,
            need_x_grad and first,
        )
        grad_branches += list(gb)
        chan_dots.append(cd)
        if first:
            grad_x, chan_gsum, dot_skip, dot_pool = gx, gs, ds, dp
    return grad_branches, grad_x, torch.cat(chan_dots), chan_gsum, dot_skip, dot_pool


# -- per-channel moments ----------------------------------------------------------------------


def _rows(c: Tensor) -> Tuple[Tensor, int]:
    """c as a 2-D view whose reduction axes are contiguous, and the channel axis of that view."""
    n, ch = c.shape[:2]
    if c.is_contiguous():
        return c.view(n, ch, -1), 1
    if c.is_contiguous(memory_format=torch.channels_last):
        return c.permute(0, 2, 3, 1).reshape(-1, ch), 1
    return c.transpose(0, 1).reshape(ch, -1), 0


def moments(c: Tensor) -> Tuple[Tensor, Tensor]:
    ch = c.shape[1]
    count = c.numel() // ch
    acc = torch.float64 if c.dtype == torch.float64 else torch.float32
    view, channel_axis = _rows(c.to(acc) if c.dtype != acc else c)
    if view.dim() == 3:  # (N, C, HW): reduce HW (contiguous), then N
        s1 = view.sum(-1).sum(0)
        s2 = torch.linalg.vector_norm(view, dim=-1).square().sum(0)
    elif channel_axis == 1:  # (N*H*W, C): vecdot is 2-4x faster than vector_norm across rows
        s1 = view.sum(0)
        s2 = torch.linalg.vecdot(view, view, dim=0)
    else:  # (C, rest)
        s1 = view.sum(1)
        s2 = torch.linalg.vecdot(view, view, dim=1)
    mean = s1.double() / count
    var = (s2.double() / count - mean * mean).clamp_min(0.0)
    return mean.to(acc), var.to(acc)
