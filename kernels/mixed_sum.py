"""Triton kernels for the fused mixed-sum op (the weighted sum of a DARTS edge).

The contract is the one in ``sdarts/ops/reference.py``; ``mixed_forward`` and
``mixed_backward`` here take the same arguments and return the same values.

Design:
  * Every (dense) tensor is viewed as (N, C, HW); for NCHW sHW == 1, for channels_last
    sC == 1.  The kernel derives the strides from C, H, W and a constexpr ``CL``, so the
    unit-stride axis is a literal and Triton vectorises along it (HW for NCHW, C for
    channels_last); fewer launch arguments also keep the host overhead down.
  * A program owns a [BLOCK_C, BLOCK_HW] tile of one image.  Up to MAX_BRANCHES branch
    pointers are separate arguments (Triton cannot index a list of pointers); the code for
    branch k is emitted only when the constexpr NUM_BRANCHES > k.
  * The 3x3 average pool (count_include_pad=False) and its transpose read the 8
    neighbours straight from the input (L1/L2 hits); pool(x) is never written to memory.
  * The backward is a single pass over g, the branches and x.  Each program loops over a
    strided subset of the HW tiles of its (image, channel block) and writes its partial
    per-channel sums to a float32 buffer, which torch.sum reduces in a fixed order: the
    result is deterministic for a given shape and device (no atomics).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

from . import INTERPRETED

MAX_BRANCHES = 8
_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)
_MAX_GRID_Z = 65535  # CUDA limit on gridDim.z, which holds the batch index


# --------------------------------------------------------------------------- jit helpers


@triton.jit
def _pool_count(h, w, H, W):
    """Number of in-bounds positions of the 3x3 window centred at (h, w), as float32."""
    ch = 1 + (h > 0).to(tl.int32) + (h < H - 1).to(tl.int32)
    cw = 1 + (w > 0).to(tl.int32) + (w < W - 1).to(tl.int32)
    return (ch * cw).to(tl.float32)


@triton.jit
def _pool3_tile(ptr, c_off, h, w, center, c_mask, hw_mask, H, W, sH, sW, DIVIDE_BY_COUNT: tl.constexpr):
    """Sum of the 3x3 neighbourhood of every tile element (zero padding), in float32.

    ``center`` is the already-loaded tile itself (saves one load).  With DIVIDE_BY_COUNT each
    neighbour j is divided by count[j] (the transpose of the average pool); without it the
    caller divides the sum by count[i] (the pool itself).
    """
    if DIVIDE_BY_COUNT:
        acc = center / _pool_count(h, w, H, W)[None, :]
    else:
        acc = center
    for i in tl.static_range(9):
        if i != 4:
            dh = i // 3 - 1
            dw = i % 3 - 1
            hh = h + dh
            ww = w + dw
            ok = hw_mask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            v = tl.load(ptr + c_off[:, None] + (hh * sH + ww * sW)[None, :],
                        mask=c_mask[:, None] & ok[None, :], other=0.0).to(tl.float32)
            if DIVIDE_BY_COUNT:
                v = v / _pool_count(hh, ww, H, W)[None, :]
            acc += v
    return acc


@triton.jit
def _fwd_branch(acc, b_ptr, k, offs, mask, coef_ptr, scale_ptr, shift_ptr, c_idx, c_mask, C,
                HAS_AFFINE: tl.constexpr):
    wk = tl.load(coef_ptr + k)
    v = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_AFFINE:
        s = tl.load(scale_ptr + k * C + c_idx, mask=c_mask, other=0.0)
        t = tl.load(shift_ptr + k * C + c_idx, mask=c_mask, other=0.0)
        acc += (wk * s)[:, None] * v + (wk * t)[:, None]
    else:
        acc += wk * v
    return acc


@triton.jit
def _bwd_branch(dot, g, b_ptr, gb_ptr, k, offs, mask, coef_ptr, scale_ptr, c_idx, c_mask, C,
                HAS_AFFINE: tl.constexpr, NEED_BG: tl.constexpr):
    v = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dot += tl.sum(g * v, axis=1)
    if NEED_BG:
        wk = tl.load(coef_ptr + k)
        if HAS_AFFINE:
            s = tl.load(scale_ptr + k * C + c_idx, mask=c_mask, other=0.0)
            gb = (wk * s)[:, None] * g
        else:
            gb = wk * g
        tl.store(gb_ptr + offs, gb.to(gb_ptr.dtype.element_ty), mask=mask)
    return dot


# --------------------------------------------------------------------------- kernels


@triton.jit
def _mixed_fwd_kernel(
    out_ptr, x_ptr,
    b0, b1, b2, b3, b4, b5, b6, b7,
    coef_ptr, scale_ptr, shift_ptr,
    C, H, W, HW,
    NUM_BRANCHES: tl.constexpr, HAS_AFFINE: tl.constexpr,
    HAS_SKIP: tl.constexpr, HAS_POOL: tl.constexpr, CL: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
):
    pid_hw = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_n = tl.program_id(2)
    nbase = pid_n.to(tl.int64) * C * HW  # 64-bit image offset, 32-bit offsets inside the image
    if CL:  # strides of the (N, C, HW) view, (sC, sHW) and of the 3x3 neighbours (sH, sW)
        sC, sHW, sH, sW = 1, C, W * C, C
    else:
        sC, sHW, sH, sW = HW, 1, W, 1

    c_idx = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = pid_hw * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c_mask = c_idx < C
    hw_mask = hw < HW
    mask = c_mask[:, None] & hw_mask[None, :]
    # Literal unit strides let Triton see which axis is contiguous.
    if CL:
        c_off = c_idx
        offs = c_off[:, None] + (hw * sHW)[None, :]
    else:
        c_off = c_idx * sC
        offs = c_off[:, None] + hw[None, :]

    acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    if NUM_BRANCHES > 0:
        acc = _fwd_branch(acc, b0 + nbase, 0, offs, mask, coef_ptr, scale_ptr, shift_ptr, c_idx, c_mask, C, HAS_AFFINE)
    if NUM_BRANCHES > 1:
        acc = _fwd_branch(acc, b1 + nbase, 1, offs, mask, coef_ptr, scale_ptr, shift_ptr, c_idx, c_mask, C, HAS_AFFINE)
    if NUM_BRANCHES > 2:
        acc = _fwd_branch(acc, b2 + nbase, 2, offs, mask, coef_ptr, scale_ptr, shift_ptr, c_idx, c_mask, C, HAS_AFFINE)
    if NUM_BRANCHES > 3:
        acc = _fwd_branch(acc, b3 + nbase, 3, offs, mask, coef_ptr, scale_ptr, shift_ptr, c_idx, c_mask, C, HAS_AFFINE)
    if NUM_BRANCHES > 4:
        acc = _fwd_branch(acc, b4 + nbase, 4, offs, mask, coef_ptr, scale_ptr, shift_ptr, c_idx, c_mask, C, HAS_AFFINE)
    if NUM_BRANCHES > 5:
        acc = _fwd_branch(acc, b5 + nbase, 5, offs, mask, coef_ptr, scale_ptr, shift_ptr, c_idx, c_mask, C, HAS_AFFINE)
    if NUM_BRANCHES > 6:
        acc = _fwd_branch(acc, b6 + nbase, 6, offs, mask, coef_ptr, scale_ptr, shift_ptr, c_idx, c_mask, C, HAS_AFFINE)
    if NUM_BRANCHES > 7:
        acc = _fwd_branch(acc, b7 + nbase, 7, offs, mask, coef_ptr, scale_ptr, shift_ptr, c_idx, c_mask, C, HAS_AFFINE)

    if HAS_SKIP or HAS_POOL:
        xb = x_ptr + nbase
        xv = tl.load(xb + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_SKIP:
            acc += tl.load(coef_ptr + NUM_BRANCHES) * xv
        if HAS_POOL:
            h = hw // W
            w = hw % W
            psum = _pool3_tile(xb, c_off, h, w, xv, c_mask, hw_mask, H, W, sH, sW, False)
            acc += tl.load(coef_ptr + NUM_BRANCHES + 1) * (psum / _pool_count(h, w, H, W)[None, :])

    tl.store(out_ptr + nbase + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _mixed_bwd_kernel(
    g_ptr, x_ptr, gx_ptr,
    b0, b1, b2, b3, b4, b5, b6, b7,
    gb0, gb1, gb2, gb3, gb4, gb5, gb6, gb7,
    coef_ptr, scale_ptr,
    part_ptr,  # float32 [N, SPLIT, NUM_BRANCHES + 3, C]: <g, b_k> per branch, sum g, g*x, g*pool(x)
    C, H, W, HW, SPLIT,
    NUM_BRANCHES: tl.constexpr, HAS_AFFINE: tl.constexpr,
    HAS_SKIP: tl.constexpr, HAS_POOL: tl.constexpr,
    NEED_BG: tl.constexpr, NEED_GX: tl.constexpr, CL: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_n = tl.program_id(2)
    nbase = pid_n.to(tl.int64) * C * HW
    if CL:  # strides of the (N, C, HW) view, (sC, sHW) and of the 3x3 neighbours (sH, sW)
        sC, sHW, sH, sW = 1, C, W * C, C
    else:
        sC, sHW, sH, sW = HW, 1, W, 1

    c_idx = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c_idx < C
    if CL:
        c_off = c_idx
    else:
        c_off = c_idx * sC

    gsum = tl.zeros([BLOCK_C], dtype=tl.float32)
    d0 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d1 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d3 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d4 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d5 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d6 = tl.zeros([BLOCK_C], dtype=tl.float32)
    d7 = tl.zeros([BLOCK_C], dtype=tl.float32)
    dskip = tl.zeros([BLOCK_C], dtype=tl.float32)
    dpool = tl.zeros([BLOCK_C], dtype=tl.float32)

    n_tiles = tl.cdiv(HW, BLOCK_HW)
    for tile in range(pid_s, n_tiles, SPLIT):
        hw = tile * BLOCK_HW + tl.arange(0, BLOCK_HW)
        hw_mask = hw < HW
        mask = c_mask[:, None] & hw_mask[None, :]
        if CL:
            offs = c_off[:, None] + (hw * sHW)[None, :]
        else:
            offs = c_off[:, None] + hw[None, :]

        g = tl.load(g_ptr + nbase + offs, mask=mask, other=0.0).to(tl.float32)
        gsum += tl.sum(g, axis=1)
        if NUM_BRANCHES > 0:
            d0 = _bwd_branch(d0, g, b0 + nbase, gb0 + nbase, 0, offs, mask, coef_ptr, scale_ptr, c_idx, c_mask, C, HAS_AFFINE, NEED_BG)
        if NUM_BRANCHES > 1:
            d1 = _bwd_branch(d1, g, b1 + nbase, gb1 + nbase, 1, offs, mask, coef_ptr, scale_ptr, c_idx, c_mask, C, HAS_AFFINE, NEED_BG)
        if NUM_BRANCHES > 2:
            d2 = _bwd_branch(d2, g, b2 + nbase, gb2 + nbase, 2, offs, mask, coef_ptr, scale_ptr, c_idx, c_mask, C, HAS_AFFINE, NEED_BG)
        if NUM_BRANCHES > 3:
            d3 = _bwd_branch(d3, g, b3 + nbase, gb3 + nbase, 3, offs, mask, coef_ptr, scale_ptr, c_idx, c_mask, C, HAS_AFFINE, NEED_BG)
        if NUM_BRANCHES > 4:
            d4 = _bwd_branch(d4, g, b4 + nbase, gb4 + nbase, 4, offs, mask, coef_ptr, scale_ptr, c_idx, c_mask, C, HAS_AFFINE, NEED_BG)
        if NUM_BRANCHES > 5:
            d5 = _bwd_branch(d5, g, b5 + nbase, gb5 + nbase, 5, offs, mask, coef_ptr, scale_ptr, c_idx, c_mask, C, HAS_AFFINE, NEED_BG)
        if NUM_BRANCHES > 6:
            d6 = _bwd_branch(d6, g, b6 + nbase, gb6 + nbase, 6, offs, mask, coef_ptr, scale_ptr, c_idx, c_mask, C, HAS_AFFINE, NEED_BG)
        if NUM_BRANCHES > 7:
            d7 = _bwd_branch(d7, g, b7 + nbase, gb7 + nbase, 7, offs, mask, coef_ptr, scale_ptr, c_idx, c_mask, C, HAS_AFFINE, NEED_BG)

        if HAS_SKIP or HAS_POOL:
            xv = tl.load(x_ptr + nbase + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_SKIP:
                dskip += tl.sum(g * xv, axis=1)
            if HAS_POOL:
                # <g, pool(x)> == <pool^T(g), x>: one neighbourhood pass (over g) serves both
                # dot_pool and grad_x.
                h = hw // W
                w = hw % W
                ptg = _pool3_tile(g_ptr + nbase, c_off, h, w, g, c_mask, hw_mask, H, W, sH, sW, True)
                dpool += tl.sum(ptg * xv, axis=1)
            if NEED_GX:
                gx = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
                if HAS_SKIP:
                    gx += tl.load(coef_ptr + NUM_BRANCHES) * g
                if HAS_POOL:
                    gx += tl.load(coef_ptr + NUM_BRANCHES + 1) * ptg
                tl.store(gx_ptr + nbase + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)

    # Partials of this program; the host reduces them in a fixed order.
    row = (pid_n * SPLIT + pid_s).to(tl.int64) * ((NUM_BRANCHES + 3) * C)
    cp = part_ptr + row + c_idx
    if NUM_BRANCHES > 0:
        tl.store(cp + 0 * C, d0, mask=c_mask)
    if NUM_BRANCHES > 1:
        tl.store(cp + 1 * C, d1, mask=c_mask)
    if NUM_BRANCHES > 2:
        tl.store(cp + 2 * C, d2, mask=c_mask)
    if NUM_BRANCHES > 3:
        tl.store(cp + 3 * C, d3, mask=c_mask)
    if NUM_BRANCHES > 4:
        tl.store(cp + 4 * C, d4, mask=c_mask)
    if NUM_BRANCHES > 5:
        tl.store(cp + 5 * C, d5, mask=c_mask)
    if NUM_BRANCHES > 6:
        tl.store(cp + 6 * C, d6, mask=c_mask)
    if NUM_BRANCHES > 7:
        tl.store(cp + 7 * C, d7, mask=c_mask)
    tl.store(cp + NUM_BRANCHES * C, gsum, mask=c_mask)
    tl.store(cp + (NUM_BRANCHES + 1) * C, dskip, mask=c_mask)
    tl.store(cp + (NUM_BRANCHES + 2) * C, dpool, mask=c_mask)


# --------------------------------------------------------------------------- host side


def _next_pow2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


_SM_COUNT = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def _choose_blocks(N: int, C: int, HW: int, channels_last: bool, block: Optional[Sequence[int]],
                   n_sm: int = 1) -> Tuple[int, int, int]:
    """(BLOCK_C, BLOCK_HW, num_warps).

    Tiles of up to 4K elements with the unit-stride axis widest (up to 256 along HW for
    NCHW, 64 along C for channels_last).  When that leaves fewer than two tiles per SM
    (small late-stage feature maps), the tile shrinks, strided axis first, down to 512
    elements, so that the whole GPU gets work.
    """
    if block is not None:
        bc, bhw = int(block[0]), int(block[1])
        if bc & (bc - 1) or bhw & (bhw - 1) or bc < 1 or bhw < 1:
            raise ValueError(f"block sizes must be powers of two, got {tuple(block)}")
    else:
        if channels_last:
            bc = min(_next_pow2(C), 64)
            bhw = min(_next_pow2(HW), max(16, 4096 // bc))
        else:
            bhw = min(_next_pow2(HW), 256)
            bc = min(_next_pow2(C), 64, max(1, 4096 // bhw))
        while N * triton.cdiv(C, bc) * triton.cdiv(HW, bhw) < 2 * n_sm and bc * bhw > 512:
            if (bhw > 1 if channels_last else bc == 1):
                bhw //= 2
            else:
                bc //= 2
    tile = bc * bhw
    num_warps = 8 if tile >= 4096 else (4 if tile >= 1024 else 2)
    return bc, bhw, num_warps


def _layout(like: torch.Tensor):
    """(memory_format, channels_last flag) of the reference tensor."""
    if like.is_contiguous():
        return torch.contiguous_format, False
    if like.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last, True
    return torch.contiguous_format, False  # neither: inputs are copied to NCHW below


def _conform(t: torch.Tensor, fmt) -> torch.Tensor:
    return t if t.is_contiguous(memory_format=fmt) else t.contiguous(memory_format=fmt)


def _batch_slicer(n0: int, n1: int, n: int):
    """Slices tensors to images [n0, n1); the identity (no new views) in the usual one-chunk case."""
    if n0 == 0 and n1 == n:
        return lambda t: t
    return lambda t: t[n0:n1]


def _check(branches, coef, scale, shift, x, has_skip, has_pool):
    if len(branches) > MAX_BRANCHES:
        raise ValueError(f"at most {MAX_BRANCHES} branches per call, got {len(branches)}")
    if not branches and x is None:
        raise ValueError("x is required when there are no branches")
    if (has_skip or has_pool) and x is None:
        raise ValueError("has_skip/has_pool need x")
    if (scale is None) != (shift is None):
        raise ValueError("scale and shift must be given together")
    like = branches[0] if branches else x
    if like.dim() != 4:
        raise ValueError(f"expected 4-D (N, C, H, W) tensors, got shape {tuple(like.shape)}")
    if like.dtype not in _SUPPORTED:
        raise TypeError(f"unsupported dtype {like.dtype}; expected one of {_SUPPORTED}")
    for t in list(branches) + ([x] if x is not None else []):
        if t.shape != like.shape or t.dtype != like.dtype or t.device != like.device:
            raise ValueError("branches and x must share shape, dtype and device")
    if like.shape[1] * like.shape[2] * like.shape[3] >= 2**31:
        raise ValueError("one image (C * H * W elements) must be under 2**31 elements (32-bit tile offsets)")
    if coef.numel() != len(branches) + 2:
        raise ValueError(f"coef must have B + 2 = {len(branches) + 2} entries, got {coef.numel()}")
    return like


def _f32(t: Optional[torch.Tensor], device) -> Optional[torch.Tensor]:
    if t is None:
        return None
    return t.to(device=device, dtype=torch.float32).contiguous()


def mixed_forward(
    branches: List[torch.Tensor],
    coef: torch.Tensor,
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    x: Optional[torch.Tensor],
    has_skip: bool,
    has_pool: bool,
    *,
    block: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """out = sum_k coef[k] * (s_k * b_k + t_k) + w_skip * x + w_pool * pool3(x)."""
    like = _check(branches, coef, scale, shift, x, has_skip, has_pool)
    out = torch.empty_like(like)
    if like.numel() == 0:
        return out
    fmt, cl = _layout(like)
    if not out.is_contiguous(memory_format=fmt):
        out = torch.empty_like(like, memory_format=fmt)
    branches = [_conform(b, fmt) for b in branches]
    use_x = x is not None and (has_skip or has_pool)
    xk = _conform(x, fmt) if use_x else like
    dev = like.device
    coef = _f32(coef, dev)
    has_affine = scale is not None and len(branches) > 0
    scale_t = _f32(scale, dev) if has_affine else coef
    shift_t = _f32(shift, dev) if has_affine else coef

    N, C, H, W = like.shape
    HW = H * W
    bc, bhw, num_warps = _choose_blocks(N, C, HW, cl, block, _sm_count(dev))
    nb = len(branches)
    dummies = [branches[0] if branches else xk] * (MAX_BRANCHES - nb)  # never read
    for n0 in range(0, N, _MAX_GRID_Z):
        n1 = min(N, n0 + _MAX_GRID_Z)
        sl = _batch_slicer(n0, n1, N)
        grid = (triton.cdiv(HW, bhw), triton.cdiv(C, bc), n1 - n0)
        _mixed_fwd_kernel[grid](
            sl(out), sl(xk), *[sl(b) for b in branches + dummies], coef, scale_t, shift_t,
            C, H, W, HW,
            NUM_BRANCHES=nb, HAS_AFFINE=has_affine, HAS_SKIP=bool(has_skip), HAS_POOL=bool(has_pool), CL=cl,
            BLOCK_C=bc, BLOCK_HW=bhw, num_warps=num_warps,
        )
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
    *,
    block: Optional[Sequence[int]] = None,
    split: Optional[int] = None,
) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_branches, grad_x, chan_dot (B, C), chan_gsum (C,), dot_skip (), dot_pool ()).

    ``block`` = (BLOCK_C, BLOCK_HW) and ``split`` (programs per image and channel block along
    HW) override the heuristics; results are deterministic for fixed values of both.
    """
    like = _check(branches, coef, scale, scale, x, has_skip, has_pool)
    if grad_out.shape != like.shape:
        raise ValueError(f"grad_out has shape {tuple(grad_out.shape)}, expected {tuple(like.shape)}")
    dev = like.device
    N, C, H, W = like.shape
    HW = H * W
    nb = len(branches)
    want_gx = bool(need_x_grad) and x is not None and (has_skip or has_pool)
    grad_branches = [torch.empty_like(b) for b in branches] if need_branch_grads else []
    grad_x = torch.empty_like(x) if want_gx else torch.empty(0, dtype=like.dtype, device=dev)

    if like.numel() == 0:
        zero = torch.zeros((), dtype=torch.float32, device=dev)
        return (grad_branches, grad_x, torch.zeros(nb, C, dtype=torch.float32, device=dev),
                torch.zeros(C, dtype=torch.float32, device=dev), zero, zero.clone())

    fmt, cl = _layout(like)
    branches = [_conform(b, fmt) for b in branches]
    g = _conform(grad_out.to(like.dtype), fmt)
    use_x = x is not None and (has_skip or has_pool)
    xk = _conform(x, fmt) if use_x else g
    # The kernel writes in the layout fmt; anything empty_like gave in another layout (only
    # possible for inputs that were neither NCHW nor channels_last) is copied back at the end.
    gbs = [gb if gb.is_contiguous(memory_format=fmt) else torch.empty_like(gb, memory_format=fmt)
           for gb in grad_branches]
    gxk = grad_x if (not want_gx or grad_x.is_contiguous(memory_format=fmt)) else torch.empty_like(grad_x, memory_format=fmt)
    coef = _f32(coef, dev)
    has_affine = scale is not None and nb > 0
    scale_t = _f32(scale, dev) if has_affine else coef

    bc, bhw, num_warps = _choose_blocks(N, C, HW, cl, block, _sm_count(dev))
    n_tiles = triton.cdiv(HW, bhw)
    n_cb = triton.cdiv(C, bc)
    if split is None:
        if INTERPRETED or dev.type != "cuda":
            split = 1  # the interpreter runs programs one by one: fewer is faster
        else:
            # Enough programs to fill the GPU a few times over, each looping over several
            # tiles so that the partials buffer stays small.
            split = triton.cdiv(4 * _sm_count(dev), N * n_cb)
    split = max(1, min(int(split), n_tiles))

    part = torch.empty((N, split, nb + 3, C), dtype=torch.float32, device=dev)
    bs = branches + [g] * (MAX_BRANCHES - nb)  # dummies, never read
    gs = gbs + [g] * (MAX_BRANCHES - len(gbs))  # dummies, never written
    gx_arg = gxk if want_gx else g
    for n0 in range(0, N, _MAX_GRID_Z):
        n1 = min(N, n0 + _MAX_GRID_Z)
        sl = _batch_slicer(n0, n1, N)
        grid = (split, n_cb, n1 - n0)
        _mixed_bwd_kernel[grid](
            sl(g), sl(xk), sl(gx_arg), *[sl(t) for t in bs + gs], coef, scale_t, sl(part),
            C, H, W, HW, split,
            NUM_BRANCHES=nb, HAS_AFFINE=has_affine, HAS_SKIP=bool(has_skip), HAS_POOL=bool(has_pool),
            NEED_BG=bool(need_branch_grads) and nb > 0, NEED_GX=want_gx, CL=cl,
            BLOCK_C=bc, BLOCK_HW=bhw, num_warps=num_warps,
        )

    for dst, src in zip(grad_branches, gbs):
        if dst is not src:
            dst.copy_(src)
    if want_gx and gxk is not grad_x:
        grad_x.copy_(gxk)
    sums = part.sum(dim=(0, 1))  # (B + 3, C); fixed reduction order, hence deterministic
    dot_skip, dot_pool = sums[nb + 1:].sum(dim=1).unbind(0)  # exactly 0 when absent
    return grad_branches, grad_x, sums[:nb], sums[nb], dot_skip, dot_pool
