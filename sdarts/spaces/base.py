"""What every supernet shares: architecture parameters, their activation, and diagnostics.

A search space subclasses :class:`Supernet`, registers its alpha tensors with
:meth:`add_alpha` (real ``nn.Parameter``s, so ``.to()``, checkpoints and DDP see them), and
calls :meth:`arch_weights` once per forward to get p = activation(alpha).  After a
backward, :meth:`weight_grads` returns dL/dp for every edge and op (summed over the cells
that share the alpha), the per-op gradient that Single-DARTS analyses.
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional

import torch
import torch.nn as nn

ACTIVATIONS = ("sigmoid", "softmax")
# How a cell is derived from p: "argmax" takes the most probable op per edge, ``none``
# included (NAS-Bench-201's rule); "exclude-none" never takes ``none`` (DARTS' rule).  With
# sigmoid, dL/dp of ``none`` is 0, so its p stays at its initial 1/K and "argmax" picks it on
# every edge where the other candidates drift below 1/K.  The DARTS space always excludes it.
DERIVE_RULES = ("argmax", "exclude-none")


def default_alpha_init(activation: str, num_ops: int) -> float:
    """sigmoid: -ln(K-1), so every p starts at 1/K (the paper's -ln 7 for K=8); softmax: 0."""
    if activation == "sigmoid":
        return -math.log(num_ops - 1) if num_ops > 1 else 0.0
    return 0.0


class Supernet(nn.Module):
    def __init__(self, activation: str = "sigmoid", alpha_init: Optional[float] = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.alpha_init = alpha_init
        self._alpha_names: List[str] = []
        self._last_p: Dict[str, torch.Tensor] = {}

    def add_alpha(self, name: str, num_edges: int, num_ops: int) -> nn.Parameter:
        init = self.alpha_init if self.alpha_init is not None else default_alpha_init(self.activation, num_ops)
        alpha = nn.Parameter(torch.full((num_edges, num_ops), float(init)))
        self.register_parameter(name, alpha)
        self._alpha_names.append(name)
        return alpha

    @property
    def alpha_names(self) -> List[str]:
        return list(self._alpha_names)

    def activate(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(alpha) if self.activation == "sigmoid" else torch.softmax(alpha, dim=-1)

    def arch_weights(self) -> Dict[str, torch.Tensor]:
        """p for every alpha; call once per forward (keeps p for :meth:`weight_grads`)."""
        ps = {}
        for name in self._alpha_names:
            p = self.activate(getattr(self, name))
            if p.requires_grad and torch.is_grad_enabled():
                p.retain_grad()
            ps[name] = p
        self._last_p = ps
        return ps

    def probabilities(self) -> Dict[str, torch.Tensor]:
        """Current p, detached (for logging and genotype derivation)."""
        with torch.no_grad():
            return {name: self.activate(getattr(self, name)).detach().cpu() for name in self._alpha_names}

    def weight_grads(self) -> Dict[str, Optional[torch.Tensor]]:
        """dL/dp per edge and op from the last backward (None before any), on the model's
        device: callers accumulate them there, so logging them forces no host sync."""
        return {name: (p.grad.detach() if p.grad is not None else None) for name, p in self._last_p.items()}

    def __getstate__(self):
        # The last p are non-leaf tensors of the last graph: not part of the model's state
        # (and they would make copy.deepcopy fail).
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_last_p"] = {}
        return state

    def arch_parameters(self) -> List[nn.Parameter]:
        return [getattr(self, name) for name in self._alpha_names]

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return (p for p in self.parameters() if id(p) not in arch)
