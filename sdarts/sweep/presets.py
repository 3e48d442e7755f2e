"""The Single-DARTS paper's experiments as sweep specs (``sdarts-sweep table1`` and so on).

Each preset says which of the paper's settings it encodes (``paper``) and where the paper is
silent and we had to choose (``interpretation``).  Settings every preset shares with the
paper's Section 4: NAS-Bench-201 search on CIFAR-10 with the benchmark's train/valid split,
batch 64, 50 epochs, w by SGD (lr 0.005, cosine to 0, momentum 0.9, weight decay 3e-4,
gradient norm clipped at 5), alpha by Adam (lr 3e-4, betas (0.5, 0.999)), 16 channels and 5
cells per stage.  Data and table paths come from the sweep's command line (``--data-dir``,
``--nb201-table``) or, when not given, from the shared data folder.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

SEEDS_5 = [0, 1, 2, 3, 4]

_NB201_CIFAR10 = {"space": "nb201", "dataset": "cifar10", "epochs": 50, "batch_size": 64, "lr": 0.005}

DARTS_METHOD = {"name": "darts", "optimizer_level": "bilevel", "activation": "softmax"}
SINGLE_METHOD = {"name": "single-darts", "optimizer_level": "single", "activation": "sigmoid"}

PRESETS: Dict[str, Dict[str, Any]] = {
    "table1": {
        "name": "table1",
        "description": "NAS-Bench-201 on CIFAR-10: bi-level DARTS (softmax) against Single-DARTS (sigmoid), 5 seeds each",
        "paper": "Table 1: Single-DARTS 94.36 CIFAR-10 test, DARTS 54.30 (collapse to parameter-free cells); "
                 "SGD lr 0.005 cosine on w, Adam 3e-4 (0.5, 0.999) on alpha, batch 64, 50 epochs",
        "interpretation": "DARTS is first-order bi-level (alpha on a batch of the other half, then w); the NB201 paper "
                          "reports 54.30 for both orders. Cells derived by argmax with none included (NB201's rule); the "
                          "exclude-none cells are reported beside them. alpha's Adam has no weight decay for both methods "
                          "(the paper names none; the DARTS code uses 1e-3). Accuracies: the benchmark's 200-epoch "
                          "figures averaged over its seeds.",
        "base": dict(_NB201_CIFAR10, alpha_optimizer="adam", alpha_lr=3e-4),
        "axes": {"method": [DARTS_METHOD, SINGLE_METHOD], "seed": SEEDS_5},
        "table": {"rows": "method"},
    },
    "table4": {
        "name": "table4",
        "description": "The optimization-strategy ablation: which data moves alpha (softmax; SGD lr 0.005 on w and alpha)",
        "paper": "Table 4: bi-level (different subsets, alternating) / single-level with different subsets / same subset, "
                 "different batches / same batch; softmax, SGD with lr 0.005 for both w and alpha",
        "interpretation": "alpha's SGD has w's momentum 0.9, no weight decay and a constant lr (the paper names only "
                          "optimizer and lr); 3 seeds (the paper does not say how many).",
        "base": dict(_NB201_CIFAR10, activation="softmax", alpha_optimizer="sgd", alpha_lr=0.005),
        "axes": {
            "strategy": [
                {"name": "bilevel-diff-subsets", "optimizer_level": "bilevel"},
                {"name": "single-diff-subsets", "optimizer_level": "single-diff-subsets"},
                {"name": "single-diff-batches", "optimizer_level": "single-diff-batches"},
                {"name": "single-same-batch", "optimizer_level": "single"},
            ],
            "seed": [0, 1, 2],
        },
        "table": {"rows": "strategy"},
    },
    "table5": {
        "name": "table5",
        "description": "Learning rates x activations x alpha optimizers, for DARTS and Single-DARTS",
        "paper": "Table 5: lr 0.001 / 0.005 / 0.025; softmax / sigmoid / sigmoid with alpha initialised at 0; alpha by "
                 "SGD / Adam; DARTS (bi-level) and Single-DARTS (single-level)",
        "interpretation": "the lr is w's; with SGD on alpha it is alpha's too, with Adam alpha keeps 3e-4. Sigmoid's "
                          "default init is -ln(K-1) (every p at 1/K), 'sigmoid-init0' starts at alpha = 0 (p = 0.5). "
                          "One seed per cell of the table (the paper does not say); widen the seed axis in a spec file.",
        "base": dict(_NB201_CIFAR10),
        "axes": {
            "method": [{"name": "darts", "optimizer_level": "bilevel"}, {"name": "single-darts", "optimizer_level": "single"}],
            "activation": [{"name": "softmax", "activation": "softmax"}, {"name": "sigmoid", "activation": "sigmoid"},
                           {"name": "sigmoid-init0", "activation": "sigmoid", "alpha_init": 0.0}],
            "alpha_opt": [{"name": "alpha-sgd", "alpha_optimizer": "sgd"}, {"name": "alpha-adam", "alpha_optimizer": "adam"}],
            "lr": [0.001, 0.005, 0.025],
            "seed": [0],
        },
        "table": {"rows": ["method", "activation", "alpha_opt", "lr"]},
    },
    "darts-cifar": {
        "name": "darts-cifar",
        "description": "Single-DARTS in the DARTS space on CIFAR-10: the genotypes and their parameter counts",
        "paper": "Section 4.2: the DARTS space (8 candidates, 8 cells, 16 channels), CIFAR-10, batch 64, 50 epochs",
        "interpretation": "w's lr 0.025 as DARTS (cosine to 0), alpha by Adam 3e-4 (0.5, 0.999) as in Table 1; a cell is "
                          "DARTS' own derivation (top-2 inputs per node, never none); parameter counts of the 20-cell, "
                          "36-channel CIFAR-10 network, auxiliary head excluded. 3 seeds.",
        "base": {"space": "darts", "dataset": "cifar10", "epochs": 50, "batch_size": 64, "lr": 0.025,
                 "optimizer_level": "single", "activation": "sigmoid"},
        "axes": {"seed": [0, 1, 2]},
        "table": {"rows": "seed", "genotypes": True},
    },
}


def preset_names() -> List[str]:
    return sorted(PRESETS)


def preset(name: str) -> Dict[str, Any]:
    """A copy of preset ``name``'s spec (a dict for :meth:`SweepSpec.from_dict`)."""
    if name not in PRESETS:
        raise KeyError(name)
    return copy.deepcopy(PRESETS[name])
