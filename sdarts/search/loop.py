"""The search loop, written once for every strategy and search space.

Per epoch: train on the search half with the strategy's step (figures accumulated on the
device, read back only every ``log_every`` steps for the progress bar), measure the supernet
on the other half without autograd, derive the genotype, look it up in the benchmark table,
and write the epoch's metrics and a checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
import torch.nn as nn
from tqdm import tqdm

from ..spaces import SearchSpace
from ..spaces.base import DERIVE_RULES, Supernet
from ..run import distributed
from ..run.checkpoint import capture_rng_state, first_nonfinite, restore_rng_state
from .graphed_step import GraphedStep
from .metrics import EpochMeter, finite_or_none
from ..run.run_dir import RunDir
from .strategies import Batch, SearchStrategy, StepOutput, full_precision

CHECKPOINT_FORMAT = 1
# A cross-entropy loss this large, or a weight tensor this large in norm, means the search
# diverges (a sane one stays within a few times ln(classes) and weights of norm < 1e3).
DIVERGING_LOSS = 1e3
DIVERGING_WEIGHT_NORM = 1e6


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss (``step`` known) or a non-finite value in the state
    (``where``: weights, alpha, BatchNorm statistics or optimizer state) at an epoch's end."""

    def __init__(self, epoch: int, step: Optional[int], where: Optional[str] = None):
        self.epoch, self.step, self.where = epoch, step, where
        if step is not None:
            message = f"non-finite loss at epoch {epoch}, step {step}"
        else:
            message = f"non-finite value at the end of epoch {epoch} in {where}"
        super().__init__(message)


def divergence(train_loss: Optional[float], weight_norm: float) -> Optional[str]:
    """Why a finite epoch looks like divergence (None if it does not)."""
    if train_loss is not None and train_loss > DIVERGING_LOSS:
        return f"train loss {train_loss:.3g} > {DIVERGING_LOSS:g}"
    if weight_norm > DIVERGING_WEIGHT_NORM:
        return f"a weight tensor of norm {weight_norm:.3g} > {DIVERGING_WEIGHT_NORM:g}"
    return None


@dataclass
class SearchData:
    """Loaders (with ``set_epoch`` and ``len``): ``train`` gives w's batches (the search half);
    ``alpha`` gives alpha's batches when the strategy does not reuse w's (None otherwise);
    ``valid`` is the other half, unaugmented, for the per-epoch supernet accuracy."""

    train: Any
    valid: Any
    alpha: Optional[Any] = None


def _num(value: Optional[float]) -> str:
    return "nan" if value is None else f"{value:.4f}"


def _load_optimizer(optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)`` keeping this run's ``capturable`` (``--cuda-graph``):
    torch takes every group setting from the checkpoint; with this run's flag it also puts
    Adam's step count on the parameters' device, as a captured step needs."""
    own = optimizer.param_groups
    groups = [{**saved, "capturable": own[i]["capturable"]} if i < len(own) and "capturable" in own[i] else saved
              for i, saved in enumerate(state["param_groups"])]
    optimizer.load_state_dict({**state, "param_groups": groups})


def _cycle(loader) -> Iterator:
    # An alpha source shorter than the epoch starts over (same epoch seed: same order again).
    while True:
        yield from loader


class Searcher:
    """Runs a search and checkpoints it.

    Args:
        model: the supernet.  strategy: its :class:`SearchStrategy` (owns both optimizers).
        scheduler: w's learning-rate schedule, stepped once per epoch.
        data: :class:`SearchData`.  space: the :class:`~sdarts.spaces.SearchSpace` record.
        epochs: total epochs.  max_steps_per_epoch: cap on train and evaluation steps.
        log_every: steps between progress-bar updates (the only host synchronisations).
        lookup: maps a derived cell string to benchmark accuracies (or None).
        dist_ctx: this process's place in a multi-process run.
        run_dir: where rank 0 writes metrics and checkpoints (None: nowhere).
        autocast_dtype: evaluate under autocast with this dtype (as the strategy trains).
        progress: show tqdm bars and per-epoch lines (rank 0 only in any case).
        cuda_graph: replay each training step from a CUDA graph (:class:`GraphedStep`; its
            requirements: CUDA, one process, Adam built with ``capturable=True``).
        cuda_graph_strict: with ``cuda_graph``, a failed capture raises
            :class:`~sdarts.search.graphed_step.CudaGraphCaptureError` (the search stops with
            the reason) instead of warning and going on with eager steps.
        derive: the rule of the epoch's ``genotype`` (``DERIVE_RULES``); the cells of every rule
            (and their lookups) are logged too, under ``cells`` and ``benchmarks``.
        probe: ``probe(model, batch_w, batch_alpha) -> {name: float}``, run before every
            ``probe_every``-th step (the gradient correlation); logged under ``grad_correlation``.
        on_epoch: called with each epoch's record after it is written (e.g. TensorBoard).
    """

    def __init__(
        self,
        model: Supernet,
        strategy: SearchStrategy,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        data: SearchData,
        space: SearchSpace,
        *,
        epochs: int,
        max_steps_per_epoch: Optional[int] = None,
        log_every: int = 50,
        lookup: Optional[Callable[[str], Optional[Dict[str, float]]]] = None,
        dist_ctx: distributed.DistContext = distributed.DistContext(),
        run_dir: Optional[RunDir] = None,
        autocast_dtype: Optional[torch.dtype] = None,
        progress: bool = True,
        cuda_graph: bool = False,
        cuda_graph_strict: bool = False,
        derive: str = "argmax",
        probe: Optional[Callable[[Supernet, Batch, Batch], Dict[str, float]]] = None,
        probe_every: Optional[int] = None,
        on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None,
    ):
        if derive not in DERIVE_RULES:
            raise ValueError(f"derive must be one of {DERIVE_RULES}, got {derive!r}")
        if probe is not None and (probe_every is None or probe_every < 1):
            raise ValueError(f"probe_every must be a positive step count with a probe, got {probe_every!r}")
        if strategy.alpha_source != "same" and data.alpha is None:
            raise ValueError(f"strategy {strategy.name!r} takes alpha's batches from {strategy.alpha_source!r}: data.alpha is required")
        self.model = model
        self.strategy = strategy
        self.scheduler = scheduler
        self.data = data
        self.space = space
        self.epochs = epochs
        self.max_steps = max_steps_per_epoch
        self.log_every = max(1, log_every)
        self.lookup = lookup
        self.dist = dist_ctx
        self.run_dir = run_dir if dist_ctx.is_main else None
        self.autocast_dtype = autocast_dtype
        self.progress = progress and dist_ctx.is_main
        self.device = next(model.parameters()).device
        self.reduce = distributed.all_reduce_ if dist_ctx.enabled else None
        self.graphed = (GraphedStep(model, strategy, on_failure="raise" if cuda_graph_strict else "warn")
                        if cuda_graph else None)
        self.derive = derive
        self.probe, self.probe_every = probe, probe_every
        self.on_epoch = on_epoch
        self._probes: List[Dict[str, Any]] = []
        self.history: List[Dict[str, Any]] = []
        self.start_epoch = 0

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": len(self.history),
            "model": self.model.state_dict(),
            "w_optimizer": self.strategy.w_optimizer.state_dict(),
            "alpha_optimizer": self.strategy.alpha_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            "metrics": list(self.history),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}")
        self.model.load_state_dict(state["model"])
        _load_optimizer(self.strategy.w_optimizer, state["w_optimizer"])
        _load_optimizer(self.strategy.alpha_optimizer, state["alpha_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        self.history = list(state["metrics"])
        self.start_epoch = int(state["epoch"])

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> List[Dict[str, Any]]:
        """Search from ``start_epoch`` to ``epochs``; returns every epoch's record."""
        elapsed = self.history[-1]["elapsed_s"] if self.history else 0.0
        for epoch in range(self.start_epoch, self.epochs):
            start = time.perf_counter()
            lr = self.strategy.w_optimizer.param_groups[0]["lr"]
            train = self.train_epoch(epoch)
            valid = self.evaluate()
            self.scheduler.step()
            seconds = time.perf_counter() - start
            elapsed += seconds
            record = self.epoch_record(epoch, lr, train, valid, seconds, elapsed)
            self.history.append(record)
            state = self.state_dict()
            # Only a finite state is a good checkpoint (inf BatchNorm statistics can follow a
            # finite loss): stop before writing one that would fail again on resume.
            bad = first_nonfinite({k: state[k] for k in ("model", "w_optimizer", "alpha_optimizer")})
            if bad is not None:
                self.history.pop()
                raise NonFiniteLoss(epoch + 1, None, bad)
            self._warn_if_diverging(record)
            if self.run_dir is not None:
                # Checkpoint first: a run killed in between rewrites metrics from it on resume.
                self.run_dir.save_checkpoint(state)
                self.run_dir.append_metrics(record)
            if self.on_epoch is not None and self.dist.is_main:
                self.on_epoch(record)
            if self.progress:
                tqdm.write(self.describe_epoch(record))
        return self.history

    def _warn_if_diverging(self, record: Dict[str, Any]) -> None:
        norms = torch._foreach_norm([p.detach() for p in self.model.weight_parameters()])
        reason = divergence(record["train_loss"], float(torch.stack(norms).max()))
        if reason is None:
            return
        record["warning"] = f"diverging: {reason}"
        if self.dist.is_main:
            print(f"sdarts: warning: epoch {record['epoch']}: the search is diverging ({reason}); "
                  "lower --lr or stop it", file=sys.stderr)

    def _batches(self, epoch: int):
        for loader in (self.data.train, self.data.alpha):
            if loader is not None:
                loader.set_epoch(epoch)
        w_batches = iter(self.data.train)
        if self.strategy.alpha_source == "same":
            return ((b, b) for b in w_batches)
        return zip(w_batches, _cycle(self.data.alpha))

    def _steps(self, loader) -> int:
        n = len(loader)
        return n if self.max_steps is None else min(n, self.max_steps)

    def step(self, batch_w: Batch, batch_alpha: Batch) -> StepOutput:
        """One training step: replayed from a CUDA graph with ``cuda_graph``, else eager."""
        if self.graphed is not None:
            return self.graphed(batch_w, batch_alpha)
        return self.strategy.step(self.model, batch_w, batch_alpha)

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        self.model.train()
        steps = self._steps(self.data.train)
        meter = EpochMeter(self.device, self.reduce)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.progress, leave=False, dynamic_ncols=True)
        with bar:
            for step, (batch_w, batch_alpha) in enumerate(itertools.islice(self._batches(epoch), steps)):
                if self.probe is not None and step % self.probe_every == 0:
                    self._probes.append({"step": step, **self.probe(self.model, batch_w, batch_alpha)})
                out = self.step(batch_w, batch_alpha)
                meter.update(out.loss, out.logits, out.targets, step + 1)
                meter.add_weight_grads(out.weight_grads)
                if (step + 1) % self.log_every == 0 or step + 1 == steps:
                    bad = meter.bad_step()
                    if bad is not None:
                        raise NonFiniteLoss(epoch + 1, bad)
                    if self.progress:
                        figures = meter.running_figures()
                        bar.set_postfix(loss=f"{figures['loss']:.3f}", acc=f"{100 * figures['acc']:.1f}%", refresh=False)
                    bar.update((step + 1) - bar.n)
        return meter.summary()

    @torch.inference_mode()
    def evaluate(self) -> Dict[str, Any]:
        """Supernet loss and accuracy on the other half (no autograd, eval-mode BatchNorm)."""
        self.model.eval()
        meter = EpochMeter(self.device, self.reduce)
        criterion = nn.CrossEntropyLoss()
        ctx = torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype else contextlib.nullcontext()
        steps = self._steps(self.data.valid)
        for x, y in itertools.islice(iter(self.data.valid), steps):
            if not len(y):  # a last partial batch smaller than the number of processes
                continue
            with ctx:
                logits = self.model(x)
            meter.update(criterion(full_precision(logits), y), logits, y)
        self.model.train()
        return meter.summary()

    # -- reporting -----------------------------------------------------------------------

    def epoch_record(self, epoch, lr, train, valid, seconds, elapsed) -> Dict[str, Any]:
        cells = {rule: self.space.genotype_str(self.model.genotype(rule)) for rule in DERIVE_RULES}
        genotype = cells[self.derive]
        record: Dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": finite_or_none(train["loss"]),
            "train_acc": 100.0 * train["acc"],
            "valid_loss": finite_or_none(valid["loss"]),
            "valid_acc": 100.0 * valid["acc"],
            "genotype": genotype,
            "derive": self.derive,
            "cells": cells,
            "p": {name: p.tolist() for name, p in self.model.probabilities().items()},
            "dL_dp": train["dL_dp"],
            "time_s": seconds,
            "elapsed_s": elapsed,
        }
        if self.lookup is not None:
            record["benchmarks"] = {rule: self.lookup(cell) for rule, cell in cells.items()}
            record["benchmark"] = record["benchmarks"][self.derive]
        if self.probe is not None:
            record["grad_correlation"], self._probes = self._probes, []
        if self.graphed is not None:
            record["cuda_graph"] = "replayed" if self.graphed.failure is None else f"eager after a failed capture: {self.graphed.failure}"
        if self.dist.enabled:
            record["alpha_rank_spread"] = distributed.alpha_rank_spread(self.model.arch_parameters())
        return record

    def describe_epoch(self, record: Dict[str, Any]) -> str:
        line = (
            f"epoch {record['epoch']}/{self.epochs}  train loss {_num(record['train_loss'])} acc {record['train_acc']:.2f}%  "
            f"valid loss {_num(record['valid_loss'])} acc {record['valid_acc']:.2f}%  {record['time_s']:.1f}s\n"
            f"  cell {record['genotype']}"
        )
        bench = record.get("benchmark")
        if bench:
            line += "  " + " ".join(f"{k} {v:.2f}" if k != "index" else f"(NB201 #{v})" for k, v in bench.items())
        return line
