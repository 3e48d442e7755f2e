"""Retraining a genotype from scratch: one run directory, one process per device.

::

    RUN_DIR/config.json     {"train": the TrainConfig, then what the run resolved: world size,
                            global batch, peak lr, input size, params_m, macs_m, device, torch}
    RUN_DIR/metrics.jsonl   one JSON object per finished epoch
    RUN_DIR/checkpoint.pt   model, optimizer and config after the last finished epoch (atomic)

Under ``torchrun`` every process trains a DistributedDataParallel replica on its own shard of
each epoch; only rank 0 writes files.  The loaders draw each epoch's order and crops from
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

from ..darts import build_network, parse_genotype
from ..search.checkpoint import load_checkpoint
from ..search.distributed import DistContext, all_reduce_, init_from_env, shutdown
from ..search.run_dir import RunDir
from .augment import cutout
from .complexity import count_macs, count_parameters
from .data import TrainData, load_train_data
from .recipes import TrainConfig, drop_path_prob, learning_rate

Log = Callable[[str], None]


def pick_device(device: Optional[str], ctx: DistContext) -> torch.device:
    """``device`` if given (``"cuda"`` meaning this rank's GPU); else this rank's GPU when
    there is one, else the CPU."""
    chosen = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen.type == "cuda" and chosen.index is None:
        return torch.device("cuda", ctx.local_rank)
    return chosen


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
    epoch's metrics."""
    run = RunDir(out_dir)
    probe = pick_device(device, DistContext())
    ctx = init_from_env(probe.type)
    try:
        return _fit(config, run, resume, pick_device(device, ctx), ctx, log if ctx.is_main else (lambda _: None))
    finally:
        shutdown(ctx)


def _fit(config: TrainConfig, run: RunDir, resume: bool, device: torch.device, ctx: DistContext, log: Log):
    if device.type == "cuda":
        torch.cuda.set_device(device)
    data = load_train_data(config, ctx, device)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = network_for(config, data.num_classes).to(device)
    peak_lr = config.resolved_lr(ctx.world_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=config.momentum, weight_decay=config.weight_decay)
    start_epoch = 0
    if resume:
        state = run.load_checkpoint()
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        log(f"resuming {run.path} after epoch {start_epoch} of {config.epochs}")
    elif run.checkpoint.exists():
        raise FileExistsError(f"{run.path} already holds a run (checkpoint.pt); resume it with --resume or pick another --out")
    size = describe_model(model, data.input_size)
    log(f"{parse_genotype(config.genotype)}")
    log(f"parameters {size['params_m']:.3f}M (auxiliary head excluded), multiply-adds {size['macs_m']:.1f}M "
        f"at {data.input_size}; {ctx.world_size} process(es) x batch {config.batch_size}, peak lr {peak_lr:g}")
    if ctx.is_main and resume:
        # Drop the lines of epochs the checkpoint does not hold (a kill between the two writes).
        run.rewrite_metrics(r for r in (run.read_metrics() if run.metrics.exists() else []) if r["epoch"] < start_epoch)
    elif ctx.is_main:
        run.create()
        run.write_config({"train": config.to_json(), "world_size": ctx.world_size, "global_batch": config.batch_size * ctx.world_size,
                          "peak_lr": peak_lr, "input_size": list(data.input_size), "num_classes": data.num_classes,
                          "device": str(device), "torch": torch.__version__, **size})
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
        if not math.isfinite(record["train_loss"]):
            raise FloatingPointError(f"training loss is {record['train_loss']} in epoch {epoch}; lower --lr or check the data")
        log(f"epoch {epoch}: lr {lr:.4g} train loss {record['train_loss']:.4f} top-1 {100 * record['train_top1']:.2f}% | "
            f"test top-1 {100 * record['test_top1']:.2f}% top-5 {100 * record['test_top5']:.2f}% ({record['epoch_time_s']:.1f}s)")
        if ctx.is_main:
            run.append_metrics(record)
            run.save_checkpoint({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "config": config.to_json(), "num_classes": data.num_classes})
    return record


def evaluate_checkpoint(path: os.PathLike, data_dir: Optional[str] = None, device: Optional[str] = None) -> Dict[str, float]:
    """Top-1/top-5 of a ``sdarts-train`` checkpoint on its dataset's test split (one process)."""
    state = load_checkpoint(path)
    config = TrainConfig.from_json(state["config"])
    if data_dir is not None:
        config = TrainConfig.from_json({**config.to_json(), "data_dir": data_dir})
    ctx = DistContext()
    dev = pick_device(device, ctx)
    data = load_train_data(config, ctx, dev)
    model = network_for(config, data.num_classes).to(dev)
    model.load_state_dict(state["model"])
    return {"epoch": int(state["epoch"]), **evaluate(model, data, config, ctx, dev)}
