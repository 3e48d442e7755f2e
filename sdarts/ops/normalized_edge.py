"""A mixed edge whose candidates all end in a non-affine, batch-statistics BatchNorm, as one
autograd node.

This is what a DARTS or NAS-Bench-201 search edge is in training mode.  ``MixedOp`` could
compose it from :func:`~sdarts.ops.channel_stats.channel_moments`, a few per-channel ops and
:func:`~sdarts.ops.mixed_edge` (and does, under ``torch.compile`` and for other candidates),
but every one of those small ops is a kernel launch forward and backward, and at search
shapes (batch 64, 16-64 channels) a GPU step is bound by launches, not bytes.  Here the
forward is: the batch statistics of each candidate (one reduction each on the GPU), two
stacks, and the fused mixed-sum kernel; the backward is the kernel's one pass plus the
BatchNorm chain rule done on (B, C) statistics and one ``addcmul``/``add`` per candidate.
With ``edge_kernels="triton"`` the statistics and that backward tail are four Triton
launches in all (``kernels/normalized_edge.py``) instead of B + 4 and ~13 + 2B PyTorch ops.

Forward:  y_k = (b_k - mean_k) * invstd_k   (mean, biased var over N, H, W)
          out = sum_k coef[k] * y_k + coef[B] * x + coef[B+1] * avgpool3(x)
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import backends
from .edge_core import (backward_pass, check_branch_list, check_coef, check_operands, common_layout, forward_pass,
                        like_layout, moments)


def batch_stats(branches: Sequence[Tensor], eps: float, need_var: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-branch, per-channel batch mean, 1/sqrt(biased var + eps) and biased var (empty when
    not ``need_var``), stacked to (B, C) in float32 (float64 for float64 branches)."""
    if branches[0].is_cuda:
        # One Welford reduction per branch (the kernel SyncBatchNorm uses); float32 for half inputs.
        stats = [torch.batch_norm_stats(b, eps) for b in branches]
        mean, invstd = torch.stack([s[0] for s in stats]), torch.stack([s[1] for s in stats])
        var = invstd.pow(-2).sub_(eps) if need_var else mean.new_empty(0)
        return mean, invstd, var
    per_branch = [moments(b) for b in branches]
    mean = torch.stack([m for m, _ in per_branch])
    var = torch.stack([v for _, v in per_branch])
    return mean, torch.rsqrt(var + eps), var


def _triton_edge_kernels(use_triton: bool, like: Tensor, branches: Sequence[Tensor]):
    """The kernels module when it takes this call (``like``: g in backward, a branch in
    forward), else None (the PyTorch ops do: float64, a device Triton does not run on, or a
    shape the kernels do not cover)."""
    if not use_triton or branches[0].dtype == torch.float64:
        return None
    if not (branches[0].is_cuda or (branches[0].is_cpu and backends.triton_interpreted())):
        return None
    module = backends.triton_edge_module()
    return module if module is not None and module.supports(like, list(branches)) else None


def _autocast_state(device_type: str) -> Tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class _NormalizedMixedEdge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coef, x, eps, has_skip, has_pool, backend, need_var, recompute, use_triton, *branches):
        kernels = _triton_edge_kernels(use_triton, branches[0], branches)
        if kernels is not None:
            mean, invstd, shift, var = kernels.batch_stats(list(branches), eps)
        else:
            mean, invstd, var = batch_stats(branches, eps, need_var)
            shift = torch.mul(mean, invstd).neg_()
        out = forward_pass(list(branches), coef, invstd, shift, x, has_skip, has_pool, backend)
        ctx.flags = (has_skip, has_pool, backend)
        ctx.use_triton = use_triton
        ctx.x_needs_grad = x is not None and x.requires_grad and (has_skip or has_pool)
        ctx.coef_needs_grad = coef.requires_grad
        # A branch with a recompute function is not kept: backward asks for its value again.
        ctx.recompute = recompute
        if recompute is not None:
            first = branches[0]  # every operand has its strides and dtype (common_layout)
            ctx.autocast = (first.device.type, *_autocast_state(first.device.type))
            ctx.branch_layout = (first.stride(), first.dtype)
        kept = [b if recompute is None or recompute[k] is None else None for k, b in enumerate(branches)]
        ctx.save_for_backward(coef, x if (has_skip or has_pool) else None, mean, invstd, *kept)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var):
        coef, x, mean, invstd, *branches = ctx.saved_tensors
        if ctx.recompute is not None:
            branches = _recomputed_branches(ctx, branches)
        has_skip, has_pool, backend = ctx.flags
        B = len(branches)
        count = branches[0].numel() // branches[0].shape[1]
        grad_out = like_layout(grad_out, branches[0])
        kernels = _triton_edge_kernels(ctx.use_triton, grad_out, branches)
        # With the Triton tail the mixed-sum pass only reduces; the tail writes the branch grads.
        grad_branches, grad_x, chan_dot, chan_gsum, dot_skip, dot_pool = backward_pass(
            grad_out, branches, coef, invstd, x, has_skip, has_pool, kernels is None, ctx.x_needs_grad, backend
        )
        grad_x = grad_x if ctx.x_needs_grad else None
        if kernels is not None:
            grad_branches, grad_coef = kernels.edge_backward_tail(
                grad_out, branches, chan_dot, chan_gsum, dot_skip, dot_pool, mean, invstd, coef
            )
            return (grad_coef if ctx.coef_needs_grad else None, grad_x, None, None, None, None, None, None, None, *grad_branches)
        # <g, y_k>_c = invstd_k (<g, b_k>_c - mean_k sum_c g)
        y_dot = invstd * torch.addcmul(chan_dot.to(mean.dtype), mean, chan_gsum.to(mean.dtype), value=-1.0)
        grad_coef = None
        if ctx.coef_needs_grad:
            grad_coef = torch.cat([y_dot.sum(1).to(coef.dtype), torch.stack([dot_skip, dot_pool]).to(coef.dtype)])
        # BatchNorm backward with dy_k = coef_k g: the kernel wrote coef_k invstd_k g; the batch
        # statistics add  -coef_k invstd_k / M (sum_c g + y_k <g, y_k>_c),  an affine map of b_k.
        k = coef[:B, None].to(mean.dtype) * invstd * (-1.0 / count)
        slope = k * invstd * y_dot
        offset = torch.addcmul(k * chan_gsum.to(mean.dtype), slope, mean, value=-1.0)
        shape = (1, -1, 1, 1)
        for gb, b, s, o in zip(grad_branches, branches, slope.to(branches[0].dtype), offset.to(branches[0].dtype)):
            gb.addcmul_(b, s.view(shape)).add_(o.view(shape))
        return (grad_coef, grad_x, None, None, None, None, None, None, None, *grad_branches)


def _recomputed_branches(ctx, saved: List[Optional[Tensor]]) -> List[Tensor]:
    """The saved branches, with the dropped ones recomputed (values only: their own backward
    is autograd's, recorded in the forward) under the forward's autocast state, in the layout
    and dtype the kernels got."""
    device_type, enabled, dtype = ctx.autocast
    stride, branch_dtype = ctx.branch_layout
    out = []
    with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
        for fn, b in zip(ctx.recompute, saved):
            if b is None:
                b = fn()
                if b.stride() != stride or b.dtype != branch_dtype:
                    b = torch.empty_strided(b.shape, stride, dtype=branch_dtype, device=b.device).copy_(b)
            out.append(b)
    return out


def mixed_normalized_edge(
    branches: Sequence[Tensor],
    coef: Tensor,
    *,
    eps: float = 1e-5,
    x: Optional[Tensor] = None,
    has_skip: bool = False,
    has_pool: bool = False,
    backend: str = "auto",
    need_var: bool = True,
    recompute: Optional[Sequence[Optional[Callable[[], Tensor]]]] = None,
    edge_kernels: str = "auto",
) -> Tuple[Tensor, Tensor, Tensor]:
    """sum_k coef[k] * BN(branches[k]) + coef[B] * x + coef[B+1] * avgpool3(x), with BN the
    training-mode, non-affine BatchNorm (batch statistics, ``eps``).

    ``recompute[k]``, when given and not None, returns branch k's value again (no autograd):
    the edge then does not keep branch k for backward but calls it there (under the forward's
    autocast state).  Worth it where a branch is cheap to redo, e.g. a 1x1 convolution of a
    tensor that is kept anyway.

    ``edge_kernels``: ``"torch"`` (PyTorch ops), ``"triton"`` (four Triton kernels where they
    run: CUDA, or the CPU under the interpreter; not float64) or ``"auto"`` (the process
    default, ``sdarts.ops.backends.DEFAULT_EDGE_KERNELS``).

    Returns ``(out, mean, var)``: the batch mean and biased variance (B, C), detached, for the
    caller's running-statistics update (``var`` may be empty when not ``need_var``).  ``coef`` has B + 2 entries (entries for an absent skip/pool are
    not read; their gradient is 0).  Every tensor is 4-D (N, C, H, W) of one shape, dtype and
    device (checked as in ``mixed_edge``: shape and dtype reads, no device sync); any layout.
    """
    check_branch_list(branches)
    branches = list(branches)
    if not branches:
        raise ValueError("mixed_normalized_edge needs at least one branch")
    check_operands(branches, x)
    check_coef(coef, len(branches))
    if (has_skip or has_pool) and x is None:
        raise ValueError("has_skip/has_pool need the edge input x")
    if recompute is not None:
        recompute = tuple(recompute)
        if len(recompute) != len(branches):
            raise ValueError(f"recompute must have one entry per branch ({len(branches)}), got {len(recompute)}")
        if all(fn is None for fn in recompute):
            recompute = None
    like = branches[0]
    chosen = backends.resolve(backend, like.device, like.dtype)
    use_triton = backends.resolve_edge_kernels(edge_kernels) == "triton"
    operands: List[Tensor] = common_layout(branches + ([x] if x is not None else []))
    x = operands[-1] if x is not None else None
    acc = torch.float64 if like.dtype == torch.float64 else torch.float32
    return _NormalizedMixedEdge.apply(coef.to(acc), x, eps, has_skip, has_pool, chosen, need_var, recompute, use_triton,
                                      *operands[: len(branches)])
