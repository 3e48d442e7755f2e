"""Smoke test of every search-step path: one step of each variant, one line each.

The first stage of ``bench/gpu_check.sh`` after the build: one forward + backward (+ clipping
and both optimizer steps) of every ``bench/search_step.py`` variant at the search shapes, and
one step of the search loop's :class:`~sdarts.search.graphed_step.GraphedStep` in strict mode
(warm-up, capture, one replay: what ``sdarts-search --cuda-graph-strict`` runs), so that a
broken path costs seconds, not the lease.  Each item prints one markdown table row as soon as
it is done: space, variant, ``ok`` / ``FAILED`` (the error's type and first line) /
``skipped`` (why), seconds, loss.

``ok`` means the step ran and its loss is finite.  For the CUDA-graph variants the step is
captured (after the eager warm-up steps ``search_step.captured_step`` makes) and replayed once.
A variant that needs CUDA says ``skipped: needs CUDA (...)`` on a machine without one; one that
names a candidate another space lacks (``recompute-1x1`` in DARTS) is skipped too.  cuDNN
autotuning is left off (one step would pay for it); Triton kernels compile here on first use
and land in Triton's cache, so the step stages after this one do not compile them again.

On CUDA a failing item is followed by a probe of the CUDA context; if the error was sticky
(the context is broken), the remaining items run in a fresh process.  Exit status 1 if any
item FAILED.

    python bench/gpu_smoke.py                     # NB201: every variant + graphed-step; DARTS: the design four
    python bench/gpu_smoke.py --spaces nb201:plain,cuda-graph darts
    python bench/gpu_smoke.py --device cpu --layers 1 --batch-size 2 --image-size 8   # on a CPU, tiny
"""

from __future__ import annotations

import argparse
import gc
import math
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

import search_step
from common import device_name, log, markdown_table, resolve_device, set_threads

GRAPHED_STEP = "graphed-step"
DESIGN = ("plain", "engine", "cuda-graph", "plain-cuda-graph")
DEFAULT_SPACES = ("nb201", "darts:" + ",".join(DESIGN))
COLUMNS = [("space", "space"), ("variant", "variant"), ("status", "status"), ("seconds", "s", 2), ("loss", "loss", 4)]


def items(specs: Sequence[str], with_compile: bool) -> List[Tuple[str, str]]:
    """(space, variant) pairs from ``SPACE[:V1,V2,...]`` specs; a bare space takes every variant
    (compile ones only with ``with_compile``) and ``graphed-step``, in search_step's order with
    ``graphed-step`` after the four variants that decide the design."""
    table = search_step.all_variants()
    out = []
    for spec in specs:
        space, _, names = spec.partition(":")
        if space not in search_step.SPACES:
            raise ValueError(f"--spaces: unknown space {space!r} in {spec!r}; known: {search_step.SPACES}")
        if names:
            chosen = names.split(",")
        else:  # the design four and the search loop's graphed step first, Triton's compiles later
            rest = [n for n, v in table.items() if n not in DESIGN and (with_compile or not v.compile)]
            chosen = list(DESIGN) + [GRAPHED_STEP] + rest
        unknown = [n for n in chosen if n not in table and n != GRAPHED_STEP]
        if unknown:
            raise ValueError(f"--spaces: unknown variants {unknown} in {spec!r}; known: {list(table) + [GRAPHED_STEP]}")
        out += [(space, n) for n in chosen]
    return out


def step_args(args, space: str) -> argparse.Namespace:
    """search_step's settings for ``space`` (its defaults: batch 64 / 96, 32 / 224 pixels)."""
    argv = ["--space", space, "--device", args.device_resolved, "--activation", args.activation]
    for flag, value in (("--batch-size", args.batch_size), ("--image-size", args.image_size), ("--layers", args.layers)):
        if value is not None:
            argv += [flag, str(value)]
    return search_step.parse_args(argv)


def not_applicable(space: str, name: str) -> Optional[str]:
    """Why a variant does not exist in a space (its recompute names another space's candidates)."""
    if name == GRAPHED_STEP:
        return None
    recompute = search_step.all_variants()[name].recompute
    if isinstance(recompute, tuple):
        from sdarts.primitives import DARTS, NB201

        names = (NB201 if space == "nb201" else DARTS).names
        missing = [n for n in recompute if n not in names]
        if missing:
            return f"{', '.join(missing)} is not a candidate of the {space} space"
    return None


def skip_reason(space: str, name: str, device: torch.device) -> Optional[str]:
    reason = not_applicable(space, name)
    if reason is not None:
        return reason
    if name == GRAPHED_STEP:
        return None if device.type == "cuda" else "needs CUDA (CUDA graph capture)"
    variant = search_step.all_variants()[name]
    reason = search_step.unavailable(variant, device)
    if reason is None or device.type == "cuda":
        return reason
    what = ("CUDA graph capture" if variant.cuda_graph else "compiled Triton" if variant.triton_edge
            else f"backend {variant.backend!r}")
    return f"needs CUDA ({what})"


def run_variant_step(sargs, name: str, device: torch.device) -> float:
    """One step of a search_step variant; its loss."""
    search_step.injected_failure(name)
    variant = search_step.all_variants()[name]
    model, weights, w_opt, a_opt, x, y = search_step.build(sargs, variant, device)
    step = search_step.make_step(model, weights, w_opt, a_opt, variant, device, zero_grad=not variant.cuda_graph)
    if variant.cuda_graph:
        step = search_step.captured_step(step, x, y, w_opt, a_opt, warmup=1)
    loss = step(x, y)
    return float(loss.item())  # .item() synchronizes: an asynchronous error surfaces here


def run_graphed_step(sargs, device: torch.device) -> float:
    """The search loop's GraphedStep (strict), Single-DARTS strategy: one eager warm-up step,
    then a capture and its replay; the replayed loss."""
    from sdarts.search.graphed_step import GraphedStep
    from sdarts.search.strategies import build_strategy

    search_step.injected_failure(GRAPHED_STEP)
    variant = search_step.all_variants()["cuda-graph"]
    model, weights, w_opt, a_opt, x, y = search_step.build(sargs, variant, device)
    strategy = build_strategy("single", w_opt, a_opt, grad_clip=5.0)
    step = GraphedStep(model, strategy, warmup=1, on_failure="raise")
    step((x, y), (x, y))  # eager warm-up (creates the optimizer state)
    out = step((x, y), (x, y))  # capture, then the replay of this batch
    loss = float(out.loss.item())
    if step.captures != 1:
        raise RuntimeError(f"expected 1 capture, got {step.captures}")
    return loss


def run_item(args, space: str, name: str, device: torch.device) -> Dict[str, object]:
    row: Dict[str, object] = {"space": space, "variant": name}
    reason = skip_reason(space, name, device)
    if reason is not None:
        row["status"] = f"skipped: {reason}"
        return row
    sargs = step_args(args, space)
    if device.type == "cuda":
        gc.collect()  # the previous item's model and graph pool go first
        torch.cuda.empty_cache()
    start = time.perf_counter()
    try:
        loss = run_graphed_step(sargs, device) if name == GRAPHED_STEP else run_variant_step(sargs, name, device)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss}")
        row["status"], row["loss"] = "ok", loss
    except Exception as err:  # noqa: BLE001 - every error becomes the item's verdict (Triton's too)
        row["status"] = f"FAILED {search_step.failure(err)}"
    row["seconds"] = time.perf_counter() - start
    return row


def cuda_context_ok(device: torch.device) -> bool:
    try:
        torch.cuda.synchronize(device)
        return torch.ones(1, device=device).add_(1).item() == 2.0
    except Exception:  # noqa: BLE001 - any error here means the context is gone
        return False


def specs_of(pairs: Sequence[Tuple[str, str]]) -> List[str]:
    """``SPACE:V1,...`` specs that give exactly ``pairs`` back, in order."""
    specs: List[Tuple[str, List[str]]] = []
    for space, name in pairs:
        if specs and specs[-1][0] == space:
            specs[-1][1].append(name)
        else:
            specs.append((space, [name]))
    return [f"{space}:{','.join(names)}" for space, names in specs]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", default=list(DEFAULT_SPACES), metavar="SPACE[:V1,V2]",
                        help="a space alone: every variant and graphed-step; with a list: those (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--compile", action="store_true", help="also the torch.compile variants (slow first compile)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: search_step's (64; 96 for darts-imagenet)")
    parser.add_argument("--image-size", type=int, default=None, help="default: search_step's (32; 224 for darts-imagenet)")
    parser.add_argument("--layers", type=int, default=None, help="supernet depth override (tiny CPU checks)")
    parser.add_argument("--activation", choices=("sigmoid", "softmax"), default="sigmoid")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-header", action="store_true", help=argparse.SUPPRESS)  # a continuation process
    return parser.parse_args(argv)


def main(argv=None) -> Dict[str, object]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads)
    args.device_resolved = device.type
    todo = items(args.spaces, args.compile)
    if not args.no_header:
        print(f"\n## smoke: one step of every search-step variant on {device_name(device)} "
              f"(batch {args.batch_size or 'default'}, {len(todo)} items)\n")
        print(markdown_table([], COLUMNS), flush=True)
    rows: List[Dict[str, object]] = []
    for i, (space, name) in enumerate(todo):
        row = run_item(args, space, name, device)
        rows.append(row)
        print(markdown_table([row], COLUMNS).splitlines()[-1], flush=True)
        rest = todo[i + 1:]
        if row["status"].startswith("FAILED") and device.type == "cuda" and rest and not cuda_context_ok(device):
            log(f"smoke: the CUDA context is broken after {space} {name}: the {len(rest)} items left run in a fresh process")
            argv = [sys.executable, __file__, "--no-header", "--device", "cuda", "--activation", args.activation, "--spaces",
                    *specs_of(rest)]
            for flag, value in (("--batch-size", args.batch_size), ("--image-size", args.image_size),
                                ("--layers", args.layers), ("--threads", args.threads)):
                if value is not None:
                    argv += [flag, str(value)]
            child = subprocess.run(argv)
            rows.append({"space": "-", "variant": f"{len(rest)} items in a fresh process",
                         "status": "ok" if child.returncode == 0 else f"FAILED (exit {child.returncode})"})
            break
    failed = [f"{r['space']} {r['variant']}" for r in rows if r["status"].startswith("FAILED")]
    counts = {k: sum(r["status"].startswith(k) for r in rows) for k in ("ok", "FAILED", "skipped")}
    print(f"\nsmoke: {counts['ok']} ok, {counts['FAILED']} failed, {counts['skipped']} skipped"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return {"rows": rows, "failed": failed}


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
