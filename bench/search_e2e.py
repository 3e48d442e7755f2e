"""A real, timed search: the search CLI end to end, one run per seed.

Each run calls ``sdarts.cli.search.main`` in this process and times all of it: data loading
(decoding the CIFAR-10 JPEG copy), building the supernet, every epoch's training and its
evaluation on the other half, checkpoints.  Afterwards it reads the run's ``genotype.json``
and ``metrics.jsonl`` and prints, per seed, the derived cell, its NAS-Bench-201 accuracies
(200-epoch ground truth, looked up by the CLI) and the minutes taken; then mean and std.

Defaults find the project's shared data: ``$SDARTS_DATA`` (else ``<repo>/../shared/data``)
``/cifar10-jpeg`` and ``/nb201/nb201_200ep_accuracies.csv``.  Figures measured on it are
"CIFAR-10 (JPEG q75 copy)".

    python bench/search_e2e.py --epochs 50 --seeds 0 1 2 --json e2e.json
    python bench/search_e2e.py --epochs 1 --max-steps-per-epoch 20    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List

from common import REPO_ROOT, log, markdown_table, write_json

from sdarts.cli import search as search_cli
from sdarts.data.locate import shared_data_dir

ACCURACIES = ("cifar10_valid", "cifar10_test", "cifar100_test", "imagenet16_test")


def parse_args(argv=None) -> argparse.Namespace:
    data = shared_data_dir()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", choices=("nb201", "darts"), default="nb201")
    parser.add_argument("--dataset", default="cifar10", help="a dataset name the search CLI knows")
    parser.add_argument("--data-dir", default=os.path.join(data, "cifar10-jpeg"), help="default: %(default)s")
    parser.add_argument("--nb201-table", default=os.path.join(data, "nb201", "nb201_200ep_accuracies.csv"),
                        help="NAS-Bench-201 table for the lookups (nb201 only; skipped if the file is absent)")
    parser.add_argument("--split-file", default=None, help="passed to the CLI (e.g. nb201/cifar-split.txt); default: seeded half split")
    parser.add_argument("--data-fraction", type=float, default=1.0,
                        help="search on this fraction of the training set (passed to the CLI; a CPU-sized run)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--optimizer-level", default="single", help="single (Single-DARTS), bilevel, ... (see sdarts-search --help)")
    parser.add_argument("--activation", choices=("sigmoid", "softmax"), default="sigmoid")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--cuda-graph", action="store_true", help="replay each training step from a CUDA graph (CUDA only)")
    parser.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (smoke runs)")
    parser.add_argument("--layers", type=int, default=None, help="supernet depth override, passed to the CLI (smoke runs)")
    parser.add_argument("--out-root", default=None, help="where the run directories go (default: runs/e2e-<time>)")
    parser.add_argument("--json", metavar="PATH", help="write every figure here")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if not os.path.exists(args.data_dir):
        parser.error(f"--data-dir {args.data_dir} does not exist (set SDARTS_DATA or pass --data-dir)")
    return args


def cli_argv(args, seed: int, out: Path) -> List[str]:
    argv = ["--space", args.space, "--dataset", args.dataset, "--data-dir", args.data_dir, "--out", str(out),
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(seed),
            "--activation", args.activation, "--optimizer-level", args.optimizer_level, "--backend", args.backend,
            "--device", args.device]
    if args.space == "nb201" and os.path.isfile(args.nb201_table):
        argv += ["--nb201-table", args.nb201_table]
    if args.split_file:
        argv += ["--split-file", args.split_file]
    if args.data_fraction != 1.0:
        argv += ["--data-fraction", str(args.data_fraction)]
    if args.amp:
        argv.append("--amp")
    if args.channels_last:
        argv.append("--channels-last")
    if args.cuda_graph:
        argv.append("--cuda-graph")
    for flag, value in (("--max-steps-per-epoch", args.max_steps_per_epoch), ("--layers", args.layers)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_seed(args, seed: int, out: Path) -> Dict[str, object]:
    argv = cli_argv(args, seed, out)
    log(f"seed {seed}: sdarts-search {' '.join(argv)}")
    start = time.perf_counter()
    status = search_cli.main(argv)
    minutes = (time.perf_counter() - start) / 60
    row: Dict[str, object] = {"seed": seed, "minutes": minutes, "run_dir": str(out)}
    if status != 0:
        row["error"] = f"sdarts-search exited with status {status}"
        return row
    genotype = json.loads((out / "genotype.json").read_text())
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    row["genotype"] = genotype["genotype_str"]
    row["epochs"] = genotype["epochs"]
    row["epoch_s"] = statistics.median(e["time_s"] for e in epochs)
    row["search_min"] = epochs[-1]["elapsed_s"] / 60  # epochs only: no data loading or setup
    row["supernet_valid_acc"] = epochs[-1]["valid_acc"]
    for name in ACCURACIES:
        row[name] = (genotype.get("benchmark") or {}).get(name)
    return row


def summary(rows: List[Dict[str, object]]) -> Dict[str, object]:
    done = [r for r in rows if "error" not in r]
    out: Dict[str, object] = {"seed": "mean ± std", "genotype": f"{len(done)} of {len(rows)} runs"}
    for name in ACCURACIES + ("minutes", "search_min"):
        values = [r[name] for r in done if r.get(name) is not None]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            out[name] = f"{statistics.mean(values):.2f} ± {std:.2f}"
    return out


def main(argv=None) -> Dict[str, object]:
    args = parse_args(argv)
    root = Path(args.out_root or REPO_ROOT / "runs" / f"e2e-{datetime.now():%Y%m%d-%H%M%S}")
    result: Dict[str, object] = {"settings": vars(args), "rows": []}
    for seed in args.seeds:
        result["rows"].append(run_seed(args, seed, root / f"seed{seed}"))
        write_json(args.json, result)
    result["summary"] = summary(result["rows"])
    write_json(args.json, result)
    columns = [("seed", "seed"), ("genotype", "derived cell"), ("epochs", "epochs")]
    columns += [(name, name, 2) for name in ACCURACIES] if args.space == "nb201" else []
    columns += [("supernet_valid_acc", "supernet valid %"), ("epoch_s", "s/epoch", 1), ("minutes", "total min", 1),
                ("error", "note")]
    engine = "".join(f", {flag.replace('_', '-')}" for flag in ("amp", "channels_last", "cuda_graph") if getattr(args, flag))
    fraction = f", {args.data_fraction:g} of the training set" if args.data_fraction != 1.0 else ""
    print(f"\n## {args.space} search end to end ({args.optimizer_level}, {args.activation}, {args.epochs} epochs, "
          f"batch {args.batch_size}{engine}{fraction}, {args.dataset} from {args.data_dir}); NAS-Bench-201 200-epoch accuracies, %\n")
    print(markdown_table(result["rows"] + [result["summary"]], columns))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
