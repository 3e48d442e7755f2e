"""How decided a derived cell is: per edge, the winning op's margin over the runner-up.

A search that has barely moved alpha still derives a cell (the argmax of nearly equal p),
which is noise, not a result.  :func:`edge_decisions` says, per edge, by how much the
winner leads; an edge whose lead is under ``UNDECIDED_MARGIN`` is undecided.  It also flags
the sigmoid artefact of the NAS-Bench-201 space: ``none`` outputs zeros, so dL/dp_none = 0
and its p never leaves its initial value; it then "wins" every edge where all the other
candidates drifted below that value, although nothing chose it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence

import torch

from ..spaces.base import default_alpha_init

# p is in [0, 1] for both activations; a lead of 0.05 is far above the ~1e-3 drift of an
# untrained supernet and well below the 0.3-0.9 leads of a converged Single-DARTS search.
UNDECIDED_MARGIN = 0.05


@dataclass(frozen=True)
class EdgeDecision:
    alpha: str  # the alpha tensor (cell type) the edge belongs to
    edge: str
    op: str
    p: float
    runner_up: str
    runner_up_p: float
    decided: bool
    none_by_default: bool  # `none` wins only by keeping its initial p

    @property
    def margin(self) -> float:
        return self.p - self.runner_up_p

    def to_json(self) -> Dict[str, Any]:
        return {**asdict(self), "margin": self.margin}


def edge_decisions(
    probabilities: Dict[str, torch.Tensor],
    alphas: Dict[str, torch.Tensor],
    edges: Dict[str, Sequence[str]],
    op_names: Sequence[str],
    *,
    skip_none: bool,
    activation: str,
    initial_alpha: float,
) -> List[EdgeDecision]:
    """One :class:`EdgeDecision` per edge, in ``edges`` order.  ``skip_none``: the space never
    derives ``none`` (DARTS), so it is not a candidate for winner or runner-up either."""
    names = list(op_names)
    none = names.index("none") if "none" in names else None
    decisions = []
    for alpha_name, p_all in probabilities.items():
        p_all = p_all.detach().double().cpu()
        alpha_all = alphas[alpha_name].detach().double().cpu()
        for edge, p, alpha in zip(edges[alpha_name], p_all, alpha_all):
            ranked = p.clone()
            if skip_none and none is not None:
                ranked[none] = float("-inf")
            order = torch.argsort(ranked, descending=True, stable=True).tolist()
            best, second = order[0], order[1] if len(order) > 1 else order[0]
            untouched_none = (best == none and not skip_none and activation == "sigmoid"
                              and abs(float(alpha[none]) - initial_alpha) < 1e-6)
            margin = float(p[best] - p[second])
            decisions.append(EdgeDecision(alpha_name, edge, names[best], float(p[best]), names[second], float(p[second]),
                                          decided=margin >= UNDECIDED_MARGIN and not untouched_none,
                                          none_by_default=untouched_none))
    return decisions


def verdict(decisions: List[EdgeDecision]) -> str:
    """One line for the end of a search: is the derived cell a result yet?"""
    undecided = [d for d in decisions if not d.decided]
    smallest = min(d.margin for d in decisions)
    if not undecided:
        return f"cell decided: every edge's winner leads by >= {UNDECIDED_MARGIN} in p (smallest lead {smallest:.2g})"
    text = (f"cell NOT decided: {len(undecided)} of {len(decisions)} edges lead by less than {UNDECIDED_MARGIN} in p "
            f"(smallest lead {smallest:.2g}); search longer before trusting this cell")
    by_default = [d for d in decisions if d.none_by_default]
    if by_default:
        text += (f"; on {len(by_default)} edge(s) 'none' wins only because, under sigmoid, its dL/dp is 0 and its p "
                 "stays at the initial value while every other candidate fell below it")
    return text


def cell_decisions(space, model) -> List[EdgeDecision]:
    """:func:`edge_decisions` of a supernet of ``space`` (a :class:`~sdarts.spaces.SearchSpace`)."""
    init = model.alpha_init if model.alpha_init is not None else default_alpha_init(model.activation, len(space.primitives.names))
    alphas = {name: getattr(model, name) for name in space.edges}
    return edge_decisions(model.probabilities(), alphas, space.edges, space.primitives.names,
                          skip_none=space.derive_skips_none, activation=model.activation, initial_alpha=float(init))
