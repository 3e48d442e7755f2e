"""How one search step turns batches into updates of w and alpha.

Single-level (Single-DARTS), bi-level DARTS (first and second order) and the two ablations
of the paper's Table 4 differ only in which batch feeds which gradient and in what order the
optimizers step.  Each is a small object with ``step(model, batch_w, batch_alpha)``; the loop
is written once and hands it a w batch and an alpha batch from the source the strategy names
in ``alpha_source``:

* ``"same"``:  batch_alpha is batch_w (the loop passes the same batch twice);
* ``"train"``: another batch of the search half;
* ``"valid"``: a batch of the other half of the training set.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..spaces.base import Supernet

Batch = Tuple[Tensor, Tensor]
GradSync = Callable[[Sequence[Tensor]], None]


@dataclass
class StepOutput:
    """What the loop logs of a step: the w batch's loss and logits (detached), and dL/dp of
    the loss whose gradient moved alpha (``model.weight_grads()`` right after that backward)."""

    loss: Tensor
    logits: Tensor
    targets: Tensor
    weight_grads: Dict[str, Optional[Tensor]]


def full_precision(logits: Tensor) -> Tensor:
    """Logits for the loss: half-precision ones (autocast) go up to float32."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _params(optimizer: torch.optim.Optimizer) -> List[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


class SearchStrategy(abc.ABC):
    """Base: owns both optimizers, the loss, w's gradient clipping and the gradient all-reduce.

    Args:
        w_optimizer: optimizer of the network weights (its params define "w").
        alpha_optimizer: optimizer of the architecture parameters (its params define "alpha").
        grad_clip: max global norm of w's gradient (None: no clipping).
        criterion: loss on (logits, targets); cross-entropy by default.
        autocast_dtype: run forwards under ``torch.autocast`` with this dtype (bf16 for ``--amp``).
        grad_sync: averages the ``.grad`` of the given parameters over processes (DDP); None in
            a single process.
    """

    name = "base"
    alpha_source = "same"

    def __init__(
        self,
        w_optimizer: torch.optim.Optimizer,
        alpha_optimizer: torch.optim.Optimizer,
        *,
        grad_clip: Optional[float] = 5.0,
        criterion: Optional[nn.Module] = None,
        autocast_dtype: Optional[torch.dtype] = None,
        grad_sync: Optional[GradSync] = None,
    ):
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
        self.w_optimizer = w_optimizer
        self.alpha_optimizer = alpha_optimizer
        self.w_params = _params(w_optimizer)
        self.alpha_params = _params(alpha_optimizer)
        self.grad_clip = grad_clip
        self.criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
        self.autocast_dtype = autocast_dtype
        self.grad_sync = grad_sync

    @abc.abstractmethod
    def step(self, model: Supernet, batch_w: Batch, batch_alpha: Batch) -> StepOutput:
        """One search step: both optimizers step; returns what the loop logs."""

    # -- building blocks ---------------------------------------------------------------

    def forward_loss(self, model: Supernet, batch: Batch) -> Tuple[Tensor, Tensor]:
        x, y = batch
        ctx = torch.autocast(x.device.type, dtype=self.autocast_dtype) if self.autocast_dtype else contextlib.nullcontext()
        with ctx:
            logits = model(x)
        return self.criterion(full_precision(logits), y), logits

    def backward(self, loss: Tensor, params: Sequence[Tensor]) -> None:
        """Fresh gradients of ``loss`` for ``params`` only (the others keep theirs)."""
        for p in params:
            p.grad = None
        loss.backward(inputs=list(params))

    def sync(self, params: Sequence[Tensor]) -> None:
        if self.grad_sync is not None:
            self.grad_sync(params)

    def alpha_gradient(self, model: Supernet, batch: Batch) -> Dict[str, Optional[Tensor]]:
        """alpha.grad from ``batch`` (w's gradients untouched); returns dL/dp of that loss."""
        loss, _ = self.forward_loss(model, batch)
        self.backward(loss, self.alpha_params)
        return model.weight_grads()

    def w_gradient(self, model: Supernet, batch: Batch) -> Tuple[Tensor, Tensor]:
        """w's .grad from ``batch`` (alpha's untouched); returns its loss and logits."""
        loss, logits = self.forward_loss(model, batch)
        self.backward(loss, self.w_params)
        return loss, logits

    def step_w(self) -> None:
        self.sync(self.w_params)
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.w_params, self.grad_clip)
        self.w_optimizer.step()

    def step_alpha(self) -> None:
        self.sync(self.alpha_params)
        self.alpha_optimizer.step()

    def output(self, loss: Tensor, logits: Tensor, batch: Batch, weight_grads) -> StepOutput:
        return StepOutput(loss.detach(), logits.detach(), batch[1], weight_grads)


class SingleLevel(SearchStrategy):
    """Single-DARTS: one batch, one forward, one backward, both optimizers step."""

    name = "single"
    alpha_source = "same"

    def step(self, model, batch_w, batch_alpha):
        loss, logits = self.forward_loss(model, batch_w)
        self.backward(loss, self.w_params + self.alpha_params)
        weight_grads = model.weight_grads()
        self.step_w()
        self.step_alpha()
        return self.output(loss, logits, batch_w, weight_grads)


class SingleDiffBatches(SearchStrategy):
    """Table-4 ablation: alpha's gradient from another batch of the same subset as w's; both
    gradients at the same (w, alpha), then both optimizers step together."""

    name = "single-diff-batches"
    alpha_source = "train"

    def step(self, model, batch_w, batch_alpha):
        weight_grads = self.alpha_gradient(model, batch_alpha)
        loss, logits = self.w_gradient(model, batch_w)
        self.step_w()
        self.step_alpha()
        return self.output(loss, logits, batch_w, weight_grads)


class SingleDiffSubsets(SingleDiffBatches):
    """Table-4 ablation: as :class:`SingleDiffBatches`, alpha's batch from the other half."""

    name = "single-diff-subsets"
    alpha_source = "valid"


class FirstOrderBilevel(SearchStrategy):
    """First-order DARTS: alpha steps on a batch of the other half, then w on the train batch
    (whose forward already sees the new alpha)."""

    name = "bilevel"
    alpha_source = "valid"

    def step(self, model, batch_w, batch_alpha):
        weight_grads = self.architecture_gradient(model, batch_w, batch_alpha)
        self.step_alpha()
        loss, logits = self.w_gradient(model, batch_w)
        self.step_w()
        return self.output(loss, logits, batch_w, weight_grads)

    def architecture_gradient(self, model, batch_w: Batch, batch_alpha: Batch):
        """Set alpha.grad for the alpha step; returns the dL/dp to log."""
        return self.alpha_gradient(model, batch_alpha)


class SecondOrderBilevel(FirstOrderBilevel):
    """Second-order DARTS: alpha follows the gradient of L_valid(w', alpha) through one virtual
    SGD step w' = w - xi (momentum*buf + dL_train/dw + wd*w), with xi the current w lr and the
    Hessian-vector product taken by central finite differences (step 0.01/||dw'||), exactly as
    the original DARTS Architect does.  Then w steps as in first order."""

    name = "bilevel-second"
    fd_step = 0.01

    def _grads(self, params: Sequence[Tensor]) -> List[Tensor]:
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def _virtual_step(self, xi: float) -> None:
        group = self.w_optimizer.param_groups[0]
        momentum, wd = group.get("momentum", 0.0), group.get("weight_decay", 0.0)
        for p in self.w_params:
            if p.grad is None:  # as SGD: a parameter without gradient does not move
                continue
            d = p.grad + wd * p
            buf = self.w_optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                d = d + momentum * buf
            p.sub_(xi * d)

    def _alpha_grad_at(self, model, batch: Batch) -> List[Tensor]:
        self.alpha_gradient(model, batch)
        return [g.clone() for g in self._grads(self.alpha_params)]

    def architecture_gradient(self, model, batch_w: Batch, batch_alpha: Batch):
        """Set alpha.grad to the unrolled gradient; returns dL_valid/dp at w'."""
        xi = self.w_optimizer.param_groups[0]["lr"]
        backup = [p.detach().clone() for p in self.w_params]
        self.w_gradient(model, batch_w)
        self.sync(self.w_params)
        self._virtual_step(xi)

        loss_v, _ = self.forward_loss(model, batch_alpha)
        self.backward(loss_v, self.alpha_params + self.w_params)
        weight_grads = model.weight_grads()
        self.sync(self.w_params)
        d_alpha = [g.clone() for g in self._grads(self.alpha_params)]
        d_w = [g.clone() for g in self._grads(self.w_params)]

        # Hessian-vector product (d2 L_train / d alpha d w) . d_w at the original w.
        r = self.fd_step / torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in d_w]))
        with torch.no_grad():
            for p, b, g in zip(self.w_params, backup, d_w):
                p.copy_(b + r * g)
        grad_plus = self._alpha_grad_at(model, batch_w)
        with torch.no_grad():
            for p, b, g in zip(self.w_params, backup, d_w):
                p.copy_(b - r * g)
        grad_minus = self._alpha_grad_at(model, batch_w)
        with torch.no_grad():
            for p, b in zip(self.w_params, backup):
                p.copy_(b)
            for a, da, gp, gm in zip(self.alpha_params, d_alpha, grad_plus, grad_minus):
                a.grad = da - xi * (gp - gm) / (2 * r)
        return weight_grads


STRATEGIES: Dict[str, type] = {
    cls.name: cls for cls in (SingleLevel, FirstOrderBilevel, SecondOrderBilevel, SingleDiffBatches, SingleDiffSubsets)
}


def build_strategy(level: str, w_optimizer, alpha_optimizer, **kwargs) -> SearchStrategy:
    """The strategy for ``--optimizer-level`` ``level`` (a key of :data:`STRATEGIES`)."""
    if level not in STRATEGIES:
        raise ValueError(f"optimizer level must be one of {list(STRATEGIES)}, got {level!r}")
    return STRATEGIES[level](w_optimizer, alpha_optimizer, **kwargs)
