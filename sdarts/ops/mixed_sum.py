"""The mixed sum of a DARTS edge as a ``torch.library`` custom op with an autograd formula.

Eager calls go through an equivalent ``torch.autograd.Function`` instead: the custom-op
machinery costs a few hundred microseconds of host time per call, which dominates at search
shapes; under ``torch.compile`` the custom op is used, so tracing never breaks the graph.

``mixed_sum(branches, weights)`` is the public, generic form: out = sum_k w_k * branch_k.
``mixed_edge(...)`` is the engine form used by ``MixedOp``: branches may carry a per-channel
affine (a fused, non-affine BatchNorm), and the skip and 3x3 average-pool candidates are
computed inside the kernel from the edge input, never materialized or saved.

Backward returns every branch gradient and every dL/dw_k from one pass over g and the
branches.  Reductions go through fixed-order partial sums, so results are deterministic on
every backend.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from . import backends
from .edge_core import (backward_pass, check_branch_list, check_coef, check_float, check_operands, common_layout,
                        forward_pass, like_layout)

# --------------------------------------------------------------------------------------
# Custom ops: opaque to torch.compile (no graph break), with fake implementations.
# --------------------------------------------------------------------------------------

# The core's passes, registered as custom ops for torch.compile.
_forward_op = torch.library.custom_op("sdarts::mixed_forward", forward_pass, mutates_args=())


@_forward_op.register_fake
def _forward_fake(branches, coef, scale, shift, x, has_skip, has_pool, backend):
    return torch.empty_like(branches[0] if len(branches) else x)


def _backward_eager(*args) -> List[Tensor]:
    """The custom op's flat result, without the copies only the custom op needs."""
    grad_branches, *small = backward_pass(*args)
    return grad_branches + small


def _backward_op_impl(
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
) -> List[Tensor]:
    """Flat list: B branch grads (if requested), grad_x, chan_dot, chan_gsum, dot_skip, dot_pool."""
    grad_branches, grad_x, chan_dot, chan_gsum, dot_skip, dot_pool = backward_pass(
        grad_out, branches, coef, scale, x, has_skip, has_pool, need_branch_grads, need_x_grad, backend
    )
    # The small reductions may be views of one partials buffer in a backend; custom ops
    # must not return aliases, and copying a few floats is free.
    small = [grad_x if grad_x.numel() else grad_x.clone(), chan_dot.clone(), chan_gsum.clone(), dot_skip.clone(), dot_pool.clone()]
    return grad_branches + small


_backward_op = torch.library.custom_op("sdarts::mixed_backward", _backward_op_impl, mutates_args=())


@_backward_op.register_fake
def _backward_fake(grad_out, branches, coef, scale, x, has_skip, has_pool, need_branch_grads, need_x_grad, backend):
    like = branches[0] if len(branches) else x
    acc = torch.float64 if like.dtype == torch.float64 else torch.float32
    out = [torch.empty_like(b) for b in branches] if need_branch_grads else []
    gx = torch.empty_like(x) if (need_x_grad and x is not None and (has_skip or has_pool)) else like.new_empty(0)
    channels = like.shape[1]
    return out + [
        gx,
        like.new_empty((len(branches), channels), dtype=acc),
        like.new_empty((channels,), dtype=acc),
        like.new_empty((), dtype=acc),
        like.new_empty((), dtype=acc),
    ]


def _setup_context(ctx, inputs, output):
    branches, coef, scale, shift, x, has_skip, has_pool, backend = inputs
    ctx.num_branches = len(branches)
    ctx.flags = (has_skip, has_pool, backend)
    ctx.x_given = x is not None
    ctx.branches_need_grad = any(b.requires_grad for b in branches)
    ctx.x_needs_grad = x is not None and x.requires_grad
    # Save only what backward reads: the branches and x are needed only for the dL/dw dot
    # products, so nothing large is saved when the weights need no gradient.
    ctx.need_dots = any(t is not None and t.requires_grad for t in (coef, scale, shift))
    if ctx.need_dots:
        ctx.save_for_backward(*branches, coef, scale, shift, x)
    else:
        ctx.save_for_backward(coef, scale)


def _backward(ctx, grad_out):
    grads = _backward_core(ctx, grad_out, _backward_op)
    return grads + (None, None, None)


def _backward_core(ctx, grad_out, backward_fn):
    """(grad_branches, grad_coef, grad_scale, grad_shift, grad_x) with ``backward_fn`` doing the pass."""
    has_skip, has_pool, backend = ctx.flags
    B = ctx.num_branches
    need_branch_grads = ctx.branches_need_grad and B > 0
    need_x_grad = ctx.x_needs_grad and (has_skip or has_pool)
    if not ctx.need_dots:
        coef, scale = ctx.saved_tensors
        return _elementwise_grads(grad_out, B, coef, scale, has_skip, has_pool, need_branch_grads, need_x_grad)
    saved = ctx.saved_tensors
    branches = list(saved[:B])
    coef, scale, shift, x = saved[B:]
    grad_out = like_layout(grad_out, branches[0] if branches else x)
    outs = backward_fn(grad_out, branches, coef, scale, x, has_skip, has_pool, need_branch_grads, need_x_grad, backend)
    grad_branches = outs[:B] if need_branch_grads else [None] * B
    grad_x, chan_dot, chan_gsum, dot_skip, dot_pool = outs[len(outs) - 5 :]
    chan_dot = chan_dot.to(coef.dtype)
    chan_gsum = chan_gsum.to(coef.dtype)
    if scale is None:
        branch_dots = chan_dot.sum(dim=1)
    else:
        # dL/dw_k = <g, s_k * b_k + t_k> = sum_c s_k[c] <g, b_k>_c + t_k[c] sum_c g
        branch_dots = (scale * chan_dot).sum(dim=1) + (shift * chan_gsum[None, :]).sum(dim=1)
    grad_coef = torch.cat([branch_dots, dot_skip.reshape(1).to(coef.dtype), dot_pool.reshape(1).to(coef.dtype)])
    grad_scale = grad_shift = None
    if scale is not None:
        grad_scale = coef[:B, None] * chan_dot
        grad_shift = coef[:B, None] * chan_gsum[None, :]
    return grad_branches, grad_coef, grad_scale, grad_shift, grad_x if need_x_grad else None


def _elementwise_grads(grad_out, B, coef, scale, has_skip, has_pool, need_branch_grads, need_x_grad):
    """Backward when the weights need no gradient: branch and input gradients only."""
    from .reference import avg_pool3_transpose

    g = grad_out.to(coef.dtype)
    grad_branches = [None] * B
    if need_branch_grads:
        grad_branches = []
        for k in range(B):
            s = coef[k] if scale is None else coef[k] * scale[k].view(1, -1, 1, 1)
            grad_branches.append((s * g).to(grad_out.dtype))
    grad_x = None
    if need_x_grad:
        acc = torch.zeros_like(g)
        if has_skip:
            acc = acc + coef[B] * g
        if has_pool:
            acc = acc + coef[B + 1] * avg_pool3_transpose(g)
        grad_x = acc.to(grad_out.dtype)
    return grad_branches, None, None, None, grad_x


_forward_op.register_autograd(_backward, setup_context=_setup_context)


class _MixedEdgeEager(torch.autograd.Function):
    """The same forward and backward as the custom op, without its per-call dispatch cost."""

    @staticmethod
    def forward(coef, scale, shift, x, has_skip, has_pool, backend, *branches):
        return forward_pass(list(branches), coef, scale, shift, x, has_skip, has_pool, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        coef, scale, shift, x, has_skip, has_pool, backend, *branches = inputs
        _setup_context(ctx, (branches, coef, scale, shift, x, has_skip, has_pool, backend), output)

    @staticmethod
    def backward(ctx, grad_out):
        grad_branches, grad_coef, grad_scale, grad_shift, grad_x = _backward_core(ctx, grad_out, _backward_eager)
        return (grad_coef, grad_scale, grad_shift, grad_x, None, None, None, *grad_branches)


# --------------------------------------------------------------------------------------
# Public functions: validation, layout normalization, backend choice.
# --------------------------------------------------------------------------------------


def mixed_edge(
    branches: Sequence[Tensor],
    coef: Tensor,
    *,
    scale: Optional[Tensor] = None,
    shift: Optional[Tensor] = None,
    x: Optional[Tensor] = None,
    has_skip: bool = False,
    has_pool: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Engine form: sum_k coef[k]*(scale[k,c]*b_k + shift[k,c]) + coef[B]*x + coef[B+1]*pool3(x).

    ``coef`` has B + 2 entries (the last two weigh skip and pool; pass 0 where absent).
    All tensors are 4-D (N, C, H, W).  Used by :class:`sdarts.MixedOp`.
    """
    check_branch_list(branches)
    branches = list(branches)
    operands = branches + ([x] if x is not None else [])
    if not operands:
        raise ValueError("mixed_edge needs at least one branch or an input x")
    check_operands(branches, x)
    like = operands[0]
    if (has_skip or has_pool) and x is None:
        raise ValueError("has_skip/has_pool need the edge input x")
    check_coef(coef, len(branches))
    if (scale is None) != (shift is None):
        raise ValueError("scale and shift must be given together")
    acc_dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    if scale is not None:
        check_float("scale", scale)
        check_float("shift", shift)
        expected = (len(branches), like.shape[1])
        if scale.shape != expected or shift.shape != expected:
            raise ValueError(f"scale and shift must have shape {expected}, got {tuple(scale.shape)} and {tuple(shift.shape)}")
        scale, shift = scale.to(acc_dtype), shift.to(acc_dtype)
    chosen = backends.resolve(backend, like.device, like.dtype)
    operands = common_layout(operands)
    branches = operands[: len(branches)]
    x = operands[-1] if x is not None else None
    coef = coef.to(device=like.device, dtype=acc_dtype)
    if torch.compiler.is_compiling():
        return _forward_op(branches, coef, scale, shift, x, has_skip, has_pool, chosen)
    return _MixedEdgeEager.apply(coef, scale, shift, x, has_skip, has_pool, chosen, *branches)


def mixed_sum(branches: Sequence[Tensor], weights: Tensor, *, backend: str = "auto") -> Tensor:
    """Weighted sum of K same-shaped tensors, sum_k weights[k] * branches[k], in one fused pass.

    Autograd gives every branch gradient (weights[k] * g) and every dL/dweights[k] =
    <g, branches[k]> (float32 accumulation, deterministic) from one backward pass.

    Args:
        branches: a non-empty sequence of K tensors of one shape, dtype and device
            (float32, float16, bfloat16; float64 on the reference backend).
        weights: 1-D tensor of K mixing weights (e.g. softmax or sigmoid of alpha).
        backend: ``"auto"`` (fastest available), ``"triton"``, ``"cuda"``, ``"cpu"`` or ``"reference"``.
    """
    check_branch_list(branches)
    if len(branches) == 0:
        raise ValueError("branches must contain at least one tensor")
    check_operands(branches, four_d=False)
    check_float("weights", weights)
    if weights.dim() != 1 or weights.shape[0] != len(branches):
        raise ValueError(f"weights must be 1-D with one entry per branch ({len(branches)}), got shape {tuple(weights.shape)}")
    first = branches[0]
    if weights.device != first.device:
        raise ValueError(f"weights is on {weights.device}, branches on {first.device}")
    if first.dim() == 4:
        views = list(branches)
    else:
        # Any other rank: one flat (1, 1, 1, numel) view (a copy only if not contiguous).
        views = [b.reshape(1, 1, 1, -1) for b in branches]
    acc_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    coef = torch.cat([weights.to(acc_dtype), weights.new_zeros(2, dtype=acc_dtype)])
    out = mixed_edge(views, coef, backend=backend)
    return out if first.dim() == 4 else out.reshape(first.shape)
