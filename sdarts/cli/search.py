"""``sdarts-search``: a Single-DARTS (or baseline) architecture search, end to end.

    sdarts-search --out runs/digits                      # offline default: NB201 on digits
    sdarts-search --space nb201 --dataset cifar10 --data-dir DIR --out RUN_DIR \\
                  --nb201-table ../shared/data/nb201/nb201_200ep_accuracies.csv
    sdarts-search --resume RUN_DIR                       # continue a killed run
    torchrun --nproc_per_node 2 -m sdarts.cli.search ... # several processes (DDP)

The flags are :class:`sdarts.search.SearchConfig`'s fields; this module parses them into one
and calls :func:`sdarts.search.run_search`.  Bad input (missing data, unknown dataset, a
broken table or checkpoint, a NaN loss) ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence, Set

from ..data.datasets import DATASET_NAMES
from ..ops.backends import BACKENDS, EDGE_KERNELS
from ..run.checkpoint import CheckpointError
from ..run.run_dir import RunDirError
from ..search.assembly import SearchResult, SearchStopped, load_run_config, run_search
from ..search.config import (ALPHA_BETAS, ALPHA_LR, ALPHA_OPTIMIZERS, ALPHA_SGD_MOMENTUM, BENCHMARK_APIS, DARTS_IMAGENET_LR, IMAGENET_SCALE, NB201_LR, W_GRAD_CLIP, W_MOMENTUM,
                             W_WEIGHT_DECAY, ACTIVATIONS, ConfigError, SearchConfig, flag)
from ..search.decision import verdict
from ..search.strategies import STRATEGIES
from ..spaces import SPACES
from ..spaces.base import DERIVE_RULES
from .args import finite_float, given_on_command_line

PROG = "sdarts-search"
DEFAULTS = SearchConfig()  # the flags' defaults are the config's


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default when it has one worth showing (not None, not an off switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Differentiable architecture search with single-level optimisation (Single-DARTS): "
        "w (SGD) and alpha (Adam) are updated together from the same mini-batch.  Searches on one half "
        "of the training set; the other half measures the supernet every epoch.",
        formatter_class=HelpFormatter,
        epilog="Run directory: config.json, metrics.jsonl (one line per epoch), checkpoint.pt (every epoch), "
        "genotype.json (at the end).  Plot it with sdarts-plot RUN_DIR.",
    )
    where = p.add_argument_group("what and where")
    where.add_argument("--space", choices=sorted(SPACES), default=DEFAULTS.space, help="search space")
    where.add_argument("--dataset", default=DEFAULTS.dataset,
                       help=f"one of {', '.join(DATASET_NAMES)}; digits (scikit-learn's, upscaled) runs offline, "
                       "synthetic is a few random images for quick checks")
    where.add_argument("--data-dir", default=None, help="dataset directory (cifar10: the torchvision folder or the JPEG npz copy)")
    where.add_argument("--download", action="store_true", help="let torchvision download the dataset if missing")
    where.add_argument("--out", default=None, help="run directory to create (required unless --resume)")
    where.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue the killed run in RUN_DIR with its own settings (only "
                       f"{', '.join(flag(n) for n in SearchConfig.RESUMABLE)} may be given anew)")
    where.add_argument("--nb201-table", metavar="CSV", default=None,
                       help="NAS-Bench-201 accuracy table: each epoch's derived cell is looked up in it")
    where.add_argument("--split-file", default=None,
                       help="the benchmark's train/valid split (e.g. nb201/cifar-split.txt) instead of a seeded half split")
    where.add_argument("--data-fraction", type=finite_float, default=DEFAULTS.data_fraction, help="search on this fraction of the training set")

    method = p.add_argument_group("method (defaults: the Single-DARTS paper)")
    method.add_argument("--optimizer-level", choices=list(STRATEGIES), default=DEFAULTS.optimizer_level,
                        help="single: Single-DARTS; bilevel / bilevel-second: first / second-order DARTS (alpha on the "
                        "other half, then w); single-diff-batches / single-diff-subsets: the paper's Table 4 ablations")
    method.add_argument("--activation", choices=ACTIVATIONS, default=DEFAULTS.activation, help="p = activation(alpha)")
    method.add_argument("--alpha-init", type=finite_float, default=None,
                        help="initial alpha (by default -ln(K-1) for sigmoid, so every p starts at 1/K; 0 for softmax)")
    method.add_argument("--alpha-optimizer", choices=ALPHA_OPTIMIZERS, default=DEFAULTS.alpha_optimizer,
                        help=f"alpha's optimizer: adam (lr {ALPHA_LR}, betas {ALPHA_BETAS}) or sgd (the paper's Tables 4 "
                        f"and 5: constant lr, momentum {ALPHA_SGD_MOMENTUM}, no weight decay)")
    method.add_argument("--alpha-lr", type=finite_float, default=None,
                        help=f"alpha's learning rate (default {ALPHA_LR} for adam; w's --lr for sgd)")
    method.add_argument("--derive", choices=DERIVE_RULES, default=DEFAULTS.derive,
                        help="how the cell is derived from p: argmax (the most probable op per edge, none included, as "
                        "NAS-Bench-201 does) or exclude-none (never none, DARTS' rule); both cells and their lookups "
                        "are logged every epoch.  The DARTS space always excludes none")
    method.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="search epochs")
    method.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                        help="the global batch (each of N torchrun processes takes batch/N of it)")
    method.add_argument("--eval-batch-size", type=int, default=DEFAULTS.eval_batch_size,
                        help="batch of the per-epoch supernet evaluation on the other half (no autograd, running "
                        "BatchNorm statistics: figures independent of it up to rounding; large batches cut its "
                        "kernel launches)")
    method.add_argument("--lr", type=finite_float, default=None,
                        help=f"w's SGD learning rate, cosine to 0 (default {NB201_LR}; {DARTS_IMAGENET_LR} for the DARTS space "
                        f"on {'/'.join(IMAGENET_SCALE)}); momentum {W_MOMENTUM}, weight decay {W_WEIGHT_DECAY}, gradient "
                        f"norm clipped at {W_GRAD_CLIP}.  alpha: Adam lr {ALPHA_LR}, betas {ALPHA_BETAS}, no weight decay")
    method.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds the split, the initial weights and every batch")
    method.add_argument("--init-channels", type=int, default=None, help="supernet channels C (default 16 in both spaces)")
    method.add_argument("--layers", type=int, default=None,
                        help="NB201: search cells per stage (default 5); DARTS: cells (default 8)")

    engine = p.add_argument_group("engine and speed")
    engine.add_argument("--device", default=DEFAULTS.device, help="auto (cuda if present), cpu, cuda, cuda:N")
    engine.add_argument("--backend", choices=BACKENDS, default=DEFAULTS.backend, help="fused mixed-sum backend")
    engine.add_argument("--edge-kernels", choices=EDGE_KERNELS, default=DEFAULTS.edge_kernels,
                        help="the one-node training edge's batch statistics and backward tail: torch (PyTorch ops), "
                        "triton (four Triton kernels per edge; CUDA) or auto (torch unless SDARTS_TRITON_EDGE=1 was "
                        "set at start; python -m sdarts shows which)")
    engine.add_argument("--no-fused", action="store_true", help="plain PyTorch mixed op sum(w * op(x)), for comparison")
    engine.add_argument("--recompute", nargs="*", metavar="OP", default=None,
                        help="recompute candidates in backward instead of keeping their activations (less memory, "
                             "more compute): bare, every candidate, so that each edge keeps only x and relu(x) (the "
                             "whole edge is recomputed); or only the OPs named (their internals and outputs).  "
                             "Default on the CPU: sep_conv_3x3 sep_conv_5x5 (DARTS space), nor_conv_1x1 (NB201), "
                             "each most of the saving at a few percent of the time; nothing on CUDA")
    engine.add_argument("--no-recompute", dest="recompute", action="store_const", const=False,
                        help="recompute nothing (overrides the CPU default)")
    engine.add_argument("--amp", action="store_true", help="bf16 autocast")
    engine.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last memory format (default: on for the CPU, off on CUDA until measured "
                        "there; CPU step times: bench/results/README.md)")
    engine.add_argument("--cuda-graph", action="store_true",
                        help="capture the whole training step (forward, backward, clipping, both optimizer steps) as "
                        "one CUDA graph and replay it per batch (recaptured when the lr changes, once per epoch): "
                        "removes the kernel-launch overhead that bounds small batches.  CUDA only; not with torchrun "
                        "or --optimizer-level bilevel-second; needs fixed batch shapes (training batches are); "
                        "alpha's Adam is then built with capturable=True")
    engine.add_argument("--cuda-graph-strict", action="store_true",
                        help="--cuda-graph, but a failed capture stops the search at once with the reason (exit 2) "
                        "instead of warning and going on with eager steps (several times slower); for timed runs")
    engine.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap train and evaluation steps (quick runs)")
    report = p.add_argument_group("diagnostics and results")
    report.add_argument("--grad-correlation-every", type=int, default=None, metavar="N",
                        help="every N steps, the correlation of the gradients that move alpha and w at chosen edges "
                        "(the paper's Eq. 8, Figure 2; sdarts.search.grad_correlation); off by default (costs two "
                        "extra forward+backward passes per probe)")
    report.add_argument("--tensorboard", action="store_true",
                        help="also log every epoch's figures to RUN_DIR/tensorboard (needs the tensorboard package)")
    report.add_argument("--benchmark-api", choices=BENCHMARK_APIS, default=None,
                        help="look the derived cells up with the official NAS-Bench-201 API (nats_bench or nas_201_api, "
                        "installed by you) in --benchmark-file, 200-epoch results averaged over seeds, instead of "
                        "--nb201-table")
    report.add_argument("--benchmark-file", default=None, help="the benchmark's own file for --benchmark-api")
    engine.add_argument("--log-every", type=int, default=DEFAULTS.log_every, help="steps between progress-bar updates (host syncs)")
    return p


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(**{name: getattr(args, name) for name in SearchConfig.field_names()})


def _flag_value(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def merge_resume(args: argparse.Namespace, given: Set[str]) -> SearchConfig:
    """The resumed run's saved settings, with the few allowed overrides from the command line
    (``given``: the options written on it).  Any other option given must agree with the run."""
    if args.out is not None and os.path.realpath(args.out) != os.path.realpath(args.resume):
        raise ConfigError(f"--out {args.out}: a resumed run stays in its own directory ({args.resume}); drop --out")
    config = load_run_config(args.resume)
    for name in sorted(given - {"resume", "out"}):
        value, saved = getattr(args, name), getattr(config, name)
        if name in SearchConfig.RESUMABLE:
            config = config.replace(**{name: value})
        elif value != saved:
            raise ConfigError(f"{flag(name)} {_flag_value(value)} differs from the resumed run's {_flag_value(saved)}; "
                              "a resumed run keeps its own settings "
                              f"(only {', '.join(flag(n) for n in SearchConfig.RESUMABLE)} may change)")
    return config


def summary_text(result: SearchResult) -> str:
    last = result.history[-1]
    lines = [f"\nsearch finished: {last['epoch']} epochs, {last['elapsed_s'] / 60:.1f} min, run dir {result.run_dir}",
             f"derived cell: {result.genotype}",
             f"{'alpha':<14}{'edge':<7}{'strongest op':<15}{'p':<8}{'lead':<8}{'runner-up':<15}"]
    for d in result.decisions:
        note = "" if d.decided else ("  undecided (none keeps its initial p)" if d.none_by_default else "  undecided")
        lead = f"{d.margin:.4f}" if d.margin >= 1e-3 else f"{d.margin:.0e}"  # 0.0000 would hide how small
        lines.append(f"{d.alpha:<14}{d.edge:<7}{d.op:<15}{d.p:<8.4f}{lead:<8}{d.runner_up:<15}{note}")
    lines.append(verdict(result.decisions))
    warned = [r for r in result.history if r.get("warning")]
    if warned:
        lines.append(f"warning: epoch {warned[-1]['epoch']}: {warned[-1]['warning']}")
    if result.benchmark:
        lines.append("NAS-Bench-201 (200 epochs): " + "  ".join(f"{k} {v:.2f}" for k, v in result.benchmark.items() if k != "index"))
    for rule, cell in last.get("cells", {}).items():
        if cell != result.genotype:  # the other derivation rule picks another cell: say which and how good
            bench = (last.get("benchmarks") or {}).get(rule)
            score = ("  " + "  ".join(f"{k} {v:.2f}" for k, v in bench.items() if k != "index")) if bench else ""
            lines.append(f"with --derive {rule}: {cell}{score}")
    lines.append(f"supernet: train acc {last['train_acc']:.2f}%, valid acc {last['valid_acc']:.2f}% (other half)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    try:
        if args.resume is not None:
            result = run_search(merge_resume(args, given_on_command_line(parser, argv)), resume=True, command=[PROG, *argv])
        else:
            result = run_search(config_from_args(args), command=[PROG, *argv])
    except (ConfigError, SearchStopped, CheckpointError, RunDirError, FileNotFoundError, NotADirectoryError) as err:
        if is_main:
            print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if is_main:
            print(f"\n{PROG}: interrupted; continue with: {PROG} --resume {args.resume or args.out}", file=sys.stderr)
        return 130
    if result is not None:
        print(summary_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
