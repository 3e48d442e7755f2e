"""Retraining a genotype from scratch: one run directory, one process per device.

::

    RUN_DIR/config.json     {"train": the TrainConfig, then what the run resolved: world size,
                            global batch, peak lr, input size, params_m, macs_m, device, torch}
    RUN_DIR/metrics.jsonl   one JSON object per finished epoch
    RUN_DIR/checkpoint.pt   model, optimizer and config after the last finished epoch (atomic)
    RUN_DIR/.lock           held by the one process writing the run (rank 0), with its PID

Under ``torchrun`` every process trains a DistributedDataParallel replica on its own shard of
each epoch; only rank 0 writes files (and holds the run directory's lock).

What the user can act on (a busy or existing run directory, missing data, a broken or foreign
checkpoint, a device not here, a diverged run, a full disk) is raised as one of
:data:`USER_ERRORS`, each a one-line message naming the ``sdarts-train`` option concerned, on
every rank together; the cheap checks come before the data are read.  A checkpoint holding a
NaN/inf is never written over the last good one.  The loaders draw each epoch's order and crops from
(seed, epoch), and each epoch reseeds torch's RNG (cutout, drop-path) from (seed, epoch, rank),
so a run resumed from its checkpoint ends exactly where an uninterrupted one would (on the CPU).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..spaces.darts import build_network, parse_genotype
from ..run import device as run_device
from ..run.checkpoint import CheckpointError, first_nonfinite, load_checkpoint
from ..run.distributed import DistContext, all_reduce_, init_from_env, shutdown
from ..run.run_dir import RunDir, RunDirError
from .augment import cutout
from .complexity import count_macs, count_parameters
from .data import DataError, TrainData, data_problem, load_train_data
from .recipes import TrainConfig, drop_path_prob, learning_rate

Log = Callable[[str], None]
# The keys of a sdarts-train checkpoint, and those that mark a sdarts-search one.
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "config")
SEARCH_CHECKPOINT_KEYS = ("w_optimizer", "alpha_optimizer")


class TrainError(RuntimeError):
    """A problem with the user's input or files: ``sdarts-train`` reports it as one line on
    stderr (exit status 2), naming the option concerned.  Nothing of a run is lost by it."""


class RunExists(TrainError, FileExistsError):
    """``--out`` already holds a run (a checkpoint)."""


# Everything the loop raises for the user to act on (the CLI turns each into one line).
USER_ERRORS = (TrainError, DataError, RunDirError, CheckpointError)


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def check_device(device: Optional[str]) -> None:
    """TrainError unless ``device`` (``--device``) is None, ``cpu``, or a CUDA device present here."""
    try:
        run_device.check_device(device)
    except run_device.DeviceError as err:
        raise TrainError(str(err)) from None


def pick_device(device: Optional[str], ctx: DistContext) -> torch.device:
    """``device`` if given (``"cuda"`` meaning this rank's GPU); else this rank's GPU when
    there is one, else the CPU.  TrainError (naming ``--device``) for one that is not here."""
    try:
        return run_device.pick_device(device, ctx.local_rank)
    except run_device.DeviceError as err:
        raise TrainError(str(err)) from None


# -- reading a run, cheaply and with errors a user can act on ----------------------------


def read_run_config(run_dir: os.PathLike, flag: str = "--resume") -> TrainConfig:
    """The TrainConfig of the sdarts-train run in ``run_dir`` (its config.json), or TrainError
    saying what ``run_dir`` is instead (missing, no run, a sdarts-search run, a broken file)."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        what = "is not a directory" if run.path.exists() else "does not exist"
        raise TrainError(f"{flag} {run_dir} {what}; expected a sdarts-train run directory (the --out of a run)")
    if not run.config.is_file():
        raise TrainError(f"{flag} {run_dir} holds no config.json: not a sdarts-train run directory")
    try:
        saved = run.read_config()
    except (OSError, ValueError) as err:
        raise TrainError(f"{flag} {run_dir}: cannot read its config.json ({type(err).__name__}: {_one_line(err)})") from None
    if isinstance(saved, dict) and "train" not in saved and "args" in saved:
        raise TrainError(f"{flag} {run_dir} is a sdarts-search run, not a sdarts-train one; "
                         f"continue it with sdarts-search --resume {run_dir}")
    if not isinstance(saved, dict) or "train" not in saved:
        raise TrainError(f"{flag} {run_dir}: its config.json has no \"train\" settings: not a sdarts-train run directory")
    try:
        config = TrainConfig.from_json(saved["train"])
        parse_genotype(config.genotype)
    except (TypeError, ValueError, AttributeError) as err:
        raise TrainError(f"{flag} {run_dir}: its config.json holds invalid training settings ({_one_line(err)})") from None
    return config


def read_train_checkpoint(path: os.PathLike, flag: str) -> Dict:
    """A sdarts-train checkpoint's state, or TrainError saying why ``path`` is not one (missing,
    unreadable, a sdarts-search checkpoint, incomplete)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise TrainError(f"{flag} {path} is a directory; expected a checkpoint file such as {os.path.join(path, 'checkpoint.pt')}")
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise TrainError(f"{flag}: {err}") from None
    if all(k in state for k in SEARCH_CHECKPOINT_KEYS):
        raise TrainError(f"{flag} {path} is a sdarts-search checkpoint (a supernet), not a sdarts-train one; "
                         "retrain the search's genotype.json with sdarts-train --genotype FILE --out RUN_DIR")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise TrainError(f"{flag} {path} is not a sdarts-train checkpoint (it lacks {', '.join(missing)})")
    try:
        epoch = int(state["epoch"])
    except (TypeError, ValueError):
        epoch = -1
    if epoch < 0 or not isinstance(state["model"], dict) or not isinstance(state["optimizer"], dict):
        raise TrainError(f"{flag} {path}: a broken sdarts-train checkpoint (epoch {state['epoch']!r})")
    return state


def _load_weights(module, state: Dict, what: str) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        text = _one_line(err)
        raise TrainError(f"{what} ({text[:300]}{'...' if len(text) > 300 else ''})") from None


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch's global RNG for the epoch's cutout and drop-path draws."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> 1))


def network_for(config: TrainConfig, num_classes: int) -> nn.Module:
    return build_network(
        parse_genotype(config.genotype),
        dataset="imagenet" if config.dataset == "imagenet" else "cifar10",
        C=config.init_channels,
        layers=config.layers,
        auxiliary=config.auxiliary_weight > 0,
        num_classes=num_classes,
    )


def rank_param_spread(model: nn.Module, ctx: DistContext) -> Optional[float]:
    """Largest difference between this rank's parameters and rank 0's, over all ranks."""
    if not ctx.enabled:
        return None
    mine = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    reference = mine.clone()
    torch.distributed.broadcast(reference, src=0)
    spread = (mine - reference).abs().max().reshape(1)
    torch.distributed.all_reduce(spread, op=torch.distributed.ReduceOp.MAX)
    return float(spread.item())


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def train_one_epoch(model: nn.Module, data: TrainData, optimizer: torch.optim.Optimizer, config: TrainConfig,
                    ctx: DistContext, device: torch.device, epoch: int) -> Dict[str, float]:
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    steps = min(data.train_steps, config.max_steps_per_epoch or data.train_steps)
    batches = tqdm(data.train_batches(epoch), total=steps, desc=f"epoch {epoch}", leave=False,
                   disable=not ctx.is_main, mininterval=2.0)
    for step, (images, labels) in enumerate(batches):
        if step == steps:
            break
        if config.cutout > 0:
            images = cutout(images, config.cutout)
        with _autocast(device, config.amp):
            logits, aux_logits = model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            if aux_logits is not None:
                loss = loss + config.auxiliary_weight * F.cross_entropy(aux_logits, labels, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        # Accumulated on the device: the step never waits for the host.
        loss_sum += loss.detach().double() * labels.shape[0]
        correct += (logits.detach().argmax(1) == labels).sum()
        count += labels.shape[0]
    sums = torch.stack([loss_sum, correct.double(), torch.tensor(float(count), dtype=torch.float64, device=device)])
    if ctx.enabled:
        all_reduce_([sums], "sum")
    loss_total, correct_total, count_total = sums.tolist()
    return {"train_loss": loss_total / max(count_total, 1), "train_top1": correct_total / max(count_total, 1)}


@torch.no_grad()
def evaluate(model: nn.Module, data: TrainData, config: TrainConfig, ctx: DistContext, device: torch.device) -> Dict[str, float]:
    """Loss, top-1 and top-5 accuracy on the test split (this rank's shard, summed over ranks).

    ``model`` is the bare network, not its DDP wrapper: ranks may hold unequal test shards.
    """
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, top-1 hits, top-5 hits
    count = 0
    k = min(5, data.num_classes)
    for images, labels in data.test_batches():
        with _autocast(device, config.amp):
            logits, _ = model(images)
        logits = logits.float()
        hits = logits.topk(k, dim=1).indices == labels[:, None]
        sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum"), hits[:, 0].sum(), hits.any(dim=1).sum()]).double()
        count += labels.shape[0]
    sums = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64, device=device)])
    if ctx.enabled:
        all_reduce_([sums], "sum")
    loss_sum, top1, top5, count = sums.tolist()
    count = max(count, 1)
    return {"test_loss": loss_sum / count, "test_top1": top1 / count, "test_top5": top5 / count}


def describe_model(model: nn.Module, input_size: Tuple[int, int, int]) -> Dict[str, float]:
    return {"params_m": count_parameters(model) / 1e6, "macs_m": count_macs(model, input_size) / 1e6}


def fit(config: TrainConfig, out_dir: os.PathLike, resume: bool = False, device: Optional[str] = None,
        log: Log = print) -> Dict[str, float]:
    """Train ``config`` into ``out_dir`` (continuing its checkpoint when ``resume``); the last
    epoch's metrics.

    The cheap checks come first: the device, the data directory, then (rank 0) ownership of
    the run directory (:meth:`RunDir.acquire`: one writer) and, on resume, its checkpoint; only
    then are the data loaded and the model built.  Problems are raised as TrainError, RunExists,
    DataError, RunDirError or CheckpointError (one line each), on every rank together."""
    run = RunDir(out_dir)
    probe = pick_device(device, DistContext())
    ctx = init_from_env(probe.type)
    try:
        return _fit(config, run, resume, pick_device(device, ctx), ctx, log if ctx.is_main else (lambda _: None))
    finally:
        run.release()
        shutdown(ctx)


def _together(ctx: DistContext, device: torch.device, step: Callable[[], object]):
    """Run ``step`` on every rank; if it fails with a user error on any rank, raise on all of
    them (so that no rank waits for a collective the failed one never reaches).  The error's
    ``report`` attribute is true on the one rank that should print it (the lowest failed one)."""
    if not ctx.enabled:
        return step()
    error, result = None, None
    try:
        result = step()
    except USER_ERRORS as err:
        error = err
    failed = torch.zeros(ctx.world_size, device=device)
    if error is not None:
        failed[ctx.rank] = 1.0
    torch.distributed.all_reduce(failed, op=torch.distributed.ReduceOp.SUM)
    ranks = failed.nonzero().flatten().tolist()
    if error is not None:
        error.report = ctx.rank == ranks[0]
        raise error
    if ranks:
        echo = TrainError(f"stopped: process {ranks[0]} of the run failed (its error is above)")
        echo.report = False
        raise echo
    return result


def _claim(config: TrainConfig, run: RunDir, resume: bool, ctx: DistContext) -> Optional[Dict]:
    """The checks before any data is read: the run directory is ours (rank 0), and on resume
    its checkpoint is readable (every rank reads it); the checkpoint's state."""
    flag = "--resume" if resume else "--out"
    problem = data_problem(config)
    if problem:
        raise DataError(problem)
    if ctx.is_main:
        if resume and not run.path.is_dir():
            raise TrainError(f"--resume {run.path} does not exist; expected a sdarts-train run directory")
        if not resume and run.checkpoint.exists():
            raise RunExists(f"--out {run.path} already holds a run (checkpoint.pt); continue it with "
                            f"sdarts-train --resume {run.path}, or pick another --out")
        try:
            run.acquire()
        except RunDirError as err:
            text = str(err)
            raise type(err)(f"{flag} {text}" if text.startswith(str(run.path)) else f"{flag}: {text}") from None
        if not resume and run.checkpoint.exists():  # written by another process since the first look
            raise RunExists(f"--out {run.path} already holds a run (checkpoint.pt); continue it with "
                            f"sdarts-train --resume {run.path}, or pick another --out")
        run.remove_stale_temp_files()
    if not resume:
        return None
    if not run.checkpoint.is_file():
        raise TrainError(f"--resume {run.path} holds no checkpoint.pt (the run ended before its first epoch): nothing to "
                         "resume; start it again with --genotype and --out")
    return read_train_checkpoint(run.checkpoint, "--resume")


def _kept(run: RunDir, epochs_done: int) -> str:
    if run.checkpoint.is_file():
        return f"the last good checkpoint {run.checkpoint} ({epochs_done} epoch(s) done) is kept"
    return "no checkpoint was written"


def _fit(config: TrainConfig, run: RunDir, resume: bool, device: torch.device, ctx: DistContext, log: Log):
    if device.type == "cuda":
        torch.cuda.set_device(device)
    state = _together(ctx, device, lambda: _claim(config, run, resume, ctx))
    data = _together(ctx, device, lambda: load_train_data(config, ctx, device))
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = network_for(config, data.num_classes).to(device)
    peak_lr = config.resolved_lr(ctx.world_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=config.momentum, weight_decay=config.weight_decay)
    start_epoch = 0
    if resume:
        def restore():
            _load_weights(model, state["model"], f"--resume {run.path}: checkpoint.pt does not fit the run's config.json")
            _load_weights(optimizer, state["optimizer"], f"--resume {run.path}: checkpoint.pt's optimizer does not fit the model")
        _together(ctx, device, restore)
        start_epoch = int(state["epoch"])
        state = None  # the model and optimizer hold it now
        log(f"resuming {run.path} after epoch {start_epoch} of {config.epochs}")
    size = describe_model(model, data.input_size)
    log(f"{parse_genotype(config.genotype)}")
    log(f"parameters {size['params_m']:.3f}M (auxiliary head excluded), multiply-adds {size['macs_m']:.1f}M "
        f"at {data.input_size}; {ctx.world_size} process(es) x batch {config.batch_size}, peak lr {peak_lr:g}")
    flag = "--resume" if resume else "--out"

    def prepare():
        if not ctx.is_main:
            return
        try:
            if resume:
                # Drop the lines of epochs the checkpoint does not hold (a kill between the two writes).
                run.rewrite_metrics(r for r in (run.read_metrics() if run.metrics.exists() else []) if r["epoch"] < start_epoch)
            else:
                run.write_config({"train": config.to_json(), "world_size": ctx.world_size,
                                  "global_batch": config.batch_size * ctx.world_size, "peak_lr": peak_lr,
                                  "input_size": list(data.input_size), "num_classes": data.num_classes,
                                  "device": str(device), "torch": torch.__version__, **size})
        except OSError as err:
            raise TrainError(f"{flag} {run.path}: cannot write in the run directory ({err.strerror or err})") from None
        except (ValueError, KeyError, TypeError) as err:
            raise TrainError(f"--resume {run.path}: cannot read its metrics.jsonl ({_one_line(err)})") from None

    _together(ctx, device, prepare)
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if ctx.enabled else model
    record: Dict[str, float] = {}
    if start_epoch >= config.epochs:
        log(f"{run.path} has finished all {config.epochs} epochs; nothing to do")
    for epoch in range(start_epoch, config.epochs):
        seed_epoch(config.seed, epoch, ctx.rank)
        lr = learning_rate(config, epoch, peak_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.drop_path_prob = drop_path_prob(config, epoch)
        started = time.time()
        record = {"epoch": epoch, "lr": lr, "drop_path_prob": model.drop_path_prob}
        record.update(train_one_epoch(trained, data, optimizer, config, ctx, device, epoch))
        record.update(evaluate(model, data, config, ctx, device))
        record["epoch_time_s"] = time.time() - started
        spread = rank_param_spread(model, ctx)
        if spread is not None:
            record["rank_param_spread"] = spread
        if not math.isfinite(record["train_loss"]):  # the same all-reduced value on every rank
            raise TrainError(f"the training loss is {record['train_loss']} in epoch {epoch} (lower --lr, or check the data); "
                             f"training stopped, {_kept(run, epoch)}")
        log(f"epoch {epoch}: lr {lr:.4g} train loss {record['train_loss']:.4f} top-1 {100 * record['train_top1']:.2f}% | "
            f"test top-1 {100 * record['test_top1']:.2f}% top-5 {100 * record['test_top5']:.2f}% ({record['epoch_time_s']:.1f}s)")

        def save():
            if not ctx.is_main:
                return
            checkpoint = {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "config": config.to_json(), "num_classes": data.num_classes}
            bad = first_nonfinite(checkpoint)
            if bad is not None:
                # Saving it would replace the last good checkpoint by one that cannot be trained on.
                raise TrainError(f"{bad} is not finite after epoch {epoch} (training diverged: lower --lr); "
                                 f"training stopped without saving it, {_kept(run, epoch)}")
            try:
                run.append_metrics(record)
            except OSError as err:
                raise TrainError(f"{flag} {run.path}: cannot append to metrics.jsonl ({err.strerror or err}); "
                                 f"training stopped, {_kept(run, epoch)}") from None
            try:
                run.save_checkpoint(checkpoint)
            except CheckpointError as err:  # a full disk, say: the previous checkpoint is intact
                then = f": free space, then continue with sdarts-train --resume {run.path}" if run.checkpoint.is_file() else ""
                raise CheckpointError(f"{flag} {run.path}: {err}; training stopped{then}") from None

        _together(ctx, device, save)
    return record


def evaluate_checkpoint(path: os.PathLike, data_dir: Optional[str] = None, device: Optional[str] = None) -> Dict[str, float]:
    """Top-1/top-5 of a ``sdarts-train`` checkpoint on its dataset's test split (one process).
    TrainError / DataError (one line, naming ``--evaluate``, ``--data-dir`` or ``--device``) for
    a missing, unreadable or foreign checkpoint, missing data or a device not here."""
    check_device(device)
    state = read_train_checkpoint(path, "--evaluate")
    try:
        config = TrainConfig.from_json(state["config"])
        parse_genotype(config.genotype)
    except (TypeError, ValueError, AttributeError) as err:
        raise TrainError(f"--evaluate {os.fspath(path)}: its training settings are invalid ({_one_line(err)})") from None
    if data_dir is not None:
        config = TrainConfig.from_json({**config.to_json(), "data_dir": data_dir})
    problem = data_problem(config)
    if problem:
        raise DataError(problem)
    ctx = DistContext()
    dev = pick_device(device, ctx)
    data = load_train_data(config, ctx, dev)
    model = network_for(config, data.num_classes).to(dev)
    _load_weights(model, state["model"], f"--evaluate {os.fspath(path)}: its weights do not fit its own config")
    return {"epoch": int(state["epoch"]), **evaluate(model, data, config, ctx, dev)}
