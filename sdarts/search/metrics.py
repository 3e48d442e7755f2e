"""Per-epoch figures, accumulated on the device so that the step never waits for the host.

:class:`EpochMeter` sums loss, correct predictions and dL/dp step by step as tensors and
remembers the first step whose loss was not finite; :meth:`EpochMeter.summary` reads them
back once.  Under DDP the sums are all-reduced before reading, so every rank sees the same.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor

NO_BAD_STEP = 2**62
Reduce = Callable[[Sequence[Tensor], str], None]  # in-place all-reduce of tensors with "sum"/"min"


class EpochMeter:
    """Running sums of one epoch (training or evaluation) on ``device``.

    ``reduce``: in-place all-reduce (``sdarts.run.distributed``) when several processes
    share the epoch; None in a single process.
    """

    def __init__(self, device: torch.device, reduce: Optional[Reduce] = None):
        self.device = torch.device(device)
        self.reduce = reduce
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.count = torch.zeros((), dtype=torch.int64, device=self.device)
        self.first_bad_step = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=self.device)
        self.grad_sums: Dict[str, Tensor] = {}
        self.grad_steps = 0

    def update(self, loss: Tensor, logits: Tensor, targets: Tensor, step: int = 0) -> None:
        n = targets.shape[0]
        self.loss_sum += loss.detach().double() * n
        self.correct += (logits.detach().argmax(dim=1) == targets).sum()
        self.count += n
        bad = ~torch.isfinite(loss.detach())
        self.first_bad_step = torch.where(bad, self.first_bad_step.clamp(max=step), self.first_bad_step)

    def add_weight_grads(self, weight_grads: Dict[str, Optional[Tensor]]) -> None:
        """Add one step's dL/dp (per alpha, edges x ops); missing gradients count as no step."""
        if any(g is None for g in weight_grads.values()):
            return
        for name, g in weight_grads.items():
            g = g.detach().to(self.device, torch.float64)
            self.grad_sums[name] = self.grad_sums[name] + g if name in self.grad_sums else g.clone()
        self.grad_steps += 1

    def bad_step(self) -> Optional[int]:
        """The first step with a non-finite loss (over all ranks), or None.  Synchronises."""
        first = self.first_bad_step.clone()
        if self.reduce is not None:
            self.reduce([first], "min")
        value = int(first.item())
        return None if value == NO_BAD_STEP else value

    def running_figures(self) -> Dict[str, float]:
        """This process's loss and accuracy so far, for the progress bar.  Synchronises."""
        count = max(int(self.count.item()), 1)
        return {"loss": float(self.loss_sum.item()) / count, "acc": float(self.correct.item()) / count}

    def summary(self) -> Dict[str, object]:
        """Mean loss, accuracy and dL/dp of the epoch (over all ranks).  Synchronises once."""
        names = sorted(self.grad_sums)
        grad_steps = torch.tensor(float(self.grad_steps), dtype=torch.float64, device=self.device)
        sums = [self.loss_sum.clone(), self.correct.double(), self.count.double(), grad_steps]
        sums += [self.grad_sums[n].clone() for n in names]
        if self.reduce is not None:
            self.reduce(sums, "sum")
        loss_sum, correct, count, steps = (t.item() for t in sums[:4])
        count = max(count, 1.0)
        return {
            "loss": loss_sum / count,
            "acc": correct / count,
            "count": int(count),
            "dL_dp": {n: (g / max(steps, 1.0)).tolist() for n, g in zip(names, sums[4:])},
        }


def finite_or_none(value: float) -> Optional[float]:
    """JSON has no NaN: non-finite figures are written as null."""
    return value if math.isfinite(value) else None
