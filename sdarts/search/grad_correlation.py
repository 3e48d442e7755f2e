"""The gradient-correlation diagnostic of Single-DARTS (Hou, Jin, Chen 2021, Sec. 5.2.1, Eq. 8),
as we read it: the paper's own text of Eq. 8 was not at hand when this was written, so the
definition below (stated exactly in :func:`grad_correlation`) is our reconstruction from the
paper's description (the correlation of per-sample output gradients and edge inputs of the
batch that moves alpha and the batch that moves w).  Check it against the paper before
quoting figures as the paper's.

The argument: what a step of w does to the loss that moves alpha depends on how the
batch that moves w and the batch that moves alpha correlate.  At an edge o with input x and
output o(x), a linear weight W on the edge gets from sample n the gradient g_n x_n^T (g_n =
dL/do(x_n)), and <g_i x_i^T, g_j x_j^T>_F = <g_i, g_j> <x_i, x_j>.  So the alignment of the
two batches' weight gradients at the edge is made of the products of the output-gradient and
the input correlations of every pair of samples.  Single-level: the two batches are one, and
the pairs of a sample with itself make it positive; bi-level (a validation batch for alpha, a
training batch for w): independent samples, about zero.

:func:`grad_correlation` computes it from captured per-sample tensors; :func:`edge_grad_correlation`
captures them on chosen edges of a supernet (leaving its ``.grad`` and buffers as they were);
:func:`default_edges` chooses every edge of the first, middle and last search cell.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..mixed_op import MixedOp
from ..spaces import darts_edge_names
from ..spaces.darts.supernet import SearchCell as DartsSearchCell
from ..spaces.nb201.genotype import EDGE_NAMES as NB201_EDGE_NAMES
from ..spaces.nb201.models import SearchCell as NB201SearchCell
from .strategies import Batch, full_precision

Edges = Union[Mapping[str, nn.Module], Iterable[str]]


def grad_correlation(x_a: Tensor, g_a: Tensor, x_w: Tensor, g_w: Tensor) -> Tensor:
    """Eq. 8 (our reading) at one edge: the mean over every pair (i of the alpha batch, j of the w batch) of
    cos(g_a[i], g_w[j]) * cos(x_a[i], x_w[j]), a 0-dim float64 tensor in [-1, 1].

    ``x_a`` (Na, C, H, W) and ``x_w`` (Nw, C, H, W): the edge's input per sample of the batch
    that moves alpha and of the batch that moves w; ``g_a``, ``g_w``: the loss's gradient with
    respect to the edge's output, same samples (the output's shape may differ from the
    input's: stride-2 edges).  Each sample's tensor is one vector (flattened).

    Normalisation: each pair is normalised by its four norms, so the pair's term is the cosine
    between the weight gradients g_i x_i^T and g_j x_j^T that the two samples would give a
    linear edge, and the result is their mean over the Na * Nw pairs: neither the loss scale
    (a mean over the batch makes g ~ 1/N) nor the feature scale enters.  A sample whose input
    or gradient is zero has cosine 0 with everything.  For the same batch (Na = Nw = N) the N
    pairs of a sample with itself contribute exactly 1/N; independent batches give about 0.
    Accumulated in float64.
    """
    for name, x, g in (("a", x_a, g_a), ("w", x_w, g_w)):
        if x.dim() < 1 or g.dim() < 1 or x.shape[0] != g.shape[0]:
            raise ValueError(f"x_{name} and g_{name} must have one sample per row, got shapes "
                             f"{tuple(x.shape)} and {tuple(g.shape)}")
    if x_a.shape[1:] != x_w.shape[1:] or g_a.shape[1:] != g_w.shape[1:]:
        raise ValueError(f"the two batches must come from one edge: inputs {tuple(x_a.shape)} / {tuple(x_w.shape)}, "
                         f"gradients {tuple(g_a.shape)} / {tuple(g_w.shape)}")
    if x_a.shape[0] == 0 or x_w.shape[0] == 0:
        raise ValueError("both batches need at least one sample")

    def unit_rows(t: Tensor) -> Tensor:
        t = t.detach().reshape(t.shape[0], -1).to(torch.float64)
        norm = torch.linalg.vector_norm(t, dim=1, keepdim=True)
        return t / norm.clamp_min(torch.finfo(torch.float64).tiny)  # a zero row stays zero

    cos_x = unit_rows(x_a) @ unit_rows(x_w).T
    cos_g = unit_rows(g_a) @ unit_rows(g_w).T
    return (cos_x * cos_g).mean()


# ----------------------------------------------------------------------------- which edges


def _cell_edge_names(cell: nn.Module) -> Optional[Tuple[str, ...]]:
    """The edge labels ("j<-i", alpha's row order) of a search cell; None for any other module."""
    if isinstance(cell, NB201SearchCell):
        return NB201_EDGE_NAMES
    if isinstance(cell, DartsSearchCell):
        return darts_edge_names(cell.steps)
    return None


def named_edges(model: nn.Module) -> Dict[str, MixedOp]:
    """Every edge of every search cell, named ``"cell{k}/{j}<-{i}"``: ``model.cells[k]``'s edge
    into node j from node i (the space's edge label, as in ``SearchSpace.edges``).  k counts
    every module of ``model.cells``, so NB201's reduction blocks and DARTS' reduction cells
    keep their place in the numbering."""
    cells = getattr(model, "cells", None)
    if not isinstance(cells, nn.ModuleList):
        raise TypeError(f"expected an sdarts supernet (with .cells), got {type(model).__name__}")
    edges: Dict[str, MixedOp] = {}
    for k, cell in enumerate(cells):
        names = _cell_edge_names(cell)
        if names is not None:
            edges.update((f"cell{k}/{name}", edge) for name, edge in zip(names, cell.edges))
    if not edges:
        raise ValueError(f"{type(model).__name__} has no search cells")
    return edges


def default_edges(model: nn.Module) -> Dict[str, MixedOp]:
    """The paper's choice, "every node of the first, middle and last cell": every edge (so
    every incoming edge of every node) of the first, middle and last search cell.  Middle:
    the ``len // 2``-th search cell (NB201 with N=5: ``cells[8]``, the middle of stage 2;
    DARTS with 8 cells: ``cells[4]``).  A supernet with fewer than 3 cells gives each once."""
    edges = named_edges(model)
    cells = list(dict.fromkeys(name.split("/")[0] for name in edges))
    chosen = {cells[0], cells[len(cells) // 2], cells[-1]}
    return {name: edge for name, edge in edges.items() if name.split("/")[0] in chosen}


def _resolve_edges(model: nn.Module, edges: Optional[Edges]) -> Dict[str, nn.Module]:
    if edges is None:
        return default_edges(model)
    if isinstance(edges, Mapping):
        return dict(edges)
    if isinstance(edges, str):
        edges = (edges,)
    available = named_edges(model)
    unknown = [name for name in edges if name not in available]
    if unknown:
        raise KeyError(f"no edges {unknown} in this supernet; its edges are {list(available)}")
    return {name: available[name] for name in edges}


# ----------------------------------------------------------------------------- capture


@contextlib.contextmanager
def _buffers_kept(model: nn.Module) -> Iterator[None]:
    """Put every buffer (BN running stats and counters) back as it was: the diagnostic runs
    the model as the search does (train mode, batch statistics) but must not move its state."""
    buffers = list(model.buffers())
    saved = [b.detach().clone() for b in buffers]
    last_p = getattr(model, "_last_p", None)  # dL/dp of the search's last backward (weight_grads())
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)
        if last_p is not None:
            model._last_p = last_p


def _capture(model: nn.Module, batch: Batch, edges: Mapping[str, nn.Module],
             criterion: nn.Module) -> Dict[str, Tuple[Tensor, Tensor]]:
    """{edge name: (its input, dL/d its output)} for one forward of ``batch``."""
    seen: Dict[str, Tuple[Tensor, Tensor]] = {}

    def hook_for(name: str):
        def hook(module, args, kwargs, out):
            if name in seen:
                raise RuntimeError(f"edge {name} ran twice in one forward; its input and output are ambiguous")
            x = args[0] if args else kwargs["x"]
            seen[name] = (x.detach(), out)
        return hook

    handles = [edge.register_forward_hook(hook_for(name), with_kwargs=True) for name, edge in edges.items()]
    try:
        with torch.enable_grad():
            inputs, targets = batch
            loss = criterion(full_precision(model(inputs)), targets)
    finally:
        for h in handles:
            h.remove()
    missing = [name for name in edges if name not in seen]
    if missing:
        raise RuntimeError(f"edges {missing} did not run in the model's forward")
    names = list(edges)
    outs = [seen[name][1] for name in names]
    # Gradients w.r.t. the captured outputs only: no parameter's .grad is read or written.
    grads = torch.autograd.grad(loss, outs, allow_unused=True)
    return {name: (seen[name][0], torch.zeros_like(out) if g is None else g.detach())
            for name, out, g in zip(names, outs, grads)}


def edge_grad_correlation(model: nn.Module, batch_alpha: Batch, batch_w: Batch, edges: Optional[Edges] = None,
                          criterion: Optional[nn.Module] = None) -> Dict[str, float]:
    """{edge name: :func:`grad_correlation`} between the batch that moves alpha and the batch
    that moves w, at the current parameters (bi-level: a validation and a training batch;
    single-level: the same batch twice, which costs one forward).

    ``model``: an sdarts supernet (not its DDP wrapper), run in its current mode (the search
    runs it in train mode).  ``batch_*``: (inputs, targets).  ``edges``: None (:func:`default_edges`),
    names from :func:`named_edges`, or {name: MixedOp}.  ``criterion``: the strategy's loss
    (cross-entropy by default); under autocast, call this inside the same autocast.

    One forward and one ``torch.autograd.grad`` per batch; parameters' ``.grad``, every buffer
    (BatchNorm running statistics) and the supernet's last dL/dp are left as they were.
    """
    chosen = _resolve_edges(model, edges)
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    with _buffers_kept(model):
        cap_a = _capture(model, batch_alpha, chosen, criterion)
    same = batch_w is batch_alpha or all(u is v for u, v in zip(batch_w, batch_alpha))
    if same:
        cap_w = cap_a
    else:
        with _buffers_kept(model):
            cap_w = _capture(model, batch_w, chosen, criterion)
    return {name: grad_correlation(*cap_a[name], *cap_w[name]).item() for name in chosen}


__all__ = ["default_edges", "edge_grad_correlation", "grad_correlation", "named_edges"]
