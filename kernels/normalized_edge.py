"""Triton kernels for the BatchNorm-folded edge (``sdarts/ops/normalized_edge.py``).

Forward: the batch statistics of every candidate of an edge in two launches (instead of one
reduction per candidate, two stacks and the shift):

  ``_stats_partial_kernel``: programs over (image chunk, channel block); per tile a two-pass
      mean and M2 in registers, merged into the program's running (mean, M2) with Chan's
      formula; one (mean, M2) per program, branch and channel.
  ``_stats_final_kernel`` (one program per branch): merges the partials in a fixed order
      (deterministic) and writes mean, 1/sqrt(var + eps), the shift -mean/sqrt(var + eps) and
      the biased variance, each (B, C).

Backward: after the mixed-sum backward pass has reduced <g, b_k>_c and sum_c g, what is left of an edge's
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
def _merge(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """Chan et al.'s pairwise merge of (mean, M2, count); n_a + n_b > 0."""
    n = n_a + n_b
    delta = mean_b - mean_a
    frac = n_b / n
    return mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac, n


@triton.jit
def _tile_stats(b_ptr, offs, mask, n_t, mean_r, m2_r, n_r):
    v = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean_t = tl.sum(v, axis=1) / n_t
    d = tl.where(mask, v - mean_t[:, None], 0.0)
    m2_t = tl.sum(d * d, axis=1)
    mean_r, m2_r, _ = _merge(mean_r, m2_r, n_r, mean_t, m2_t, n_t)
    return mean_r, m2_r


@triton.jit
def _store_partial(part_ptr, row, k, C, c_idx, c_mask, mean_r, m2_r):
    base = part_ptr + (row + k * 2 * C)
    tl.store(base + c_idx, mean_r, mask=c_mask)
    tl.store(base + C + c_idx, m2_r, mask=c_mask)


@triton.jit
def _stats_partial_kernel(
    b0, b1, b2, b3, b4, b5, b6, b7,
    part_ptr,  # float32 [P, NUM_BRANCHES, 2, C]: (mean, M2) of this program's images
    N, C, HW, IMAGES_PER_PROGRAM,
    NUM_BRANCHES: tl.constexpr, CL: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    c_idx = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c_idx < C
    zero = tl.zeros([BLOCK_C], dtype=tl.float32)
    mean0, m20, mean1, m21, mean2, m22, mean3, m23 = zero, zero, zero, zero, zero, zero, zero, zero
    mean4, m24, mean5, m25, mean6, m26, mean7, m27 = zero, zero, zero, zero, zero, zero, zero, zero
    n_r = 0.0
    n_start = pid_p * IMAGES_PER_PROGRAM
    n_stop = tl.minimum(n_start + IMAGES_PER_PROGRAM, N)
    # One image's size as an int64 tensor, so that n * chw cannot overflow (n itself is a
    # plain int under the interpreter, a 32-bit scalar when compiled).
    chw = pid_p.to(tl.int64) * 0 + C * HW
    for n in range(n_start, n_stop):
        nbase = n * chw
        for tile in range(0, tl.cdiv(HW, BLOCK_HW)):
            hw = tile * BLOCK_HW + tl.arange(0, BLOCK_HW)
            hw_mask = hw < HW
            mask = c_mask[:, None] & hw_mask[None, :]
            if CL:
                offs = nbase + c_idx[:, None] + (hw * C)[None, :]
            else:
                offs = nbase + (c_idx * HW)[:, None] + hw[None, :]
            n_t = tl.sum(hw_mask.to(tl.float32), axis=0)
            if NUM_BRANCHES > 0:
                mean0, m20 = _tile_stats(b0, offs, mask, n_t, mean0, m20, n_r)
            if NUM_BRANCHES > 1:
                mean1, m21 = _tile_stats(b1, offs, mask, n_t, mean1, m21, n_r)
            if NUM_BRANCHES > 2:
                mean2, m22 = _tile_stats(b2, offs, mask, n_t, mean2, m22, n_r)
            if NUM_BRANCHES > 3:
                mean3, m23 = _tile_stats(b3, offs, mask, n_t, mean3, m23, n_r)
            if NUM_BRANCHES > 4:
                mean4, m24 = _tile_stats(b4, offs, mask, n_t, mean4, m24, n_r)
            if NUM_BRANCHES > 5:
                mean5, m25 = _tile_stats(b5, offs, mask, n_t, mean5, m25, n_r)
            if NUM_BRANCHES > 6:
                mean6, m26 = _tile_stats(b6, offs, mask, n_t, mean6, m26, n_r)
            if NUM_BRANCHES > 7:
                mean7, m27 = _tile_stats(b7, offs, mask, n_t, mean7, m27, n_r)
            n_r = n_r + n_t
    row = pid_p.to(tl.int64) * (NUM_BRANCHES * 2 * C)
    if NUM_BRANCHES > 0:
        _store_partial(part_ptr, row, 0, C, c_idx, c_mask, mean0, m20)
    if NUM_BRANCHES > 1:
        _store_partial(part_ptr, row, 1, C, c_idx, c_mask, mean1, m21)
    if NUM_BRANCHES > 2:
        _store_partial(part_ptr, row, 2, C, c_idx, c_mask, mean2, m22)
    if NUM_BRANCHES > 3:
        _store_partial(part_ptr, row, 3, C, c_idx, c_mask, mean3, m23)
    if NUM_BRANCHES > 4:
        _store_partial(part_ptr, row, 4, C, c_idx, c_mask, mean4, m24)
    if NUM_BRANCHES > 5:
        _store_partial(part_ptr, row, 5, C, c_idx, c_mask, mean5, m25)
    if NUM_BRANCHES > 6:
        _store_partial(part_ptr, row, 6, C, c_idx, c_mask, mean6, m26)
    if NUM_BRANCHES > 7:
        _store_partial(part_ptr, row, 7, C, c_idx, c_mask, mean7, m27)


@triton.jit
def _stats_final_kernel(
    part_ptr, mean_ptr, invstd_ptr, shift_ptr, var_ptr,
    P, B, N, C, HW, IMAGES_PER_PROGRAM, eps,
    BLOCK_C: tl.constexpr,
):
    k = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    cm = c < C
    mean_r = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2_r = tl.zeros([BLOCK_C], dtype=tl.float32)
    n_r = 0.0
    for p in range(0, P):
        images = tl.minimum(IMAGES_PER_PROGRAM, N - p * IMAGES_PER_PROGRAM)
        n_p = (images * HW).to(tl.float32)
        base = part_ptr + (p * B + k) * 2 * C
        mean_p = tl.load(base + c, mask=cm, other=0.0)
        m2_p = tl.load(base + C + c, mask=cm, other=0.0)
        mean_r, m2_r, n_r = _merge(mean_r, m2_r, n_r, mean_p, m2_p, n_p)
    var = m2_r / n_r
    invstd = 1.0 / tl.sqrt(var + eps)
    tl.store(mean_ptr + k * C + c, mean_r, mask=cm)
    tl.store(invstd_ptr + k * C + c, invstd, mask=cm)
    tl.store(shift_ptr + k * C + c, -mean_r * invstd, mask=cm)
    tl.store(var_ptr + k * C + c, var, mask=cm)


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
        and like.shape[1] * like.shape[2] * like.shape[3] < 2**31  # 32-bit offsets inside an image
    )


def batch_stats(branches: List[torch.Tensor], eps: float):
    """(mean, invstd, shift, biased var) of every branch, each (B, C) float32: two launches.
    Call only where :func:`supports` (with the branches as g)."""
    B = len(branches)
    N, C, H, W = branches[0].shape
    HW = H * W
    dev = branches[0].device
    _, cl = _layout(branches[0])
    bc = min(triton.next_power_of_2(C), 64)
    bhw = max(16, min(triton.next_power_of_2(HW), 4096 // bc))
    c_blocks = triton.cdiv(C, bc)
    # About two programs per SM; each reduces whole images, so the merge order is fixed.
    programs = max(1, min(N, (2 * _sm_count(dev)) // c_blocks))
    per_program = triton.cdiv(N, programs)
    programs = triton.cdiv(N, per_program)
    partials = torch.empty((programs, B, 2, C), dtype=torch.float32, device=dev)
    slots = branches + [branches[0]] * (MAX_BRANCHES - B)  # unused slots: never read
    _stats_partial_kernel[(programs, c_blocks)](
        *slots, partials, N, C, HW, per_program,
        NUM_BRANCHES=B, CL=cl, BLOCK_C=bc, BLOCK_HW=bhw, num_warps=4,
    )
    mean, invstd, shift, var = (torch.empty((B, C), dtype=torch.float32, device=dev) for _ in range(4))
    _stats_final_kernel[(B,)](
        partials, mean, invstd, shift, var, programs, B, N, C, HW, per_program, eps,
        BLOCK_C=triton.next_power_of_2(C),
    )
    return mean, invstd, shift, var


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
