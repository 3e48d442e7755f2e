"""``MixedOp``: the drop-in DARTS mixed edge, backed by the fused engine.

``MixedOp(C, stride)`` / ``forward(x, weights)`` has the signature of the class in the
original DARTS code, so it replaces that class with no other change.  Inside:

* ``none`` costs nothing (its dL/dp is exactly 0);
* ``skip_connect`` (stride 1) and NB201's ``avg_pool_3x3`` are computed by the kernel from x,
  never materialized or saved;
* candidates ending in a non-affine BatchNorm hand the kernel their pre-BN tensor and the
  per-channel normalization (scale, shift), so the normalized outputs are never stored;
* candidates starting with ReLU share one ReLU of x (and a cell may pass ``relu_x`` to share it
  across every edge leaving the same node; without it, edges handed the same x share one);
* in training mode, when every candidate ends in a non-affine BatchNorm (both search spaces),
  the whole edge is one autograd node (:func:`~sdarts.ops.normalized_edge.mixed_normalized_edge`):
  few kernel launches, which is what a GPU step at search shapes is bound by.

``recompute`` trades compute for memory (activation checkpointing).  ``recompute=True``
recomputes the whole edge in backward (its candidates, their batch statistics and the
kernel's forward), so an edge keeps only x and relu(x): 0.22x the plain edge's saved bytes
(NB201), under 0.1x (DARTS).  A tuple of candidate names recomputes only those candidates:
their internals by checkpointing, and in training mode their pre-BN outputs too, which the
edge's backward asks for again instead of keeping (NB201's 1x1 convolutions are cheap to redo;
the DARTS SepConvs keep most of an edge's internals).

``fused=False`` gives the plain ``sum(w * op(x))`` of the original code (same modules, same
parameters), which is what the engine is tested and benchmarked against.

Drop-in use (a caller that passes no ``relu_x``, as foreign DARTS code does): the edges that
receive the same tensor x in one forward share one copy of x in the edge layout and one
relu(x) (:meth:`MixedOp._shared_inputs` says when a shared value is served); with
the defaults ``recompute="auto"`` and ``memory_format="auto"`` the edge takes the settings
measured to pay on each device (on the CPU: channels_last, the DARTS SepConvs' internals and
NB201's 1x1 outputs recomputed; on CUDA: nothing).  A caller that passes ``relu_x``
(sdarts' own cells) manages sharing and layout itself, and the edge leaves both alone.
"""

from __future__ import annotations

import contextlib
import numbers
import threading
import weakref
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torch.utils.weak import WeakIdKeyDictionary

from .ops import mixed_edge
from .ops import backends
from .ops.backends import BACKENDS
from .ops.channel_stats import channel_moments
from .ops.normalized_edge import mixed_normalized_edge
from .primitives import DARTS, NB201Pool, PrimitiveSet, BNEnding, Zero, resolve_primitives

ZERO, SKIP, POOL, BN_BRANCH, BRANCH = "zero", "skip", "pool", "bn_branch", "branch"


def _check_int(name: str, value, allowed: Optional[Tuple[int, ...]] = None) -> int:
    """``value`` as an int that is positive (or in ``allowed``); a bool or 2.0 is not one here."""
    what = " or ".join(map(str, allowed)) if allowed else "positive"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int ({what}), got {type(value).__name__} {value!r}")
    ok = value in allowed if allowed else value >= 1
    if not ok:
        raise ValueError(f"{name} must be {what}, got {value}")
    return int(value)


def _check_backend(backend) -> str:
    # Checked here so that a typo fails at construction, not at the first forward.
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


# recompute="auto": per device type, the candidates recomputed and which part of each:
# "internals" (checkpointed; its output kept), "output" (its output redone by the edge's
# backward; what it keeps inside stays) or "both" (what naming a candidate does).  On the CPU,
# measured with bench/dropin.py: the DARTS SepConvs keep most of an edge's internals, and
# redoing their outputs as well costs a second forward of them for two activations of ~20;
# NB201's 1x1 keeps nothing of its own but its output, cheap to redo.  Nothing on CUDA, where
# no recompute was measured to pay yet.
AUTO_RECOMPUTE = {"cpu": {"sep_conv_3x3": "internals", "sep_conv_5x5": "internals", "nor_conv_1x1": "output"}}
# memory_format="auto": the layout the edge computes in, per device type (mkldnn's depthwise and
# small convolutions are faster channels_last; float64 has no mkldnn path and keeps its layout).
AUTO_MEMORY_FORMAT = {"cpu": torch.channels_last}
_AUTO_LAYOUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _auto_recompute(candidates: Tuple[str, ...], device_type: str) -> Dict[str, str]:
    """``recompute="auto"`` on ``device_type``: candidate name -> part (:data:`AUTO_RECOMPUTE`)."""
    auto = AUTO_RECOMPUTE.get(device_type, {})
    return {n: auto[n] for n in candidates if n in auto}


def _recomputed_names(recompute, candidates: Tuple[str, ...]) -> Tuple[str, ...]:
    """The candidates ``recompute`` names: all or none (a bool), one (a str, not its letters) or a list."""
    if isinstance(recompute, bool):
        return candidates if recompute else ()
    if isinstance(recompute, str):
        recompute = (recompute,)
    if not isinstance(recompute, Iterable) or not all(isinstance(n, str) for n in recompute):
        raise TypeError(f"recompute must be a bool, a candidate name or a list of names, got {recompute!r}")
    names = tuple(recompute)
    unknown = sorted(set(names) - set(candidates))
    if unknown:
        raise ValueError(f"recompute names {unknown}, which are not candidates of this edge {list(candidates)}")
    return names


def _check_memory_format(memory_format):
    if memory_format is None or memory_format in (torch.channels_last, torch.contiguous_format):
        return memory_format
    if isinstance(memory_format, str) and memory_format == "auto":
        return memory_format
    raise ValueError("memory_format must be 'auto', None, torch.channels_last or torch.contiguous_format, "
                     f"got {memory_format!r}")


# ----------------------------------------------------------------------------- shared edge inputs


class _SharedInputs:
    """What the edges receiving one tensor x in one forward share: x in the edge layout (None:
    x itself, which the entry must not hold, being keyed weakly on it) and relu of that."""

    __slots__ = ("version", "mode", "memory_format", "x", "relu_x", "relu_version", "consumers", "valid", "__weakref__")

    def __init__(self, version, mode, memory_format, x):
        self.version, self.mode, self.memory_format, self.x = version, mode, memory_format, x
        self.relu_x = self.relu_version = None
        self.consumers = set()
        self.valid = True


_shared = threading.local()  # one table per thread (DataParallel replicas run in threads)
_top_saved_tensors_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)


def _shared_table() -> WeakIdKeyDictionary:
    table = getattr(_shared, "table", None)
    if table is None:
        table = _shared.table = WeakIdKeyDictionary()
    return table


def _forward_mode(x: torch.Tensor) -> tuple:
    """What must be equal for a shared value to be served: grad and inference mode, autocast,
    and the saved-tensors hooks in force (activation checkpointing runs the original forward
    and the recomputation under different hooks, so neither sees the other's values)."""
    device = x.device.type
    hooks = _top_saved_tensors_hooks(True) if _top_saved_tensors_hooks is not None else object()
    return (torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device), hooks)


def _can_share(x: torch.Tensor) -> bool:
    """CPU and CUDA tensors only.  Never under torch.compile (it traces plain ops), never during
    CUDA-graph capture (a served value's kernel could belong to another graph or to no graph,
    and a replay would read it stale), never for an inference tensor (no version counter),
    never for a leaf x that requires grad (a user-held tensor: its forwards cannot be told
    apart, and the entry's graph would keep x alive)."""
    if torch.compiler.is_compiling() or x.is_inference() or x.device.type not in ("cpu", "cuda"):
        return False
    if x.is_cuda and torch.cuda.is_current_stream_capturing():
        return False
    return not (torch.is_grad_enabled() and x.requires_grad and x.grad_fn is None)


def _invalidate_on_backward(t: torch.Tensor, entry: _SharedInputs) -> None:
    """Once backward has run through ``t``, its graph may be freed: serve it no more."""
    if t.requires_grad and torch.is_grad_enabled():
        ref = weakref.ref(entry)

        def hook(grad):
            e = ref()
            if e is not None:
                e.valid = False

        t.register_hook(hook)


def _bn_scale_shift(bn: nn.BatchNorm2d, c: torch.Tensor):
    """The per-channel (scale, shift) that ``bn`` applies to ``c``, updating running stats like it."""
    use_batch_stats = bn.training or bn.running_mean is None
    if use_batch_stats:
        mean, var = channel_moments(c)
        if bn.training and bn.running_mean is not None:
            with torch.no_grad():
                n = c.numel() // c.shape[1]
                bn.num_batches_tracked.add_(1)
                momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
                bn.running_var.lerp_((var * (n / max(n - 1, 1))).to(bn.running_var.dtype), momentum)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    shift = -mean * scale
    if bn.affine:
        scale = scale * bn.weight
        shift = shift * bn.weight + bn.bias
    return scale, shift


def _recompute_contexts(op: nn.Module):
    """Recompute with the inner BatchNorms' momentum 0 and no batch counter, so that their
    running statistics and ``num_batches_tracked`` update once (in the forward), while the
    recomputation saves the same tensors as the forward (checkpoint checks that)."""

    @contextlib.contextmanager
    def frozen_running_stats():
        bns = [m for m in op.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
        saved = [(m.momentum, m.num_batches_tracked) for m in bns]
        for m in bns:
            m.momentum = 0.0
            m.num_batches_tracked = None  # BatchNorm skips the count when its buffer is None
        try:
            yield
        finally:
            for m, (momentum, count) in zip(bns, saved):
                m.momentum = momentum
                m.num_batches_tracked = count

    return contextlib.nullcontext(), frozen_running_stats()


class MixedOp(nn.Module):
    """One DARTS edge: sum_k weights[k] * candidate_k(x), fused.

    Args:
        C: channels (input and output).
        stride: 1, or 2 for reduction edges.
        primitives: a :class:`~sdarts.primitives.PrimitiveSet` (``sdarts.primitives.DARTS``,
            the default, or ``sdarts.primitives.NB201``), its name (``"darts"``, ``"nb201"``)
            or a list of candidate names (in that order, with the conventions of the known set
            that has them all, DARTS first; see :func:`~sdarts.primitives.resolve_primitives`).
        backend: mixed-sum backend (``"auto"``, ``"triton"``, ``"cuda"``, ``"cpu"``, ``"reference"``).
        fused: ``False`` computes the plain ``sum(w * op(x))`` of the original code.
        recompute: ``True``: recompute the whole edge in backward (it keeps only x and
            relu(x)); or the name(s) of the candidates to recompute (their internals and
            outputs; e.g. NB201's ``nor_conv_1x1`` or the DARTS SepConvs); ``"auto"`` (the
            default): per x's device type, :data:`AUTO_RECOMPUTE` (on the CPU the SepConvs'
            internals and ``nor_conv_1x1``'s output; nothing on CUDA).  Recomputing changes
            no number, only what is kept for backward.
        memory_format: the layout the edge computes in when the caller passes no ``relu_x``:
            ``"auto"`` (the default): channels_last for float32/16-bit x on the CPU, x's own
            layout elsewhere (:data:`AUTO_MEMORY_FORMAT`); ``None``: always x's own layout; or
            a ``torch.memory_format``.  The output comes in that layout, so a cell's nodes and
            output follow it after the first edges.
        share_inputs: ``True`` (the default): when the caller passes no ``relu_x``, the edges
            receiving the same x in one forward share its layout copy and relu(x)
            (:meth:`_shared_inputs`); ``False``: each edge computes its own.
        edge_kernels: the training edge's batch statistics and backward tail in PyTorch ops
            (``"torch"``), in four Triton kernels (``"triton"``), or the process default
            (``"auto"``: ``sdarts.ops.backends.DEFAULT_EDGE_KERNELS``).
        keep_weight_grad: keep this edge's dL/dweights of the last backward in
            ``last_weight_grad`` (a gradient hook per forward; off by default, the supernets
            read dL/dp once per step from ``Supernet.weight_grads()`` instead).
    """

    def __init__(
        self,
        C: int,
        stride: int,
        primitives: Union[PrimitiveSet, str, Sequence[str]] = DARTS,
        *,
        C_out: Optional[int] = None,
        backend: str = "auto",
        fused: bool = True,
        recompute: Union[bool, str, Sequence[str]] = "auto",
        memory_format: Union[str, torch.memory_format, None] = "auto",
        share_inputs: bool = True,
        edge_kernels: str = "auto",
        keep_weight_grad: bool = False,
    ):
        super().__init__()
        # Bad arguments fail here, in one line, not deep inside the first forward.
        primitives = resolve_primitives(primitives)
        C = _check_int("C", C)
        stride = _check_int("stride", stride, (1, 2))
        C_out = C if C_out is None else _check_int("C_out", C_out)
        if not isinstance(fused, bool):
            raise TypeError(f"fused must be a bool, got {fused!r}")
        if not isinstance(share_inputs, bool):
            raise TypeError(f"share_inputs must be a bool, got {share_inputs!r}")
        self.share_inputs = share_inputs
        self.C, self.C_out = C, C_out
        self.primitives = primitives
        self.backend = _check_backend(backend)
        backends.resolve_edge_kernels(edge_kernels)  # a typo, or Triton asked for and missing, fails here
        self.edge_kernels = edge_kernels
        if not isinstance(keep_weight_grad, bool):
            raise TypeError(f"keep_weight_grad must be a bool, got {keep_weight_grad!r}")
        self.keep_weight_grad = keep_weight_grad
        self.fused = fused
        self.memory_format = _check_memory_format(memory_format)
        self._ops = nn.ModuleList(primitives.build_search_op(name, C, C_out, stride) for name in primitives.names)
        self.kinds = [self._kind(op) for op in self._ops]
        if isinstance(recompute, str) and recompute == "auto":
            self.recompute = "auto"
            self._set_recomputed(_auto_recompute(primitives.names, "cpu"), "cpu")  # until a forward says otherwise
        else:
            recomputed = _recomputed_names(recompute, primitives.names)
            self.recompute = recompute if isinstance(recompute, bool) else recomputed
            self._set_recomputed(dict.fromkeys(recomputed, "both"), None)
        # coef = weights[coef_index]: the kernel's (branches..., skip, pool) order.  An absent
        # skip/pool entry is never read and gets an exactly zero gradient, so any index will do.
        K = len(self._ops)
        branch_idx = [k for k, kind in enumerate(self.kinds) if kind in (BN_BRANCH, BRANCH)]
        skip_idx = next((k for k, kind in enumerate(self.kinds) if kind == SKIP), K)
        pool_idx = next((k for k, kind in enumerate(self.kinds) if kind == POOL), K)
        self.register_buffer("coef_index", torch.tensor(branch_idx + [skip_idx % K, pool_idx % K]), persistent=False)
        self.has_skip = skip_idx < K
        self.has_pool = pool_idx < K
        self._bns = [op.bn for op, kind in zip(self._ops, self.kinds) if kind == BN_BRANCH]
        self.one_node = (
            len(self._bns) == len(branch_idx) > 0
            and not any(bn.affine for bn in self._bns)
            and len({(bn.eps, bn.momentum, bn.track_running_stats) for bn in self._bns}) == 1
            and self._bns[0].momentum is not None
        )
        self.last_weight_grad: Optional[torch.Tensor] = None
        self._grad_hook = None

    def _set_recomputed(self, parts: Dict[str, str], device_type: Optional[str]) -> None:
        """``parts``: recomputed candidate -> "both" | "internals" | "output"."""
        self._recomputed = tuple(name in parts for name in self.primitives.names)
        self._recompute_parts = tuple(parts.get(name, "both") for name in self.primitives.names)
        self._recompute_device = device_type  # what "auto" was resolved for (None: not "auto")
        # Every normalized candidate recomputed: the one-node edge keeps not even their pre-BN
        # outputs (the whole edge is recomputed in backward from x and relu(x)).
        normalized = [k for k, kind in enumerate(self.kinds) if kind == BN_BRANCH]
        self.recompute_edge = bool(normalized) and all(
            self._recomputed[k] and self._recompute_parts[k] == "both" for k in normalized
        )

    @staticmethod
    def _kind(op: nn.Module) -> str:
        if isinstance(op, Zero):
            return ZERO
        if isinstance(op, nn.Identity):
            return SKIP
        if isinstance(op, NB201Pool) and op.preprocess is None and op.pool.stride == 1:
            return POOL
        if isinstance(op, BNEnding):
            return BN_BRANCH
        return BRANCH

    @property
    def wants_relu(self) -> bool:
        """Whether a candidate starts with ReLU(x): then a caller may pass ``relu_x``."""
        return self.fused and any(isinstance(op, BNEnding) and op.starts_with_relu for op in self._ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, relu_x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``relu_x``: F.relu(x) if the caller already has it (shared by the edges leaving x)."""
        self._check_inputs(x, weights, relu_x)
        if self.keep_weight_grad and weights.requires_grad and torch.is_grad_enabled():
            # One hook at a time: a leaf `weights` passed every step would otherwise collect one
            # more hook per forward (and run them all in every backward).
            if self._grad_hook is not None:
                self._grad_hook.remove()
            self._grad_hook = weights.register_hook(self._remember_grad)
        if not self.fused:
            return sum(w * op(x) for w, op in zip(weights, self._ops))
        if self._recompute_device is not None and x.device.type != self._recompute_device:
            self._set_recomputed(_auto_recompute(self.primitives.names, x.device.type), x.device.type)
        if relu_x is None:
            x, relu_x = self._shared_inputs(x)
        bn = self._bns[0] if self._bns else None
        if self.one_node and (bn.training or bn.running_mean is None) and not torch.compiler.is_compiling():
            return self._forward_one_node(x, weights, relu_x)
        branches, scales, shifts = [], [], []
        any_bn = BN_BRANCH in self.kinds
        for k, (op, kind) in enumerate(zip(self._ops, self.kinds)):
            if kind == BN_BRANCH:
                c = self._pre_bn(k, x, relu_x if op.starts_with_relu else None)
                scale, shift = _bn_scale_shift(op.bn, c)
            elif kind == BRANCH:
                c = op(x)
                scale = shift = None
            else:
                continue
            if any_bn and scale is None:
                scale = torch.ones(c.shape[1], device=c.device)
                shift = torch.zeros(c.shape[1], device=c.device)
            branches.append(c)
            scales.append(scale)
            shifts.append(shift)
        coef = weights[self.coef_index]
        if not branches and not (self.has_skip or self.has_pool):
            # Only `none` candidates (or all zero): the edge outputs zeros of the right shape.
            return self._ops[0](x) * weights[0]
        if any(t.shape != (branches[0] if branches else x).shape for t in branches):
            raise ValueError("all candidates of a mixed op must produce one shape")
        if branches:
            # Under autocast the candidates may come out in another dtype than x.
            x = x.to(branches[0].dtype)
            branches = [b.to(branches[0].dtype) for b in branches]
        return mixed_edge(
            branches,
            coef,
            scale=torch.stack(scales) if any_bn else None,
            shift=torch.stack(shifts) if any_bn else None,
            x=x if (self.has_skip or self.has_pool) else None,
            has_skip=self.has_skip,
            has_pool=self.has_pool,
            backend=self.backend,
        )

    def _edge_memory_format(self, x: torch.Tensor) -> Optional[torch.memory_format]:
        if self.memory_format != "auto":
            return self.memory_format
        if x.dtype not in _AUTO_LAYOUT_DTYPES:
            return None
        return AUTO_MEMORY_FORMAT.get(x.device.type)

    def _shared_inputs(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(x in the edge layout, relu of it or None), shared with the other edges that got this
        same x in this forward (a foreign cell hands every edge leaving a node the same tensor).

        A shared value is served only for the same tensor object (a weak reference: the entry
        goes with x), at the same ``_version`` (an in-place change of x in between gets a new
        one), under the same grad / inference / autocast mode and saved-tensors hooks, and to
        an edge that has not taken it yet: the same edge called again with the same x is a new
        forward.  Once backward has run through a shared value it is not served again (its
        graph may be freed).  Not at all under torch.compile, CUDA-graph capture, or for a leaf
        x that requires grad (:func:`_can_share`).
        """
        memory_format = self._edge_memory_format(x)
        wants_relu = self.wants_relu
        if not wants_relu and memory_format is None:
            return x, None
        share = self.share_inputs and _can_share(x)
        entry = None
        if share:
            table = _shared_table()
            entry = table.get(x)
            mode = _forward_mode(x)
            if entry is not None and not (entry.valid and entry.version == x._version and entry.mode == mode
                                          and entry.memory_format == memory_format and id(self) not in entry.consumers
                                          and (entry.relu_x is None or entry.relu_x._version == entry.relu_version)):
                entry = None
        if entry is None:
            x_edge = x if memory_format is None else x.contiguous(memory_format=memory_format)
            if not share:
                return x_edge, F.relu(x_edge) if wants_relu else None
            entry = _SharedInputs(x._version, mode, memory_format, None if x_edge is x else x_edge)
            if entry.x is not None:
                _invalidate_on_backward(entry.x, entry)
            table[x] = entry
        entry.consumers.add(id(self))
        x_edge = x if entry.x is None else entry.x
        if wants_relu and entry.relu_x is None:
            entry.relu_x = F.relu(x_edge)
            entry.relu_version = entry.relu_x._version
            _invalidate_on_backward(entry.relu_x, entry)
        return x_edge, entry.relu_x if wants_relu else None

    def _check_inputs(self, x, weights, relu_x) -> None:
        # Shape comparisons only: no device sync, and torch.compile / CUDA-graph capture trace them.
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"MixedOp: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"MixedOp(C={self.C}) expects x of shape (N, {self.C}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.C:
            raise ValueError(f"MixedOp(C={self.C}) got input with {x.shape[1]} channels; x must be (N, {self.C}, H, W)")
        K = len(self._ops)
        if not isinstance(weights, torch.Tensor):
            raise TypeError(f"MixedOp: weights must be a torch.Tensor of {K} mixing weights, got {type(weights).__name__}")
        if not weights.is_floating_point():
            raise TypeError(f"MixedOp: weights must be a floating-point tensor, got dtype {weights.dtype}")
        if weights.dim() != 1 or weights.shape[0] != K:
            raise ValueError(f"weights must be 1-D with {K} entries (one per candidate), got shape {tuple(weights.shape)}")
        if relu_x is None:
            return
        if not isinstance(relu_x, torch.Tensor):
            raise TypeError(f"MixedOp: relu_x must be None or the tensor F.relu(x), got {type(relu_x).__name__}")
        if relu_x.shape != x.shape:
            raise ValueError(f"MixedOp: relu_x must be F.relu(x), of x's shape {tuple(x.shape)}, got shape {tuple(relu_x.shape)}")

    def _forward_one_node(self, x, weights, relu_x):
        coef = weights[self.coef_index]
        if self.recompute_edge and torch.is_grad_enabled():
            # Activation checkpointing of the whole edge: only its inputs stay alive; backward
            # runs the candidates, the statistics and the kernel's forward again (inner
            # BatchNorms with momentum 0, so running statistics update once).
            out, mean, var = checkpoint(self._normalized_edge, x, coef, relu_x, False, use_reentrant=False,
                                        preserve_rng_state=False, context_fn=lambda: _recompute_contexts(self._ops))
        else:
            out, mean, var = self._normalized_edge(x, coef, relu_x, True)
        if self._bns[0].training and self._bns[0].track_running_stats:
            count = out.numel() // out.shape[1]
            self._update_running_stats(mean, var, count)
        return out

    def _normalized_edge(self, x, coef, relu_x, checkpoint_candidates: bool):
        """(out, batch mean, batch var) of the one-node edge; ``checkpoint_candidates``: recompute
        the candidates named in ``recompute`` one by one (not when the whole edge is): their
        internals by checkpointing, their outputs by the edge's backward."""
        indices = [k for k, kind in enumerate(self.kinds) if kind == BN_BRANCH]
        inputs = [(x, relu_x if self._ops[k].starts_with_relu else None) for k in indices]
        branches = [self._pre_bn(k, *args, checkpoint_candidates) for k, args in zip(indices, inputs)]
        recompute = None
        redo = [self._recomputed[k] and self._recompute_parts[k] != "internals" for k in indices]
        if checkpoint_candidates and torch.is_grad_enabled() and any(redo):
            recompute = [self._output_recompute(k, *args) if r else None for k, args, r in zip(indices, inputs, redo)]
        if any(b.shape != branches[0].shape for b in branches):
            raise ValueError("all candidates of a mixed op must produce one shape")
        uses_x = self.has_skip or self.has_pool
        return mixed_normalized_edge(
            branches,
            coef,
            eps=self._bns[0].eps,
            x=x.to(branches[0].dtype) if uses_x else None,  # under autocast the candidates may be half
            has_skip=self.has_skip,
            has_pool=self.has_pool,
            backend=self.backend,
            need_var=self._bns[0].training and self._bns[0].track_running_stats,
            recompute=recompute,
            edge_kernels=self.edge_kernels,
        )

    def _output_recompute(self, k, x, relu_x):
        """A function giving candidate k's pre-BN output again (for the edge's backward), which
        refuses if its input or weights changed in place since the forward."""
        op = self._ops[k]
        tensors = [t for t in (x, relu_x) if t is not None] + list(op.parameters())
        versions = [t._version for t in tensors]

        def pre_bn_again():
            if any(t._version != v for t, v in zip(tensors, versions)):
                raise RuntimeError(f"MixedOp: the input or weights of {self.primitives.names[k]} were modified in place "
                                   "between forward and backward; its recomputed output would be wrong")
            with _recompute_contexts(op)[1]:
                return op.pre_bn(x, relu_x)

        return pre_bn_again

    @torch.no_grad()
    def _update_running_stats(self, mean, var, count):
        """What each candidate's BatchNorm would have done to its running statistics."""
        bns = self._bns
        momentum = bns[0].momentum
        dtype = bns[0].running_mean.dtype
        unbiased_var = var * (count / max(count - 1, 1))
        torch._foreach_add_([bn.num_batches_tracked for bn in bns], 1)
        torch._foreach_lerp_([bn.running_mean for bn in bns], list(mean.to(dtype).unbind(0)), momentum)
        torch._foreach_lerp_([bn.running_var for bn in bns], list(unbiased_var.to(dtype).unbind(0)), momentum)

    def _pre_bn(self, k, x, relu_x, checkpoint_candidates: bool = True):
        op = self._ops[k]
        internals = self._recomputed[k] and self._recompute_parts[k] != "output"
        if not (checkpoint_candidates and internals and torch.is_grad_enabled()):
            return op.pre_bn(x, relu_x)
        # No candidate draws random numbers, so there is no RNG state to save and restore (that
        # would read the device generator each call, which a CUDA-graph capture cannot do).
        return checkpoint(op.pre_bn, x, relu_x, use_reentrant=False, preserve_rng_state=False,
                          context_fn=lambda: _recompute_contexts(op))

    def __setstate__(self, state):
        # A MixedOp pickled before these options existed keeps its layout and recomputes as set.
        state.setdefault("memory_format", None)
        state.setdefault("share_inputs", True)
        state.setdefault("edge_kernels", "auto")
        state.setdefault("keep_weight_grad", False)
        state.setdefault("_recompute_device", None)
        state.setdefault("_recompute_parts", ("both",) * len(state.get("_recomputed", ())))
        super().__setstate__(state)

    def __getstate__(self):
        # The hook handle belongs to the last graph, not to the module's state.
        state = dict(super().__getstate__())
        state["_grad_hook"] = None
        return state

    def _remember_grad(self, grad: torch.Tensor) -> None:
        # dL/dp_k of this edge from the last backward, for the per-op gradient diagnostics.
        self.last_weight_grad = grad.detach()

    def extra_repr(self) -> str:
        return (f"primitives={list(self.primitives.names)}, backend={self.backend!r}, fused={self.fused}, "
                f"recompute={self.recompute!r}, memory_format={self.memory_format!r}, share_inputs={self.share_inputs}, "
                f"edge_kernels={self.edge_kernels!r}")
