"""``sdarts-search``: a Single-DARTS (or baseline) architecture search, end to end.

    sdarts-search --out runs/digits                      # offline default: NB201 on digits
    sdarts-search --space nb201 --dataset cifar10 --data-dir DIR --out RUN_DIR \\
                  --nb201-table ../shared/data/nb201/nb201_200ep_accuracies.csv
    sdarts-search --resume RUN_DIR                       # continue a killed run
    torchrun --nproc_per_node 2 -m sdarts.cli.search ... # several processes (DDP)

Bad input (missing data, unknown dataset, a broken table or checkpoint, a NaN loss) ends
with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

import sdarts
from ..data.datasets import DATASET_NAMES
from ..ops import backends
from ..primitives import DARTS, NB201
from ..run import distributed
from ..run.checkpoint import CheckpointError, first_nonfinite
from ..search.decision import edge_decisions, verdict
from ..search.graphed_step import CudaGraphCaptureError
from ..search.loop import NonFiniteLoss, SearchData, Searcher
from ..run.run_dir import RunDir, RunDirError
from ..spaces.base import default_alpha_init
from .args import finite_float, given_on_command_line
from ..search.strategies import STRATEGIES, build_strategy
from ..spaces import SPACES, build_supernet, get_space

PROG = "sdarts-search"
IMAGENET_SCALE = ("imagefolder", "imagenet")
NB201_LR = 0.005
DARTS_IMAGENET_LR = 0.025
W_MOMENTUM, W_WEIGHT_DECAY, W_GRAD_CLIP = 0.9, 3e-4, 5.0
ALPHA_LR, ALPHA_BETAS, ALPHA_WEIGHT_DECAY = 3e-4, (0.5, 0.999), 0.0
# Settings a resumed run may take from the new command line; every other one is the run's own.
RESUMABLE_OVERRIDES = ("data_dir", "device", "nb201_table", "log_every")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default when it has one worth showing (not None, not an off switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


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
    where.add_argument("--space", choices=sorted(SPACES), default="nb201", help="search space")
    where.add_argument("--dataset", default="digits",
                       help=f"one of {', '.join(DATASET_NAMES)}; digits (scikit-learn's, upscaled) runs offline, "
                       "synthetic is a few random images for quick checks")
    where.add_argument("--data-dir", default=None, help="dataset directory (cifar10: the torchvision folder or the JPEG npz copy)")
    where.add_argument("--download", action="store_true", help="let torchvision download the dataset if missing")
    where.add_argument("--out", default=None, help="run directory to create (required unless --resume)")
    where.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue the killed run in RUN_DIR with its own settings (only --data-dir, --device, "
                       "--nb201-table and --log-every may be given anew)")
    where.add_argument("--nb201-table", metavar="CSV", default=None,
                       help="NAS-Bench-201 accuracy table: each epoch's derived cell is looked up in it")
    where.add_argument("--split-file", default=None,
                       help="the benchmark's train/valid split (e.g. nb201/cifar-split.txt) instead of a seeded half split")
    where.add_argument("--data-fraction", type=finite_float, default=1.0, help="search on this fraction of the training set")

    method = p.add_argument_group("method (defaults: the Single-DARTS paper)")
    method.add_argument("--optimizer-level", choices=list(STRATEGIES), default="single",
                        help="single: Single-DARTS; bilevel / bilevel-second: first / second-order DARTS (alpha on the "
                        "other half, then w); single-diff-batches / single-diff-subsets: the paper's Table 4 ablations")
    method.add_argument("--activation", choices=("sigmoid", "softmax"), default="sigmoid", help="p = activation(alpha)")
    method.add_argument("--alpha-init", type=finite_float, default=None,
                        help="initial alpha (by default -ln(K-1) for sigmoid, so every p starts at 1/K; 0 for softmax)")
    method.add_argument("--epochs", type=int, default=50, help="search epochs")
    method.add_argument("--batch-size", type=int, default=64,
                        help="the global batch (each of N torchrun processes takes batch/N of it)")
    method.add_argument("--eval-batch-size", type=int, default=512,
                        help="batch of the per-epoch supernet evaluation on the other half (no autograd, running "
                        "BatchNorm statistics: figures independent of it up to rounding; large batches cut its "
                        "kernel launches)")
    method.add_argument("--lr", type=finite_float, default=None,
                        help=f"w's SGD learning rate, cosine to 0 (default {NB201_LR}; {DARTS_IMAGENET_LR} for the DARTS space "
                        f"on {'/'.join(IMAGENET_SCALE)}); momentum {W_MOMENTUM}, weight decay {W_WEIGHT_DECAY}, gradient "
                        f"norm clipped at {W_GRAD_CLIP}.  alpha: Adam lr {ALPHA_LR}, betas {ALPHA_BETAS}, no weight decay")
    method.add_argument("--seed", type=int, default=0, help="seeds the split, the initial weights and every batch")
    method.add_argument("--init-channels", type=int, default=None, help="supernet channels C (default 16 in both spaces)")
    method.add_argument("--layers", type=int, default=None,
                        help="NB201: search cells per stage (default 5); DARTS: cells (default 8)")

    engine = p.add_argument_group("engine and speed")
    engine.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    engine.add_argument("--backend", choices=backends.BACKENDS, default="auto", help="fused mixed-sum backend")
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
    engine.add_argument("--log-every", type=int, default=50, help="steps between progress-bar updates (host syncs)")
    return p


# -- settings ----------------------------------------------------------------------------


# Recomputed by default where it was measured to pay (bench/results): on the CPU, the DARTS
# SepConvs (most of a DARTS edge's internals; peak RSS 0.59x -> 0.40x plain's at about the
# same time) and NB201's 1x1 convolutions (peak 0.47x -> 0.41x for +6% time).
DEFAULT_RECOMPUTE = {("darts", "cpu"): ["sep_conv_3x3", "sep_conv_5x5"], ("nb201", "cpu"): ["nor_conv_1x1"]}


def default_recompute(space: str, device: torch.device) -> Union[bool, List[str]]:
    return list(DEFAULT_RECOMPUTE.get((space, device.type), [])) or False


def recompute_setting(value) -> Union[bool, Tuple[str, ...]]:
    """--recompute as MixedOp takes it: absent or --no-recompute -> False; bare -> True (every
    candidate); names -> those.  (Runs saved before names were accepted stored a bool.)"""
    if value is None or value is False:
        return False
    if value is True or len(value) == 0:
        return True
    return tuple(value)


def _check_args(args: argparse.Namespace) -> None:
    if args.resume is None and args.out is None:
        raise UsageError("--out RUN_DIR is required (or --resume RUN_DIR)")
    if args.dataset not in DATASET_NAMES:
        raise UsageError(f"unknown dataset {args.dataset!r}; choose from {', '.join(DATASET_NAMES)}")
    for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("max_steps_per_epoch", "init_channels", "layers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    recompute = recompute_setting(args.recompute)
    if not isinstance(recompute, bool):
        names = (NB201 if args.space == "nb201" else DARTS).names
        unknown = [name for name in recompute if name not in names]
        if unknown:
            raise UsageError(f"--recompute {' '.join(unknown)}: not a candidate of the {args.space} space ({', '.join(names)})")
    if not 0.0 < args.data_fraction <= 1.0:
        raise UsageError(f"--data-fraction must be in (0, 1], got {args.data_fraction}")
    if args.lr is not None and args.lr <= 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.nb201_table is not None and args.space != "nb201":
        raise UsageError("--nb201-table needs --space nb201")
    if args.cuda_graph_strict:
        args.cuda_graph = True
    if args.cuda_graph and args.optimizer_level == "bilevel-second":
        raise UsageError("--cuda-graph does not support --optimizer-level bilevel-second")


def _check_cuda_graph(args: argparse.Namespace, device: torch.device, ctx: distributed.DistContext) -> None:
    if not args.cuda_graph:
        return
    if device.type != "cuda":
        raise UsageError(f"--cuda-graph needs a CUDA device, got --device {args.device} ({device})")
    if ctx.enabled:
        raise UsageError("--cuda-graph runs in one process: the DDP gradient all-reduce is not captured (drop torchrun)")


def default_lr(space: str, dataset: str) -> float:
    return DARTS_IMAGENET_LR if space == "darts" and dataset in IMAGENET_SCALE else NB201_LR


def _merge_resume(args: argparse.Namespace, parser: argparse.ArgumentParser, given: set) -> argparse.Namespace:
    """The resumed run's saved settings, with the few allowed overrides from the command line
    (``given``: the options written on it).  Any other option given must agree with the run."""
    run = RunDir(args.resume)
    if args.out is not None and os.path.realpath(args.out) != os.path.realpath(args.resume):
        raise UsageError(f"--out {args.out}: a resumed run stays in its own directory ({args.resume}); drop --out")
    if not run.checkpoint.is_file():
        raise UsageError(f"--resume {args.resume}: no checkpoint.pt there (nothing to resume)")
    try:
        config = run.read_config()
        saved = config["args"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"--resume {args.resume}: cannot read its config.json ({type(err).__name__}: {err})") from None
    if not isinstance(saved, dict) or "space" not in saved:
        raise UsageError(f"--resume {args.resume}: not an sdarts-search run (its config.json has no search settings; "
                         "a sdarts-train run resumes with sdarts-train --resume)")
    merged = argparse.Namespace(**{**vars(parser.parse_args([])), **saved})
    for name in sorted(given - {"resume", "out"}):
        value = getattr(args, name)
        if name in RESUMABLE_OVERRIDES:
            setattr(merged, name, value)
        elif value != saved.get(name):
            raise UsageError(f"--{name.replace('_', '-')} {_flag_value(value)} differs from the resumed run's "
                             f"{_flag_value(saved.get(name))}; a resumed run keeps its own settings "
                             f"(only {', '.join('--' + n.replace('_', '-') for n in RESUMABLE_OVERRIDES)} may change)")
    if merged.recompute is None:  # saved before the default existed: it recomputed nothing
        merged.recompute = False
    merged.resume = args.resume
    merged.out = args.resume
    return merged


def _flag_value(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _resolve_device(name: str, ctx: distributed.DistContext) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device (cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device here")
        if device.index is None:
            device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- pieces of the run -------------------------------------------------------------------


def build_data(args, ctx: distributed.DistContext, device: torch.device, alpha_source: str):
    """The dataset, and loaders of its search half (w), other half (evaluation) and alpha's source."""
    from ..data.datasets import load_dataset
    from ..data.device_loader import make_loader
    from ..data.splits import search_split

    dataset = load_dataset(args.dataset, data_dir=args.data_dir, download=args.download)
    idx_train, idx_valid = search_split(dataset.num_train, args.seed, split_file=args.split_file, fraction=args.data_fraction)

    def loader(indices, augment: bool, seed: int, drop_last: bool = True, batch_size: int = args.batch_size):
        return make_loader(dataset, "train", indices, batch_size=batch_size, augment=augment, seed=seed, device=device,
                           drop_last=drop_last, channels_last=args.channels_last, rank=ctx.rank,
                           world_size=ctx.world_size)

    train = loader(idx_train, True, args.seed)
    # Shuffled once (its epoch never changes): a capped evaluation sees a fixed random sample.
    valid = loader(idx_valid, False, args.seed, drop_last=False, batch_size=args.eval_batch_size)
    alpha = None
    if alpha_source == "train":  # other batches of the same half: the same images in another order
        alpha = loader(idx_train, True, args.seed + 1)
    elif alpha_source == "valid":
        alpha = loader(idx_valid, True, args.seed + 2)
    return dataset, SearchData(train=train, valid=valid, alpha=alpha)


def build_model(args, num_classes: int, device: torch.device) -> nn.Module:
    kwargs: Dict[str, Any] = dict(activation=args.activation, alpha_init=args.alpha_init, backend=args.backend,
                                  fused=not args.no_fused, recompute=recompute_setting(args.recompute))
    if args.init_channels is not None:
        kwargs["C"] = args.init_channels
    if args.layers is not None:
        kwargs["N" if args.space == "nb201" else "layers"] = args.layers
    if args.space == "darts":
        kwargs["imagenet_stem"] = args.dataset in IMAGENET_SCALE
    model = build_supernet(args.space, num_classes, **kwargs).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_lookup(path: Optional[str]):
    """Each epoch's cell -> its benchmark accuracies (None, with a warning, for a missing cell)."""
    if path is None:
        return None
    from ..spaces.nb201.table import ACCURACY_COLUMNS, NB201Table

    table = NB201Table.from_csv(path)
    warned = set()

    def lookup(arch: str) -> Optional[Dict[str, float]]:
        try:
            row = table.lookup(arch)
        except LookupError as err:
            if arch not in warned:
                warned.add(arch)
                print(f"{PROG}: warning: {err}", file=sys.stderr)
            return None
        return {"index": row["index"], **{c: row[c] for c in ACCURACY_COLUMNS}}

    return lookup


def table_hint() -> Optional[str]:
    from ..spaces.nb201.table import default_table_path

    path = default_table_path()
    return f"{PROG}: hint: pass --nb201-table {path} to look each derived cell up in NAS-Bench-201" if os.path.isfile(path) else None


def describe_run(args, command: List[str], device: torch.device, ctx: distributed.DistContext, backend: str, space) -> Dict[str, Any]:
    return {
        "args": vars(args),
        "command": command,
        "versions": {"sdarts": sdarts.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "backend": backend if not args.no_fused else "plain PyTorch (--no-fused)",
        "world_size": ctx.world_size,
        "batch_per_process": args.batch_size // ctx.world_size,
        "space": {"name": space.name, "ops": list(space.primitives.names), "edges": {k: list(v) for k, v in space.edges.items()}},
        "hyperparameters": {
            "w": {"optimizer": "SGD", "lr": args.lr, "schedule": "cosine to 0, stepped per epoch", "momentum": W_MOMENTUM,
                  "weight_decay": W_WEIGHT_DECAY, "grad_clip": W_GRAD_CLIP},
            "alpha": {"optimizer": "Adam", "lr": ALPHA_LR, "betas": list(ALPHA_BETAS), "weight_decay": ALPHA_WEIGHT_DECAY},
        },
    }


def cell_decisions(space, model):
    """Per edge: the strongest op, its lead over the runner-up, whether that decides it."""
    init = model.alpha_init if model.alpha_init is not None else default_alpha_init(model.activation, len(space.primitives.names))
    alphas = {name: getattr(model, name) for name in space.edges}
    return edge_decisions(model.probabilities(), alphas, space.edges, space.primitives.names,
                          skip_none=space.derive_skips_none, activation=model.activation, initial_alpha=float(init))


def summary_text(space, history: List[Dict[str, Any]], decisions, run_dir: str) -> str:
    last = history[-1]
    lines = [f"\nsearch finished: {last['epoch']} epochs, {last['elapsed_s'] / 60:.1f} min, run dir {run_dir}",
             f"derived cell: {last['genotype']}",
             f"{'alpha':<14}{'edge':<7}{'strongest op':<15}{'p':<8}{'lead':<8}{'runner-up':<15}"]
    for d in decisions:
        note = "" if d.decided else ("  undecided (none keeps its initial p)" if d.none_by_default else "  undecided")
        lead = f"{d.margin:.4f}" if d.margin >= 1e-3 else f"{d.margin:.0e}"  # 0.0000 would hide how small
        lines.append(f"{d.alpha:<14}{d.edge:<7}{d.op:<15}{d.p:<8.4f}{lead:<8}{d.runner_up:<15}{note}")
    lines.append(verdict(decisions))
    warned = [r for r in history if r.get("warning")]
    if warned:
        lines.append(f"warning: epoch {warned[-1]['epoch']}: {warned[-1]['warning']}")
    bench = last.get("benchmark")
    if bench:
        lines.append("NAS-Bench-201 (200 epochs): " + "  ".join(f"{k} {v:.2f}" for k, v in bench.items() if k != "index"))
    lines.append(f"supernet: train acc {last['train_acc']:.2f}%, valid acc {last['valid_acc']:.2f}% (other half)")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    ctx = distributed.DistContext()
    run: Optional[RunDir] = None
    try:
        try:
            if args.resume is not None:
                args = _merge_resume(args, parser, given_on_command_line(parser, argv))
            _check_args(args)
            wants_cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
            ctx = distributed.init_from_env("cuda" if wants_cuda else "cpu")
            device = _resolve_device(args.device, ctx)
            if args.channels_last is None:
                args.channels_last = device.type == "cpu"
            if args.recompute is None:
                args.recompute = default_recompute(args.space, device)
            _check_cuda_graph(args, device, ctx)
            run = _claim_run_dir(args, ctx)
            return _search(args, [PROG, *argv], device, ctx, run)
        except (UsageError, CheckpointError, RunDirError, FileNotFoundError, NotADirectoryError) as err:
            if ctx.is_main:
                print(f"{PROG}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if ctx.is_main:
                print(f"\n{PROG}: interrupted; continue with: {PROG} --resume {args.out}", file=sys.stderr)
            return 130
    finally:
        if run is not None:
            run.release()
        distributed.shutdown(ctx)


def _claim_run_dir(args, ctx: distributed.DistContext) -> RunDir:
    """Own the run directory before anything slow: one writer per directory (rank 0 writes)."""
    run = RunDir(args.out)
    if ctx.is_main:
        try:
            run.acquire()
        except RunDirError as err:
            raise UsageError(f"--{'out' if args.resume is None else 'resume'}: {err}") from None
        removed = run.remove_stale_temp_files()
        if removed:
            print(f"{PROG}: removed {len(removed)} temporary file(s) of a killed write from {args.out}", file=sys.stderr)
    if args.resume is None and run.checkpoint.exists():
        raise UsageError(f"--out {args.out} already holds a run (continue it with --resume {args.out})")
    return run


def _read_resume_state(run: RunDir) -> Dict[str, Any]:
    state = run.load_checkpoint()
    bad = first_nonfinite({k: state.get(k) for k in ("model", "w_optimizer", "alpha_optimizer")})
    if bad is not None:
        raise CheckpointError(f"checkpoint {run.checkpoint} holds a non-finite value in {bad}: resuming would fail again "
                              "(it predates sdarts' finite-state check); start a new run")
    return state


def _check_cheap_inputs(args) -> None:
    """Files read before the (slow) dataset, so that a bad one fails in a second."""
    if args.split_file is not None:
        from ..data.splits import load_split_file

        try:
            load_split_file(args.split_file)
        except (ValueError, OSError) as err:
            raise UsageError(f"--split-file: {err}") from None


def _search(args, command: List[str], device: torch.device, ctx: distributed.DistContext, run: RunDir) -> int:
    space = get_space(args.space)
    if args.lr is None:
        args.lr = default_lr(args.space, args.dataset)
    try:
        backend = backends.resolve(args.backend, device, torch.float32)
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        lookup = build_lookup(args.nb201_table)
    except (ValueError, OSError) as err:
        raise UsageError(f"--nb201-table: {err}") from None
    _check_cheap_inputs(args)
    state = _read_resume_state(run) if args.resume is not None else None
    seed_everything(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolutions once, as DARTS does
    strategy_cls = STRATEGIES[args.optimizer_level]
    try:
        dataset, data = build_data(args, ctx, device, strategy_cls.alpha_source)
    except (ValueError, OSError) as err:
        raise UsageError(f"dataset {args.dataset!r}: {err}") from None
    model = build_model(args, dataset.num_classes, device)
    if ctx.enabled:
        distributed.broadcast_module(model)

    w_optimizer = torch.optim.SGD(model.weight_parameters(), lr=args.lr, momentum=W_MOMENTUM, weight_decay=W_WEIGHT_DECAY)
    # capturable: Adam keeps its step count on the device, so that a CUDA graph can advance it.
    alpha_optimizer = torch.optim.Adam(model.arch_parameters(), lr=ALPHA_LR, betas=ALPHA_BETAS, weight_decay=ALPHA_WEIGHT_DECAY,
                                       capturable=args.cuda_graph)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, T_max=args.epochs, eta_min=0.0)
    amp_dtype = torch.bfloat16 if args.amp else None
    strategy = build_strategy(args.optimizer_level, w_optimizer, alpha_optimizer, grad_clip=W_GRAD_CLIP,
                              autocast_dtype=amp_dtype, grad_sync=distributed.average_grads if ctx.enabled else None)

    searcher = Searcher(model, strategy, scheduler, data, space, epochs=args.epochs, max_steps_per_epoch=args.max_steps_per_epoch,
                        log_every=args.log_every, lookup=lookup if ctx.is_main else None, dist_ctx=ctx, run_dir=run,
                        autocast_dtype=amp_dtype, cuda_graph=args.cuda_graph,
                        cuda_graph_strict=args.cuda_graph_strict)
    if state is not None:
        try:
            searcher.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {run.checkpoint} does not fit this run: {str(err).splitlines()[0]}") from None
        if ctx.is_main:
            run.rewrite_metrics(searcher.history)
            print(f"{PROG}: resuming {args.out} after epoch {searcher.start_epoch} of {args.epochs}", file=sys.stderr)
    elif ctx.is_main:
        run.write_config(describe_run(args, command, device, ctx, backend, space))
        run.rewrite_metrics([])

    if lookup is None and args.space == "nb201" and ctx.is_main and args.resume is None:
        hint = table_hint()
        if hint:
            print(hint, file=sys.stderr)
    try:
        history = searcher.run()
    except NonFiniteLoss as err:
        done = len(searcher.history)
        kept = f"the last good checkpoint is {run.checkpoint} (epoch {done})" if done else "no checkpoint was written"
        raise UsageError(f"{err}; search stopped, {kept}") from None
    except CudaGraphCaptureError as err:
        raise UsageError(f"{err}; search stopped (--cuda-graph-strict)") from None

    if ctx.is_main:
        genotype = model.genotype()
        last = history[-1]
        decisions = cell_decisions(space, model)
        run.write_genotype({
            "space": args.space, "genotype": space.genotype_json(genotype), "genotype_str": space.genotype_str(genotype),
            "epochs": last["epoch"], "p": last["p"], "benchmark": last.get("benchmark"),
            "decided": all(d.decided for d in decisions), "verdict": verdict(decisions),
            "edges": [d.to_json() for d in decisions],
        })
        print(summary_text(space, history, decisions, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
