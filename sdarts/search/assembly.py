"""A whole search from a :class:`SearchConfig`: data, supernet, both optimisers, the strategy,
the run directory, the loop, the derived cell.

``run_search(config)`` is what ``sdarts-search`` calls after parsing its flags, and what a
sweep or a notebook calls directly.  Cheap things are checked before slow ones (settings,
device, run directory, table and split files, a resumed checkpoint; then the dataset).
Problems with the input raise :class:`ConfigError`; a search stopped by non-finite values
(or a failed strict CUDA-graph capture) raises :class:`SearchStopped`; both are one line.
"""

from __future__ import annotations

import contextlib
import platform
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..ops import backends
from ..run import distributed
from ..run.checkpoint import CheckpointError, first_nonfinite
from ..run.device import DeviceError, device_name, pick_device
from ..run.run_dir import RunDir, RunDirError
from ..spaces import SearchSpace, build_supernet, get_space
from .config import (ALPHA_BETAS, ALPHA_SGD_MOMENTUM, ALPHA_WEIGHT_DECAY, IMAGENET_SCALE, W_GRAD_CLIP, W_MOMENTUM, W_WEIGHT_DECAY,
                     ConfigError, SearchConfig, recompute_setting)
from .decision import EdgeDecision, cell_decisions, verdict
from .graphed_step import CudaGraphCaptureError
from .loop import NonFiniteLoss, SearchData, Searcher
from .strategies import STRATEGIES, build_strategy

Lookup = Callable[[str], Optional[Dict[str, float]]]
KNOWN_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


class SearchStopped(RuntimeError):
    """The search stopped before its last epoch (the message says why and what was kept)."""


@dataclass
class SearchResult:
    """What a finished search leaves (also in its run directory: genotype.json, metrics.jsonl)."""

    run_dir: str
    genotype: str  # the derived cell, as the space prints it
    decided: bool
    verdict: str
    decisions: List[EdgeDecision]
    benchmark: Optional[Dict[str, float]]  # the table's accuracies of the cell (NB201 with a table)
    history: List[Dict[str, Any]]  # one record per epoch, as in metrics.jsonl


def _say(text: str) -> None:
    print(f"sdarts-search: {text}", file=sys.stderr)


# -- the run's place: device, processes, run directory --------------------------------------


def resolve_device(name: str, ctx: distributed.DistContext) -> torch.device:
    """``--device`` for this process (:func:`sdarts.run.pick_device`), made CUDA's current device."""
    try:
        device = pick_device(name, ctx.local_rank)
    except DeviceError as err:
        raise ConfigError(str(err)) from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def check_cuda_graph(config: SearchConfig, device: torch.device, ctx: distributed.DistContext) -> None:
    if not config.cuda_graph:
        return
    if device.type != "cuda":
        raise ConfigError(f"--cuda-graph needs a CUDA device, got --device {config.device} ({device})")
    if ctx.enabled:
        raise ConfigError("--cuda-graph runs in one process: the DDP gradient all-reduce is not captured (drop torchrun)")


def claim_run_dir(config: SearchConfig, ctx: distributed.DistContext, resume: bool) -> RunDir:
    """Own the run directory before anything slow: one writer per directory (rank 0 writes)."""
    run = RunDir(config.out)
    if ctx.is_main:
        try:
            run.acquire()
        except RunDirError as err:
            raise ConfigError(f"--{'resume' if resume else 'out'}: {err}") from None
        removed = run.remove_stale_temp_files()
        if removed:
            _say(f"removed {len(removed)} temporary file(s) of a killed write from {config.out}")
    if not resume and run.checkpoint.exists():
        raise ConfigError(f"--out {config.out} already holds a run (continue it with --resume {config.out})")
    return run


def read_resume_state(run: RunDir) -> Dict[str, Any]:
    state = run.load_checkpoint()
    bad = first_nonfinite({k: state.get(k) for k in ("model", "w_optimizer", "alpha_optimizer")})
    if bad is not None:
        raise CheckpointError(f"checkpoint {run.checkpoint} holds a non-finite value in {bad}: resuming would fail again "
                              "(it predates sdarts' finite-state check); start a new run")
    return state


def load_run_config(run_dir: str) -> SearchConfig:
    """The settings a search's run directory was started with (its config.json)."""
    run = RunDir(run_dir)
    if not run.checkpoint.is_file():
        raise ConfigError(f"--resume {run_dir}: no checkpoint.pt there (nothing to resume)")
    try:
        saved = run.read_config()["args"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"--resume {run_dir}: cannot read its config.json ({type(err).__name__}: {err})") from None
    if not isinstance(saved, dict) or "space" not in saved:
        raise ConfigError(f"--resume {run_dir}: not an sdarts-search run (its config.json has no search settings; "
                          "a sdarts-train run resumes with sdarts-train --resume)")
    return SearchConfig.from_saved({**saved, "out": run_dir})


# -- the pieces -----------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_data(config: SearchConfig, ctx: distributed.DistContext, device: torch.device, alpha_source: str):
    """The dataset, and loaders of its search half (w), other half (evaluation) and alpha's source."""
    from ..data.datasets import load_dataset
    from ..data.device_loader import make_loader
    from ..data.splits import search_split

    dataset = load_dataset(config.dataset, data_dir=config.data_dir, download=config.download)
    idx_train, idx_valid = search_split(dataset.num_train, config.seed, split_file=config.split_file,
                                        fraction=config.data_fraction)

    def loader(indices, augment: bool, seed: int, drop_last: bool = True, batch_size: int = config.batch_size):
        return make_loader(dataset, "train", indices, batch_size=batch_size, augment=augment, seed=seed, device=device,
                           drop_last=drop_last, channels_last=config.channels_last, rank=ctx.rank,
                           world_size=ctx.world_size)

    train = loader(idx_train, True, config.seed)
    # Shuffled once (its epoch never changes): a capped evaluation sees a fixed random sample.
    valid = loader(idx_valid, False, config.seed, drop_last=False, batch_size=config.eval_batch_size)
    alpha = None
    if alpha_source == "train":  # other batches of the same half: the same images in another order
        alpha = loader(idx_train, True, config.seed + 1)
    elif alpha_source == "valid":
        alpha = loader(idx_valid, True, config.seed + 2)
    return dataset, SearchData(train=train, valid=valid, alpha=alpha)


def build_model(config: SearchConfig, num_classes: int, device: torch.device) -> nn.Module:
    kwargs: Dict[str, Any] = dict(activation=config.activation, alpha_init=config.alpha_init, backend=config.backend,
                                  fused=not config.no_fused, recompute=recompute_setting(config.recompute),
                                  edge_kernels=config.edge_kernels)
    if config.init_channels is not None:
        kwargs["C"] = config.init_channels
    if config.layers is not None:
        kwargs["N" if config.space == "nb201" else "layers"] = config.layers
    if config.space == "darts":
        kwargs["imagenet_stem"] = config.dataset in IMAGENET_SCALE
    model = build_supernet(config.space, num_classes, **kwargs).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_lookup(path: Optional[str], api: Optional[str] = None, api_file: Optional[str] = None) -> Optional[Lookup]:
    """Each epoch's cell -> its benchmark accuracies (None, with a warning, for a missing cell),
    from the CSV table at ``path`` or through the official API (``api``) in ``api_file``."""
    if path is None and api is None:
        return None
    from ..spaces.nb201.table import ACCURACY_COLUMNS, NB201Table

    if api is not None:
        from ..spaces.nb201.api import BenchmarkAPILookup

        try:
            table = BenchmarkAPILookup.from_file(api_file, api=api)
            table.lookup(KNOWN_CELL)  # a file of another benchmark fails here, not after the first epoch
        except (ValueError, OSError) as err:
            raise ConfigError(str(err)) from None
        except LookupError:
            raise ConfigError(f"--benchmark-file {api_file}: it does not know the cell {KNOWN_CELL} "
                              "(not a NAS-Bench-201 / NATS-Bench topology file?)") from None
    else:
        try:
            table = NB201Table.from_csv(path)
        except (ValueError, OSError) as err:
            raise ConfigError(f"--nb201-table: {err}") from None
    warned = set()

    def lookup(arch: str) -> Optional[Dict[str, float]]:
        try:
            row = table.lookup(arch)
        except LookupError as err:
            if arch not in warned:
                warned.add(arch)
                _say(f"warning: {err}")
            return None
        return {"index": row["index"], **{c: row[c] for c in ACCURACY_COLUMNS}}

    return lookup


def open_tensorboard(config: SearchConfig, run: RunDir, space: SearchSpace):
    """RUN_DIR/tensorboard's logger with ``--tensorboard`` (a resumed run appends to it)."""
    if not config.tensorboard:
        return None
    from .tensorboard_log import TensorBoardLogger

    try:
        return TensorBoardLogger(str(run.path / "tensorboard"), {k: list(v) for k, v in space.edges.items()},
                                 list(space.primitives.names))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_split_file(path: Optional[str]) -> None:
    if path is None:
        return
    from ..data.splits import load_split_file

    try:
        load_split_file(path)
    except (ValueError, OSError) as err:
        raise ConfigError(f"--split-file: {err}") from None


def table_hint() -> Optional[str]:
    import os

    from ..spaces.nb201.table import default_table_path

    path = default_table_path()
    return f"hint: pass --nb201-table {path} to look each derived cell up in NAS-Bench-201" if os.path.isfile(path) else None


def describe_run(config: SearchConfig, command: Sequence[str], device: torch.device, ctx: distributed.DistContext,
                 backend: str, space: SearchSpace) -> Dict[str, Any]:
    import sdarts

    return {
        "args": config.to_json(),
        "command": list(command),
        "versions": {"sdarts": sdarts.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "device": str(device),
        "device_name": device_name(device),
        "backend": backend if not config.no_fused else "plain PyTorch (--no-fused)",
        "edge_kernels": backends.resolve_edge_kernels(config.edge_kernels),
        "world_size": ctx.world_size,
        "batch_per_process": config.batch_size // ctx.world_size,
        "space": {"name": space.name, "ops": list(space.primitives.names), "edges": {k: list(v) for k, v in space.edges.items()}},
        "hyperparameters": config.hyperparameters(),
    }


def build_alpha_optimizer(config: SearchConfig, model: nn.Module) -> torch.optim.Optimizer:
    """alpha's optimizer: Adam (the paper's default) or SGD (its Tables 4 and 5), lr resolved."""
    if config.alpha_optimizer == "sgd":
        return torch.optim.SGD(model.arch_parameters(), lr=config.alpha_lr, momentum=ALPHA_SGD_MOMENTUM, weight_decay=0.0)
    # capturable: Adam keeps its step count on the device, so that a CUDA graph can advance it.
    return torch.optim.Adam(model.arch_parameters(), lr=config.alpha_lr, betas=ALPHA_BETAS, weight_decay=ALPHA_WEIGHT_DECAY,
                            capturable=config.cuda_graph)


def correlation_probe(model: nn.Module, strategy) -> Callable:
    """The gradient correlation (Eq. 8) of the first, middle and last cell's edges, between the
    batch that moves alpha and the one that moves w (the same one for single-level)."""
    from .grad_correlation import default_edges, edge_grad_correlation

    edges = default_edges(model)

    def probe(model, batch_w, batch_alpha):
        device = batch_w[0].device.type
        dtype = strategy.autocast_dtype  # measured in the precision the step trains in (--amp)
        with torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            return edge_grad_correlation(model, batch_alpha, batch_w, edges=edges, criterion=strategy.criterion)

    return probe


def build_searcher(config: SearchConfig, model: nn.Module, data: SearchData, space: SearchSpace, run: RunDir,
                   lookup: Optional[Lookup], ctx: distributed.DistContext, progress: bool,
                   on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None) -> Searcher:
    """Both optimisers (the paper's settings), w's cosine schedule, the strategy and the loop."""
    w_optimizer = torch.optim.SGD(model.weight_parameters(), lr=config.lr, momentum=W_MOMENTUM, weight_decay=W_WEIGHT_DECAY)
    alpha_optimizer = build_alpha_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, T_max=config.epochs, eta_min=0.0)
    amp_dtype = torch.bfloat16 if config.amp else None
    strategy = build_strategy(config.optimizer_level, w_optimizer, alpha_optimizer, grad_clip=W_GRAD_CLIP,
                              autocast_dtype=amp_dtype, grad_sync=distributed.average_grads if ctx.enabled else None)
    probe = correlation_probe(model, strategy) if config.grad_correlation_every is not None else None
    return Searcher(model, strategy, scheduler, data, space, epochs=config.epochs, max_steps_per_epoch=config.max_steps_per_epoch,
                    log_every=config.log_every, lookup=lookup if ctx.is_main else None, dist_ctx=ctx, run_dir=run,
                    autocast_dtype=amp_dtype, progress=progress, cuda_graph=config.cuda_graph,
                    cuda_graph_strict=config.cuda_graph_strict, derive=config.derive, probe=probe,
                    probe_every=config.grad_correlation_every, on_epoch=on_epoch)


# -- the search -----------------------------------------------------------------------------


def run_search(config: SearchConfig, *, resume: bool = False, command: Optional[Sequence[str]] = None,
               progress: bool = True) -> Optional[SearchResult]:
    """Run (or, with ``resume``, continue in ``config.out``) the search ``config`` describes.

    Returns the :class:`SearchResult` on the process that writes the run directory (rank 0),
    None on the others.  ``command``: what to record as the run's command line."""
    config.validate()
    wants_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    ctx = distributed.init_from_env("cuda" if wants_cuda else "cpu")
    run: Optional[RunDir] = None
    try:
        device = resolve_device(config.device, ctx)
        config = config.resolved(device)
        check_cuda_graph(config, device, ctx)
        run = claim_run_dir(config, ctx, resume)
        return _search(config, resume, list(command) if command is not None else ["run_search"], device, ctx, run, progress)
    finally:
        if run is not None:
            run.release()
        distributed.shutdown(ctx)


def _search(config: SearchConfig, resume: bool, command: List[str], device: torch.device, ctx: distributed.DistContext,
            run: RunDir, progress: bool) -> Optional[SearchResult]:
    space = get_space(config.space)
    try:
        backend = backends.resolve(config.backend, device, torch.float32)
        backends.resolve_edge_kernels(config.edge_kernels)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    lookup = build_lookup(config.nb201_table, config.benchmark_api, config.benchmark_file)
    check_split_file(config.split_file)
    tensorboard = open_tensorboard(config, run, space) if ctx.is_main else None
    with tensorboard if tensorboard is not None else contextlib.nullcontext():  # closed on any exit
        state = read_resume_state(run) if resume else None
        seed_everything(config.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolutions once, as DARTS does
        try:
            dataset, data = build_data(config, ctx, device, STRATEGIES[config.optimizer_level].alpha_source)
        except (ValueError, OSError) as err:
            raise ConfigError(f"dataset {config.dataset!r}: {err}") from None
        model = build_model(config, dataset.num_classes, device)
        if ctx.enabled:
            distributed.broadcast_module(model)
        searcher = build_searcher(config, model, data, space, run, lookup, ctx, progress,
                                  on_epoch=tensorboard.log_epoch if tensorboard is not None else None)

        if state is not None:
            try:
                searcher.load_state_dict(state)
            except (KeyError, ValueError, RuntimeError) as err:
                raise CheckpointError(f"checkpoint {run.checkpoint} does not fit this run: {str(err).splitlines()[0]}") from None
            if ctx.is_main:
                run.rewrite_metrics(searcher.history)
                _say(f"resuming {config.out} after epoch {searcher.start_epoch} of {config.epochs}")
        elif ctx.is_main:
            run.write_config(describe_run(config, command, device, ctx, backend, space))
            run.rewrite_metrics([])
            hint = table_hint() if lookup is None and config.space == "nb201" else None
            if hint:
                _say(hint)

        try:
            history = searcher.run()
        except NonFiniteLoss as err:
            done = len(searcher.history)
            kept = f"the last good checkpoint is {run.checkpoint} (epoch {done})" if done else "no checkpoint was written"
            raise SearchStopped(f"{err}; search stopped, {kept}") from None
        except CudaGraphCaptureError as err:
            raise SearchStopped(f"{err}; search stopped (--cuda-graph-strict)") from None
        if not ctx.is_main:
            return None
        return _finish(config, space, model, run, history)


def _finish(config: SearchConfig, space: SearchSpace, model, run: RunDir, history: List[Dict[str, Any]]) -> SearchResult:
    """Write genotype.json: the derived cell, and how decided each of its edges is."""
    genotype = model.genotype(config.derive)
    last = history[-1]
    decisions = cell_decisions(space, model)
    decided, text = all(d.decided for d in decisions), verdict(decisions)
    run.write_genotype({
        "space": config.space, "genotype": space.genotype_json(genotype), "genotype_str": space.genotype_str(genotype),
        "epochs": last["epoch"], "p": last["p"], "benchmark": last.get("benchmark"),
        "derive": config.derive, "cells": last.get("cells"), "benchmarks": last.get("benchmarks"),
        "decided": decided, "verdict": text, "edges": [d.to_json() for d in decisions],
    })
    return SearchResult(run_dir=str(run.path), genotype=space.genotype_str(genotype), decided=decided, verdict=text,
                        decisions=decisions, benchmark=last.get("benchmark"), history=history)
