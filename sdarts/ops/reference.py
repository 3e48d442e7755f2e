"""Pure PyTorch implementation of the mixed-sum kernel contract.

It is the CPU fallback, the oracle every fused backend is tested against, and the
executable specification of what the kernels compute.  The contract (shared by the
Triton kernels in ``kernels/`` and the C++/CUDA ones in ``csrc/``):

Inputs, all on one device:
  branches  list of B >= 0 tensors, each (N, C, H, W), one dtype, one layout (contiguous
            or channels_last), the same strides.  B <= MAX_BRANCHES per call.
  coef      float32 (B + 2,): the mixing weight of each branch, then w_skip, w_pool.
  scale     float32 (B, C) or None: per-branch per-channel scale s_k[c].
  shift     float32 (B, C) or None: per-branch per-channel shift t_k[c] (given iff scale is).
  x         (N, C, H, W) or None: the edge input for the fused non-parametric candidates,
            same dtype and strides as the branches.  Required when B == 0.
  has_skip  add w_skip * x                          (skip_connect / identity)
  has_pool  add w_pool * avg_pool_3x3(x)             (stride 1, padding 1,
            count_include_pad=False, as NAS-Bench-201 defines it)

Forward:
  out = sum_k coef[k] * (s_k[c] * b_k + t_k[c]) + w_skip * x + w_pool * pool(x)
  (s = 1, t = 0 without scale/shift).  out has the dtype and layout of the inputs;
  arithmetic is in float32.

Backward, given g = dL/dout (same shape; any strides, backends may copy it to the layout):
  grad_branches[k] = coef[k] * s_k[c] * g               (empty list if not requested)
  grad_x           = w_skip * g + w_pool * pool^T(g)    (empty tensor if not requested)
  chan_dot  float32 (B, C): sum over n, h, w of g * b_k
  chan_gsum float32 (C,)  : sum over n, h, w of g
  dot_skip  float32 ()    : <g, x>         (0 without skip)
  dot_pool  float32 ()    : <g, pool(x)>   (0 without pool)
All reductions accumulate in float32.  The autograd layer turns these into
dL/dcoef, dL/dscale and dL/dshift (see ``mixed_sum.py``).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

MAX_BRANCHES = 8


def avg_pool3(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pool, stride 1, padding 1, count_include_pad=False."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def avg_pool3_transpose(g: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`avg_pool3`: g_x[i] = sum over windows j containing i of g[j] / count[j]."""
    n, c, h, w = g.shape
    ones = torch.ones(1, 1, h, w, dtype=g.dtype, device=g.device)
    count = F.avg_pool2d(ones, 3, stride=1, padding=1, count_include_pad=True) * 9.0
    return F.avg_pool2d(g / count, 3, stride=1, padding=1, count_include_pad=True) * 9.0


def _affine(b: torch.Tensor, k: int, scale, shift) -> torch.Tensor:
    if scale is None:
        return b
    return b * scale[k].view(1, -1, 1, 1) + shift[k].view(1, -1, 1, 1)


def mixed_forward(
    branches: List[torch.Tensor],
    coef: torch.Tensor,
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    x: Optional[torch.Tensor],
    has_skip: bool,
    has_pool: bool,
) -> torch.Tensor:
    like = branches[0] if branches else x
    acc_dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    c = coef.to(acc_dtype)
    sc = None if scale is None else scale.to(acc_dtype)
    sh = None if shift is None else shift.to(acc_dtype)
    acc = torch.zeros(like.shape, dtype=acc_dtype, device=like.device)
    nb = len(branches)
    for k, b in enumerate(branches):
        acc = acc + c[k] * _affine(b.to(acc_dtype), k, sc, sh)
    if has_skip:
        acc = acc + c[nb] * x.to(acc_dtype)
    if has_pool:
        acc = acc + c[nb + 1] * avg_pool3(x.to(acc_dtype))
    out = torch.empty_like(like)
    out.copy_(acc)
    return out


def mixed_backward(
    grad_out: torch.Tensor,
    branches: List[torch.Tensor],
    coef: torch.Tensor,
    scale: Optional[torch.Tensor],
    x: Optional[torch.Tensor],
    has_skip: bool,
    has_pool: bool,
    need_branch_grads: bool,
    need_x_grad: bool,
) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    like = branches[0] if branches else x
    acc_dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    g = grad_out.to(acc_dtype)
    c = coef.to(acc_dtype)
    nb = len(branches)
    channels = like.shape[1]
    grad_branches: List[torch.Tensor] = []
    chan_dot = torch.zeros(nb, channels, dtype=acc_dtype, device=like.device)
    for k, b in enumerate(branches):
        chan_dot[k] = (g * b.to(acc_dtype)).sum(dim=(0, 2, 3))
        if need_branch_grads:
            s = 1.0 if scale is None else scale[k].to(acc_dtype).view(1, -1, 1, 1)
            gb = torch.empty_like(b)
            gb.copy_(c[k] * s * g)
            grad_branches.append(gb)
    chan_gsum = g.sum(dim=(0, 2, 3))
    dot_skip = (g * x.to(acc_dtype)).sum() if has_skip else g.new_zeros(())
    dot_pool = (g * avg_pool3(x.to(acc_dtype))).sum() if has_pool else g.new_zeros(())
    if need_x_grad and x is not None and (has_skip or has_pool):
        gx_acc = torch.zeros_like(g)
        if has_skip:
            gx_acc = gx_acc + c[nb] * g
        if has_pool:
            gx_acc = gx_acc + c[nb + 1] * avg_pool3_transpose(g)
        grad_x = torch.empty_like(x)
        grad_x.copy_(gx_acc)
    else:
        grad_x = torch.empty(0, dtype=like.dtype, device=like.device)
    f32 = torch.float64 if acc_dtype == torch.float64 else torch.float32
    return (
        grad_branches,
        grad_x,
        chan_dot.to(f32),
        chan_gsum.to(f32),
        dot_skip.to(f32),
        dot_pool.to(f32),
    )
