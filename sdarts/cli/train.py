"""``sdarts-train``: retrain a DARTS-space genotype from scratch (or evaluate a checkpoint).

Examples::

    sdarts-train --genotype DARTS_V2 --dataset cifar10 --data-dir DATA --out runs/darts_v2
    sdarts-train --genotype runs/search/genotype.json --dataset cifar10 --data-dir DATA --out runs/mine
    torchrun --nproc_per_node 8 -m sdarts.cli.train --genotype PC_DARTS --dataset imagenet --data-dir DATA --out runs/pc
    sdarts-train --resume runs/mine
    sdarts-train --evaluate runs/mine/checkpoint.pt --data-dir DATA
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from ..search.run_dir import RunDir
from ..spaces.darts_genotype import GENOTYPES, genotype_to_json, parse_genotype
from ..train.recipes import CIFAR, IMAGENET, SCHEDULES, TrainConfig, make_config
from ..train.loop import evaluate_checkpoint, fit

DATASETS = ("cifar10", "cifar100", "imagenet", "synthetic", "digits")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdarts-train",
        description="Retrain a DARTS-space genotype with the standard recipe of its dataset, or evaluate a checkpoint. "
                    "Run under torchrun for several GPUs (DistributedDataParallel; only rank 0 writes files).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    what = p.add_argument_group("what to do")
    what.add_argument("--genotype", help=f"a name ({', '.join(GENOTYPES)}), 'Genotype(...)' text, JSON, "
                                         "or a file holding either (such as a search's genotype.json)")
    what.add_argument("--dataset", choices=DATASETS, default="cifar10",
                      help="picks the data and the recipe: imagenet (an ImageFolder tree DATA_DIR/train, DATA_DIR/val, "
                           "used at 224x224) -> ImageNet recipe, the others -> CIFAR recipe (default: cifar10)")
    what.add_argument("--data-dir", help="where the dataset lies (default: $SDARTS_DATA or ../shared/data)")
    what.add_argument("--out", help="run directory (config.json, metrics.jsonl, checkpoint.pt)")
    what.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint, "
                                                          "with its config.json (other settings are ignored)")
    what.add_argument("--evaluate", metavar="CKPT", help="print top-1/top-5 of a checkpoint on its dataset's test split")
    what.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: this rank's GPU if any, else cpu)")

    r = p.add_argument_group(
        "recipe (defaults: CIFAR / ImageNet)",
        "Unset options take the dataset's recipe. --batch-size is per process: the effective batch is "
        "batch-size x number of processes, and the lr is scaled with it (CIFAR 0.025 per 128, "
        "ImageNet 0.5 per 1024) unless --lr is given.",
    )

    def recipe_option(flag: str, key: str, kind, help_text: str, **kwargs):
        r.add_argument(flag, type=kind, default=None, help=f"{help_text} [{CIFAR[key]} / {IMAGENET[key]}]", **kwargs)

    recipe_option("--epochs", "epochs", int, "training epochs")
    recipe_option("--batch-size", "batch_size", int, "batch per process")
    r.add_argument("--lr", type=float, default=None, help="peak learning rate (default: scaled from the recipe, see above)")
    recipe_option("--layers", "layers", int, "cells")
    recipe_option("--init-channels", "init_channels", int, "channels of the first cells")
    recipe_option("--auxiliary-weight", "auxiliary_weight", float, "weight of the auxiliary head's loss (0: no head)")
    recipe_option("--cutout", "cutout", int, "cutout square side (0: off)")
    recipe_option("--drop-path", "drop_path", float, "final drop-path probability (increased linearly from 0)")
    recipe_option("--label-smoothing", "label_smoothing", float, "label smoothing")
    recipe_option("--momentum", "momentum", float, "SGD momentum")
    recipe_option("--weight-decay", "weight_decay", float, "weight decay")
    recipe_option("--grad-clip", "grad_clip", float, "gradient norm clip (0: off)")
    recipe_option("--lr-schedule", "lr_schedule", str, "per-epoch decay to 0", choices=SCHEDULES)
    recipe_option("--warmup-epochs", "warmup_epochs", int, "epochs of linear lr warm-up")
    r.add_argument("--amp", action="store_true", help="bf16 autocast")
    r.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    r.add_argument("--max-steps-per-epoch", type=int, default=None,
                   help="stop each epoch's training after this many steps (smoke tests; default: the whole split)")
    r.add_argument("--workers", type=int, default=8, help="decoding processes for data read from disk (ImageNet; default: 8)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    modes = [m for m in ("genotype", "resume", "evaluate") if getattr(args, m)]
    if len(modes) != 1 or (args.genotype and args.evaluate):
        parser.error("give exactly one of --genotype (with --out), --resume RUN_DIR or --evaluate CKPT")
    if args.evaluate:
        result = evaluate_checkpoint(args.evaluate, data_dir=args.data_dir, device=args.device)
        print(f"{args.evaluate}: epoch {result['epoch']} top-1 {100 * result['test_top1']:.2f}% "
              f"top-5 {100 * result['test_top5']:.2f}% loss {result['test_loss']:.4f}")
        print(json.dumps(result))
        return 0
    if args.resume:
        config = TrainConfig.from_json(RunDir(args.resume).read_config()["train"])
        if args.data_dir is not None:
            config = TrainConfig.from_json({**config.to_json(), "data_dir": args.data_dir})
        fit(config, args.resume, resume=True, device=args.device)
        return 0
    if not args.out:
        parser.error("--genotype needs --out RUN_DIR")
    try:
        genotype = genotype_to_json(parse_genotype(args.genotype))
    except ValueError as err:
        parser.error(f"--genotype: {err}")
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "layers", "init_channels", "auxiliary_weight",
                                                 "cutout", "drop_path", "label_smoothing", "momentum", "weight_decay",
                                                 "grad_clip", "lr_schedule", "warmup_epochs", "seed", "workers", "max_steps_per_epoch")}
    try:
        config = make_config(genotype, args.dataset, data_dir=args.data_dir, amp=args.amp or None, **overrides)
    except ValueError as err:
        parser.error(str(err))
    fit(config, args.out, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
