"""``sdarts-train``: retrain a DARTS-space genotype from scratch (or evaluate a checkpoint).

Examples::

    sdarts-train --genotype DARTS_V2 --dataset cifar10 --data-dir DATA --out runs/darts_v2
    sdarts-train --genotype runs/search/genotype.json --dataset cifar10 --data-dir DATA --out runs/mine
    torchrun --nproc_per_node 8 -m sdarts.cli.train --genotype PC_DARTS --dataset imagenet --data-dir DATA --out runs/pc
    sdarts-train --resume runs/mine
    sdarts-train --evaluate runs/mine/checkpoint.pt --data-dir DATA

Bad input (a bad option value, missing data, a busy or existing run directory, a broken or
foreign checkpoint, a diverged run) ends with one line on stderr, ``sdarts-train: error: ...``,
and exit status 2; the files of a run are never left half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, List, NoReturn, Optional

from ..run.checkpoint import CheckpointError
from ..run.run_dir import RunDirError
from ..spaces.darts.genotype import GENOTYPES, genotype_to_json, parse_genotype
from ..train.data import DataError
from ..train.loop import TrainError, check_device, evaluate_checkpoint, fit, read_run_config
from ..train.recipes import CIFAR, DATASETS, IMAGENET, SCHEDULES, TrainConfig, make_config, network_problem, recipe
from .args import parse_number

PROG = "sdarts-train"


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit status 2.

    Raised by the option types below too: argparse lets it through (it only catches its own
    ArgumentTypeError, TypeError and ValueError), so the line names the flag exactly."""


# -- option types: each rejects what makes no sense, naming its flag ------------------------


def number(flag: str, kind: type = float, minimum: Optional[float] = None, *, above: bool = False,
           below: Optional[float] = None) -> Callable[[str], float]:
    """An argparse ``type`` for ``flag``: :func:`~sdarts.cli.args.parse_number`'s rule, as a
    UsageError naming the flag ("--lr must be a finite number, got nan")."""

    def parse(text: str):
        try:
            return parse_number(text, kind, minimum, above=above, below=below)
        except ValueError as err:
            raise UsageError(f"{flag} {err}") from None

    parse.__name__ = kind.__name__
    return parse


def nonempty(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.strip():
            raise UsageError(f"{flag} is empty")
        return text

    parse.__name__ = "str"
    return parse


# The range of every recipe option (flag -> argparse type).
RECIPE_TYPES = {
    "--epochs": number("--epochs", int, 1),
    "--batch-size": number("--batch-size", int, 1),
    "--layers": number("--layers", int, 1),
    "--init-channels": number("--init-channels", int, 1),
    "--auxiliary-weight": number("--auxiliary-weight", float, 0),
    "--cutout": number("--cutout", int, 0),
    "--drop-path": number("--drop-path", float, 0, below=1),
    "--label-smoothing": number("--label-smoothing", float, 0, below=1),
    "--momentum": number("--momentum", float, 0, below=1),
    "--weight-decay": number("--weight-decay", float, 0),
    "--grad-clip": number("--grad-clip", float, 0),
    "--warmup-epochs": number("--warmup-epochs", int, 0),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Retrain a DARTS-space genotype with the standard recipe of its dataset, or evaluate a checkpoint. "
                    "Run under torchrun for several GPUs (DistributedDataParallel; only rank 0 writes files).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    what = p.add_argument_group("what to do")
    what.add_argument("--genotype", type=nonempty("--genotype"),
                      help=f"a name ({', '.join(GENOTYPES)}), 'Genotype(...)' text, JSON, "
                           "or a file holding either (such as a DARTS-space search's genotype.json)")
    what.add_argument("--dataset", choices=DATASETS, default="cifar10",
                      help="picks the data and the recipe: imagenet (an ImageFolder tree DATA_DIR/train, DATA_DIR/val, "
                           "used at 224x224) -> ImageNet recipe, the others -> CIFAR recipe (default: cifar10)")
    what.add_argument("--data-dir", type=nonempty("--data-dir"),
                      help="where the dataset lies (default: $SDARTS_DATA or ../shared/data)")
    what.add_argument("--out", type=nonempty("--out"), help="run directory (config.json, metrics.jsonl, checkpoint.pt)")
    what.add_argument("--resume", metavar="RUN_DIR", type=nonempty("--resume"),
                      help="continue the run in RUN_DIR from its checkpoint, with its config.json (other settings are ignored)")
    what.add_argument("--evaluate", metavar="CKPT", type=nonempty("--evaluate"),
                      help="print top-1/top-5 of a checkpoint on its dataset's test split")
    what.add_argument("--device", type=nonempty("--device"),
                      help="cpu, cuda, cuda:1 ... (default: this rank's GPU if any, else cpu)")

    r = p.add_argument_group(
        "recipe (defaults: CIFAR / ImageNet)",
        "Unset options take the dataset's recipe. --batch-size is per process: the effective batch is "
        "batch-size x number of processes, and the lr is scaled with it (CIFAR 0.025 per 128, "
        "ImageNet 0.5 per 1024) unless --lr is given.",
    )

    def recipe_option(flag: str, key: str, help_text: str, **kwargs):
        kind = RECIPE_TYPES.get(flag, str)
        r.add_argument(flag, type=kind, default=None, help=f"{help_text} [{CIFAR[key]} / {IMAGENET[key]}]", **kwargs)

    recipe_option("--epochs", "epochs", "training epochs")
    recipe_option("--batch-size", "batch_size", "batch per process")
    r.add_argument("--lr", type=number("--lr", float, 0, above=True), default=None,
                   help="peak learning rate (default: scaled from the recipe, see above)")
    recipe_option("--layers", "layers", "cells")
    recipe_option("--init-channels", "init_channels", "channels of the first cells")
    recipe_option("--auxiliary-weight", "auxiliary_weight", "weight of the auxiliary head's loss (0: no head)")
    recipe_option("--cutout", "cutout", "cutout square side (0: off)")
    recipe_option("--drop-path", "drop_path", "final drop-path probability (increased linearly from 0)")
    recipe_option("--label-smoothing", "label_smoothing", "label smoothing")
    recipe_option("--momentum", "momentum", "SGD momentum")
    recipe_option("--weight-decay", "weight_decay", "weight decay")
    recipe_option("--grad-clip", "grad_clip", "gradient norm clip (0: off)")
    recipe_option("--lr-schedule", "lr_schedule", "per-epoch decay to 0", choices=SCHEDULES)
    recipe_option("--warmup-epochs", "warmup_epochs", "epochs of linear lr warm-up")
    r.add_argument("--amp", action="store_true", help="bf16 autocast")
    r.add_argument("--seed", type=number("--seed", int, 0), default=0, help="random seed (default: 0)")
    r.add_argument("--max-steps-per-epoch", type=number("--max-steps-per-epoch", int, 1), default=None,
                   help="stop each epoch's training after this many steps (smoke tests; default: the whole split)")
    r.add_argument("--workers", type=number("--workers", int, 0), default=8,
                   help="decoding processes for data read from disk (ImageNet; default: 8)")
    return p


OVERRIDES = ("epochs", "batch_size", "lr", "layers", "init_channels", "auxiliary_weight", "cutout", "drop_path",
             "label_smoothing", "momentum", "weight_decay", "grad_clip", "lr_schedule", "warmup_epochs", "seed", "workers",
             "max_steps_per_epoch")
# Everything the training code raises for the user to act on: one line each.
USER_ERRORS = (UsageError, TrainError, DataError, RunDirError, CheckpointError)


def _is_main_process() -> bool:
    """Rank 0 under torchrun (the only one that reports), or a single process."""
    return os.environ.get("RANK", "0") == "0"


def one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def fail(parser: argparse.ArgumentParser, err: BaseException) -> NoReturn:
    """``sdarts-train: error: ...`` on stderr, then exit status 2 (as argparse's own errors, but
    without the usage text).  Under torchrun one process reports: the one the training loop
    marked (``report``), else rank 0."""
    report = getattr(err, "report", None)
    if report is None:
        report = _is_main_process()
    parser.exit(2, f"{PROG}: error: {one_line(err)}\n" if report else None)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        modes = [m for m in ("genotype", "resume", "evaluate") if getattr(args, m)]
        if len(modes) != 1:
            parser.error("give exactly one of --genotype (with --out), --resume RUN_DIR or --evaluate CKPT")
        if args.evaluate:
            return _evaluate(args)
        if args.resume:
            return _resume(args)
        return _train(args)
    except USER_ERRORS as err:
        fail(parser, err)
    except KeyboardInterrupt:
        run_dir = args and (args.resume or args.out)
        if _is_main_process():
            resumable = run_dir and os.path.isfile(os.path.join(run_dir, "checkpoint.pt"))
            hint = f"; continue with: {PROG} --resume {run_dir}" if resumable else ""
            print(f"\n{PROG}: interrupted{hint}", file=sys.stderr)
        raise SystemExit(130) from None


def _evaluate(args) -> int:
    result = evaluate_checkpoint(args.evaluate, data_dir=args.data_dir, device=args.device)
    print(f"{args.evaluate}: epoch {result['epoch']} top-1 {100 * result['test_top1']:.2f}% "
          f"top-5 {100 * result['test_top5']:.2f}% loss {result['test_loss']:.4f}")
    print(json.dumps(result))
    return 0


def _resume(args) -> int:
    # The cheap checks first: the device and the run's config.json here, then (in fit) the
    # run's lock and its checkpoint, all before any data is read or a model built.
    check_device(args.device)
    config = read_run_config(args.resume, "--resume")
    if args.data_dir is not None:
        config = TrainConfig.from_json({**config.to_json(), "data_dir": args.data_dir})
    fit(config, args.resume, resume=True, device=args.device)
    return 0


def _train(args) -> int:
    if not args.out:
        raise UsageError("--genotype needs --out RUN_DIR (the run directory to create)")
    check_device(args.device)
    try:
        genotype = genotype_to_json(parse_genotype(args.genotype))
    except (ValueError, TypeError) as err:
        raise UsageError(f"--genotype: {err}") from None
    overrides = {k: getattr(args, k) for k in OVERRIDES}
    settings = {**recipe(args.dataset), **{k: v for k, v in overrides.items() if v is not None}}
    problem = network_problem(args.dataset, settings["layers"], settings["init_channels"], settings["auxiliary_weight"],
                              flags=True)
    if problem:
        raise UsageError(problem)
    try:
        config = make_config(genotype, args.dataset, data_dir=args.data_dir, amp=args.amp or None, **overrides)
    except ValueError as err:
        raise UsageError(str(err)) from None
    fit(config, args.out, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
