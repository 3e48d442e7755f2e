"""A real, timed search: the search CLI end to end, one run per seed.

Each run calls ``sdarts.cli.search.main`` in this process and times all of it: data loading
(decoding the CIFAR-10 JPEG copy), building the supernet, every epoch's training and its
evaluation on the other half, checkpoints.  Afterwards it reads the run's ``genotype.json``
and ``metrics.jsonl`` and prints, per seed, the derived cell, its NAS-Bench-201 accuracies
(200-epoch ground truth, looked up by the CLI) and the minutes taken; then mean and std.

The JSON (``--json``) is rewritten after every seed and, while a seed runs, after every epoch
(its ``progress``: the epoch records so far, read from the run's ``metrics.jsonl``), so a run
cut short by a timeout keeps what it did.  ``--cuda-graph-strict`` stops a run at once with the
reason if a CUDA graph capture fails (instead of going on eagerly, several times slower).
Exit status 1 if any run failed.

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
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List, Optional

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
    parser.add_argument("--eval-batch-size", type=int, default=None,
                        help="the per-epoch supernet evaluation's batch, passed to the CLI (default: its own); it does not "
                        "change the search (no autograd, running BatchNorm statistics), only how long the evaluation takes")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--cuda-graph", action="store_true", help="replay each training step from a CUDA graph (CUDA only)")
    parser.add_argument("--cuda-graph-strict", action="store_true",
                        help="--cuda-graph, and a failed capture stops the run with the reason (for timed runs)")
    parser.add_argument("--progress-every", type=float, default=2.0, metavar="S",
                        help="seconds between reads of the running seed's metrics.jsonl for the JSON (default 2)")
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
    if args.eval_batch_size is not None:
        argv += ["--eval-batch-size", str(args.eval_batch_size)]
    if args.data_fraction != 1.0:
        argv += ["--data-fraction", str(args.data_fraction)]
    if args.amp:
        argv.append("--amp")
    if args.channels_last:
        argv.append("--channels-last")
    if args.cuda_graph:
        argv.append("--cuda-graph")
    if args.cuda_graph_strict:
        argv.append("--cuda-graph-strict")
    for flag, value in (("--max-steps-per-epoch", args.max_steps_per_epoch), ("--layers", args.layers)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def read_epochs(out: Path) -> List[Dict[str, object]]:
    """The epoch records in ``out/metrics.jsonl`` so far (a line being written is skipped)."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


def progress(records: List[Dict[str, object]]) -> Dict[str, object]:
    """What a cut-short run leaves: epochs done, their median time, and the last epoch's figures."""
    if not records:
        return {"epochs_done": 0}
    last = records[-1]
    keep = ("epoch", "train_loss", "train_acc", "valid_acc", "genotype", "benchmark", "cuda_graph", "time_s", "elapsed_s")
    return {"epochs_done": len(records), "epoch_s": statistics.median(r["time_s"] for r in records),
            "last": {k: last.get(k) for k in keep}, "epochs": [{k: r.get(k) for k in keep} for r in records]}


class EpochWatcher:
    """Calls ``on_change(records)`` whenever ``out/metrics.jsonl`` gains epochs, every ``every``
    seconds, on a daemon thread, until stopped (then once more)."""

    def __init__(self, out: Path, on_change: Callable[[List[Dict[str, object]]], None], every: float):
        self.out, self.on_change, self.every = out, on_change, every
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        records = read_epochs(self.out)
        if len(records) != self._seen:
            self._seen = len(records)
            self.on_change(records)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._poll()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll()


def run_seed(args, seed: int, out: Path, on_epochs: Optional[Callable[[List[Dict[str, object]]], None]] = None) -> Dict[str, object]:
    argv = cli_argv(args, seed, out)
    log(f"seed {seed}: sdarts-search {' '.join(argv)}")
    start = time.perf_counter()
    with EpochWatcher(out, on_epochs or (lambda records: None), args.progress_every):
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
    result: Dict[str, object] = {"settings": vars(args), "rows": [], "progress": {}}
    lock = threading.Lock()

    def on_epochs(seed: int, records: List[Dict[str, object]]) -> None:
        with lock:
            result["progress"][str(seed)] = progress(records)
            write_json(args.json, result)

    for seed in args.seeds:
        row = run_seed(args, seed, root / f"seed{seed}", lambda records, _s=seed: on_epochs(_s, records))
        with lock:
            result["rows"].append(row)
            write_json(args.json, result)
    result["summary"] = summary(result["rows"])
    write_json(args.json, result)
    columns = [("seed", "seed"), ("genotype", "derived cell"), ("epochs", "epochs")]
    columns += [(name, name, 2) for name in ACCURACIES] if args.space == "nb201" else []
    columns += [("supernet_valid_acc", "supernet valid %"), ("epoch_s", "s/epoch", 1), ("minutes", "total min", 1),
                ("error", "note")]
    engine = "".join(f", {flag.replace('_', '-')}" for flag in ("amp", "channels_last", "cuda_graph", "cuda_graph_strict")
                     if getattr(args, flag))
    fraction = f", {args.data_fraction:g} of the training set" if args.data_fraction != 1.0 else ""
    print(f"\n## {args.space} search end to end ({args.optimizer_level}, {args.activation}, {args.epochs} epochs, "
          f"batch {args.batch_size}{engine}{fraction}, {args.dataset} from {args.data_dir}); NAS-Bench-201 200-epoch accuracies, %\n")
    print(markdown_table(result["rows"] + [result["summary"]], columns))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    sys.exit(1 if any("error" in r for r in main()["rows"]) else 0)
