"""Triton kernels for the backward of the BatchNorm-folded edge (``sdarts/ops/normalized_edge.py``).

After the mixed-sum backward pass has reduced <g, b_k>_c and sum_c g, what is left of an edge's
backward is small: the BatchNorm chain rule on (B, C) statistics, dL/dcoef, and one affine
map per candidate gradient.  In PyTorch ops that is ~13 launches on (B, C) tensors plus two
per candidate; here it is two launches:

  ``_epilogue_kernel`` (one program): for each candidate k and channel c
      y_dot = invstd (<g, b>_c - mean sum_c g)          (= <g, y_k>_c)
      dL/dcoef_k = sum_c y_dot;  dL/dcoef_skip, _pool copied from the backward pass
      a = coef_k invstd,  s = -a invstd y_dot / M,  o = -a sum_c g / M - s mean
  ``_apply_kernel`` (tiles of (N, C, HW), every candidate in one launch):
      grad b_k = a_k[c] g + s_k[c] b_k + o_k[c]

Layouts and the 8 unrolled branch slots follow ``kernels/mixed_sum.py``.
"""

from __future__ import annotations

from typing import List

import torch
import triton
import triton.language as tl

from .mixed_sum import MAX_BRANCHES, _MAX_GRID_Z, _choose_blocks, _layout, _sm_count


@triton.jit
def _epilogue_kernel(
    cd_ptr, cd_sk, cd_sc, gs_ptr, gs_sc, mean_ptr, invstd_ptr, coef_ptr, dskip_ptr, dpool_ptr,
    a_ptr, s_ptr, o_ptr, gcoef_ptr,
    B, C, inv_count,
    BLOCK_C: tl.constexpr,
):
    c = tl.arange(0, BLOCK_C)
    cm = c < C
    gs = tl.load(gs_ptr + c * gs_sc, mask=cm, other=0.0).to(tl.float32)
    for k in range(B):
        cd = tl.load(cd_ptr + k * cd_sk + c * cd_sc, mask=cm, other=0.0).to(tl.float32)
        m = tl.load(mean_ptr + k * C + c, mask=cm, other=0.0)
        istd = tl.load(invstd_ptr + k * C + c, mask=cm, other=0.0)
        y_dot = istd * (cd - m * gs)
        tl.store(gcoef_ptr + k, tl.sum(y_dot, axis=0))
        a = tl.load(coef_ptr + k) * istd
        s = -a * istd * y_dot * inv_count
        o = -a * gs * inv_count - s * m
        tl.store(a_ptr + k * C + c, a, mask=cm)
        tl.store(s_ptr + k * C + c, s, mask=cm)
        tl.store(o_ptr + k * C + c, o, mask=cm)
    tl.store(gcoef_ptr + B, tl.load(dskip_ptr))
    tl.store(gcoef_ptr + B + 1, tl.load(dpool_ptr))


@triton.jit
def _apply_branch(g, b_ptr, gb_ptr, k, offs, mask, a_ptr, s_ptr, o_ptr, c_idx, c_mask, C):
    v = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + k * C + c_idx, mask=c_mask, other=0.0)
    s = tl.load(s_ptr + k * C + c_idx, mask=c_mask, other=0.0)
    o = tl.load(o_ptr + k * C + c_idx, mask=c_mask, other=0.0)
    gb = a[:, None] * g + s[:, None] * v + o[:, None]
    tl.store(gb_ptr + offs, gb.to(gb_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _apply_kernel(
    g_ptr,
    b0, b1, b2, b3, b4, b5, b6, b7,
    gb0, gb1, gb2, gb3, gb4, gb5, gb6, gb7,
    a_ptr, s_ptr, o_ptr,
    C, HW,
    NUM_BRANCHES: tl.constexpr, CL: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
):
    pid_hw = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_n = tl.program_id(2)
    nbase = pid_n.to(tl.int64) * C * HW
    c_idx = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = pid_hw * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c_mask = c_idx < C
    mask = c_mask[:, None] & (hw < HW)[None, :]
    if CL:
        offs = c_idx[:, None] + (hw * C)[None, :]
    else:
        offs = (c_idx * HW)[:, None] + hw[None, :]
    g = tl.load(g_ptr + nbase + offs, mask=mask, other=0.0).to(tl.float32)
    if NUM_BRANCHES > 0:
        _apply_branch(g, b0 + nbase, gb0 + nbase, 0, offs, mask, a_ptr, s_ptr, o_ptr, c_idx, c_mask, C)
    if NUM_BRANCHES > 1:
        _apply_branch(g, b1 + nbase, gb1 + nbase, 1, offs, mask, a_ptr, s_ptr, o_ptr, c_idx, c_mask, C)
    if NUM_BRANCHES > 2:
        _apply_branch(g, b2 + nbase, gb2 + nbase, 2, offs, mask, a_ptr, s_ptr, o_ptr, c_idx, c_mask, C)
    if NUM_BRANCHES > 3:
        _apply_branch(g, b3 + nbase, gb3 + nbase, 3, offs, mask, a_ptr, s_ptr, o_ptr, c_idx, c_mask, C)
    if NUM_BRANCHES > 4:
        _apply_branch(g, b4 + nbase, gb4 + nbase, 4, offs, mask, a_ptr, s_ptr, o_ptr, c_idx, c_mask, C)
    if NUM_BRANCHES > 5:
        _apply_branch(g, b5 + nbase, gb5 + nbase, 5, offs, mask, a_ptr, s_ptr, o_ptr, c_idx, c_mask, C)
    if NUM_BRANCHES > 6:
        _apply_branch(g, b6 + nbase, gb6 + nbase, 6, offs, mask, a_ptr, s_ptr, o_ptr, c_idx, c_mask, C)
    if NUM_BRANCHES > 7:
        _apply_branch(g, b7 + nbase, gb7 + nbase, 7, offs, mask, a_ptr, s_ptr, o_ptr, c_idx, c_mask, C)


def supports(g: torch.Tensor, branches: List[torch.Tensor]) -> bool:
    """Whether these kernels take this call: at most 8 branches, one dense layout, a batch that
    fits the grid, channels that fit one epilogue program."""
    like = branches[0]
    fmt, _ = _layout(like)
    dense = like.is_contiguous(memory_format=fmt)
    return (
        0 < len(branches) <= MAX_BRANCHES
        and dense
        and all(t.stride() == like.stride() for t in [g, *branches])
        and like.shape[0] <= _MAX_GRID_Z
        and like.shape[1] <= 4096
    )


def edge_backward_tail(
    g: torch.Tensor,
    branches: List[torch.Tensor],
    chan_dot: torch.Tensor,
    chan_gsum: torch.Tensor,
    dot_skip: torch.Tensor,
    dot_pool: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    coef: torch.Tensor,
):
    """(branch gradients, dL/dcoef) of the folded edge from the backward pass's reductions.

    ``mean``, ``invstd``: (B, C) float32, contiguous; ``coef``: (B + 2,) float32; ``chan_dot``
    (B, C) and ``chan_gsum`` (C,) float32 with any strides.  Call only where :func:`supports`.
    """
    B = len(branches)
    N, C, H, W = branches[0].shape
    HW = H * W
    dev = g.device
    a, s, o = (torch.empty((B, C), dtype=torch.float32, device=dev) for _ in range(3))
    grad_coef = torch.empty(B + 2, dtype=torch.float32, device=dev)
    _epilogue_kernel[(1,)](
        chan_dot, chan_dot.stride(0), chan_dot.stride(1), chan_gsum, chan_gsum.stride(0),
        mean, invstd, coef, dot_skip, dot_pool, a, s, o, grad_coef,
        B, C, 1.0 / (N * HW),
        BLOCK_C=triton.next_power_of_2(C),
    )
    grads = [torch.empty_like(b) for b in branches]
    _, cl = _layout(branches[0])
    bc, bhw, num_warps = _choose_blocks(N, C, HW, cl, None, _sm_count(dev))
    slots = branches + [branches[0]] * (MAX_BRANCHES - B)  # unused slots: never read
    grad_slots = grads + [grads[0]] * (MAX_BRANCHES - B)
    _apply_kernel[(triton.cdiv(HW, bhw), triton.cdiv(C, bc), N)](
        g, *slots, *grad_slots, a, s, o, C, HW,
        NUM_BRANCHES=B, CL=cl, BLOCK_C=bc, BLOCK_HW=bhw, num_warps=num_warps,
    )
    return grads, grad_coef
