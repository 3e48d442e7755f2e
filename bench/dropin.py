"""``sdarts.MixedOp`` dropped into foreign DARTS code: time and memory against the original.

The model is ``bench/dropin_darts.py``, a stand-in for a DARTS-family code base (MixedOp,
Cell with preprocessing and 14 edges called as ``op(h, weights[offset + j])``, Network with
softmax alphas).  Variants (``--variants``):

  original            the user's code as it is (NCHW, float32)
  original-cl         the user's code + ``model.to(memory_format=torch.channels_last)``, no
                      sdarts: what the layout alone gives the original
  dropin              the one-line swap ``from sdarts import MixedOp``, defaults (on the CPU:
                      channels_last edges, SepConvs / 1x1 recomputed, inputs shared)
  dropin-issue12      the swap with the engine's settings before issue #12 (``recompute=False,
                      memory_format=None, share_inputs=False``), the case the issue measured
  dropin-no-share     defaults but ``share_inputs=False`` (each edge its own ReLU / layout copy)
  dropin-no-recompute defaults but ``recompute=False``
  dropin-nchw         defaults but ``memory_format=None`` (the caller's NCHW layout)

A step is forward, cross-entropy, backward (the issue's fwd+bwd; gradients set to None).
CPU: ``--rounds`` rounds, each running every variant once in a fresh process, in turn (so
that a change of machine load hits every variant alike, and no variant's freed memory is
another's: several DARTS models in one process keep each other's heap); each process does
``--warmup`` + ``--steps`` steps, each timed; the time is the median of all timed steps, the
memory the median over the rounds of the process's peak RSS (VmHWM) and of what the steps added
to it (peak minus the RSS right before the first step: "step MB", the figure the targets are
about).  CUDA: one process, steps interleaved across the variants, CUDA-event times, and the
peak ``max_memory_allocated`` of one step above what was allocated before it.
Saved-for-backward bytes of one forward (``sdarts.diagnostics.saved_bytes``, parameters
excluded) are counted too: deterministic, load-independent.

``--check`` adds the float64 equivalence figures: the swapped network (defaults, and the
ablations) against the original from the same weights, two training steps, max relative
error of the logits, every weight gradient, the alpha gradients and the BatchNorm running
statistics.

    python bench/dropin.py --space darts --device cpu --threads 2 --check --json bench/results/DATE_cpu_dropin_darts.json
    python bench/dropin.py --space darts --device cuda --batch-size 64 --json ...
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import dropin_darts
from common import (
    MB,
    device_name,
    log,
    machine_info,
    markdown_table,
    peak_rss_bytes,
    resolve_device,
    rss_bytes,
    saved_bytes,
    set_threads,
    summarize,
    synchronize,
    time_calls,
    write_json,
)

CHILD_MARK = "DROPIN_RESULT "


@dataclass(frozen=True)
class Variant:
    name: str
    dropin: bool
    options: Dict[str, object] = field(default_factory=dict)  # sdarts.MixedOp keyword arguments
    channels_last_model: bool = False

    def describe(self) -> str:
        if not self.dropin:
            return "model.to(channels_last)" if self.channels_last_model else "-"
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "defaults"


VARIANTS = {
    v.name: v
    for v in (
        Variant("original", dropin=False),
        Variant("original-cl", dropin=False, channels_last_model=True),
        Variant("dropin", dropin=True),
        Variant("dropin-issue12", dropin=True, options=dict(recompute=False, memory_format=None, share_inputs=False)),
        Variant("dropin-no-share", dropin=True, options=dict(share_inputs=False)),
        Variant("dropin-no-recompute", dropin=True, options=dict(recompute=False)),
        Variant("dropin-nchw", dropin=True, options=dict(memory_format=None)),
    )
}
DEFAULT_VARIANTS = {"cpu": list(VARIANTS), "cuda": ["original", "original-cl", "dropin", "dropin-issue12", "dropin-no-share"]}


# ----------------------------------------------------------------------------- models


def user_module(variant: Variant):
    """The stand-in module as the user has it for ``variant``: the original, or with the
    one-line swap (plus the variant's MixedOp options, as ``functools.partial`` of the class)."""
    module = dropin_darts.load(variant.dropin)
    if variant.dropin and variant.options:
        module.MixedOp = functools.partial(module.MixedOp, **variant.options)
    return module


def build(args, variant: Variant, device: torch.device) -> nn.Module:
    torch.manual_seed(0)  # every variant starts from the same weights (same creation order)
    model = user_module(variant).Network(args.C, 10, args.layers, primitives=args.space)
    model = model.to(device).train()
    if variant.channels_last_model:
        model = model.to(memory_format=torch.channels_last)
    return model


def batch(args, device: torch.device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=g).to(device)
    return x, y


def train_step(model: nn.Module, x, y) -> torch.Tensor:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for p in model.parameters():
        p.grad = None
    return loss.detach()


# ----------------------------------------------------------------------------- CPU: fresh processes


def run_child(args, name: str, device: torch.device) -> Dict[str, object]:
    """In a fresh process: build one variant, ``--warmup`` + ``--steps`` steps, each timed; the
    peak RSS and what the steps added to it; with ``--count-saved`` the saved bytes after."""
    model = build(args, VARIANTS[name], device)
    x, y = batch(args, device)
    before = rss_bytes()
    losses = []
    times = time_calls(lambda _: losses.append(train_step(model, x, y)), device, warmup=args.warmup, repeat=args.steps)
    peak = peak_rss_bytes()
    row: Dict[str, object] = {"times_s": times, "loss": losses[-1].item()}
    if peak is not None and before is not None:
        row.update(peak_mb=peak / MB, step_mb=(peak - before) / MB)
    if args.count_saved:
        row["saved_mb"] = saved_bytes(lambda: model(x), ignore=list(model.parameters()))["bytes"] / MB
    return row


def child(args, name: str, count_saved: bool) -> Dict[str, object]:
    argv = [sys.executable, os.path.abspath(__file__), "--child", name] + args.child_argv + (["--count-saved"] if count_saved else [])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.variant_timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {args.variant_timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"failed": f"exit {proc.returncode}: {tail[:300]}"}


def measure_isolated(args, names: List[str]) -> Dict[str, Dict[str, object]]:
    """``--rounds`` rounds, each running every variant once in its own process, in turn: a
    change of machine load hits every variant alike, and each process's peak is its own."""
    runs: Dict[str, List[Dict[str, object]]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            run = child(args, n, count_saved=r == 0)
            runs[n].append(run)
            log(f"  round {r + 1}/{args.rounds} {n:20s} " + (f"FAILED {run['failed']}" if "failed" in run else
                f"{', '.join(f'{t * 1e3:.0f}' for t in run['times_s'])} ms, step {run.get('step_mb', 0):.0f} MB"))
    rows = {}
    for n, done in runs.items():
        ok = [run for run in done if "failed" not in run]
        if not ok:
            rows[n] = {"failed": done[-1]["failed"]}
            continue
        times = [t for run in ok for t in run["times_s"]]
        rows[n] = {**summarize(times), "ms_min": min(times) * 1e3, "times_s": [round(t, 4) for t in times], "loss": ok[-1]["loss"],
                   "rounds": len(ok), "failed_rounds": len(done) - len(ok)}
        for key in ("peak_mb", "step_mb"):
            values = [run[key] for run in ok if key in run]
            if values:
                rows[n][key] = statistics.median(values)
                rows[n][f"{key}_all"] = [round(v) for v in values]
        if "saved_mb" in done[0]:
            rows[n]["saved_mb"] = done[0]["saved_mb"]
    return rows


# ----------------------------------------------------------------------------- GPU: one process


def measure_in_process(args, names: List[str], device: torch.device, memory: bool) -> Dict[str, Dict[str, object]]:
    """Every variant built in one process, the steps interleaved (variant 1, 2, ..., again);
    on CUDA the peak of one step above what was allocated before it (CPU RSS cannot be split)."""
    models = {n: build(args, VARIANTS[n], device) for n in names}
    x, y = batch(args, device)
    rows: Dict[str, Dict[str, object]] = {}
    for n, model in models.items():
        rows[n] = {"saved_mb": saved_bytes(lambda: model(x), ignore=list(model.parameters()))["bytes"] / MB}
    times: Dict[str, List[float]] = {n: [] for n in names}
    losses: Dict[str, torch.Tensor] = {}
    for r in range(args.warmup + args.steps):
        for n, model in models.items():
            (took,) = time_calls(lambda _: losses.__setitem__(n, train_step(model, x, y)), device, warmup=0, repeat=1)
            if r >= args.warmup:
                times[n].append(took)
    for n, model in models.items():
        rows[n].update(summarize(times[n]), times_s=[round(t, 5) for t in times[n]], loss=losses[n].item())
        if memory and device.type == "cuda":
            gc.collect()
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            train_step(model, x, y)
            synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            rows[n].update(peak_mb=peak / MB, step_mb=(peak - base) / MB)
    return rows


# ----------------------------------------------------------------------------- float64 equivalence


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are all zero)."""
    scale = b.abs().max().item()
    diff = (a.double() - b.double()).abs().max().item()
    return diff / scale if scale > 0 else diff


def equivalence(space: str, options: Optional[Dict[str, object]] = None, *, dtype=torch.float64, batch_size: int = 4,
                C: int = 8, layers: int = 5, image_size: int = 16, steps: int = 2) -> Dict[str, float]:
    """The swapped network (``options`` for sdarts.MixedOp) against the original from the same
    weights, both in ``dtype`` (the swapped one is compared with the original in float64):
    ``steps`` forward + backward passes on the same batch, then the worst relative error of the
    last logits, of the weight and alpha gradients and of the BatchNorm running statistics."""
    torch.manual_seed(0)
    original = dropin_darts.load(False).Network(C, 10, layers, primitives=space).double()
    swapped = user_module(Variant("check", True, dict(options or {}))).Network(C, 10, layers, primitives=space).double()
    dropin_darts.copy_weights(original, swapped)  # in float64, then rounded to dtype
    swapped = swapped.to(dtype)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (batch_size,), generator=g)
    results = []
    for model, inputs in ((original, x), (swapped, x.to(dtype))):
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            logits = model(inputs)
            F.cross_entropy(logits, y).backward()
        arch = {id(p) for p in model.arch_parameters()}
        results.append({
            "logits": logits.detach(),
            "weights": [p.grad for p in model.parameters() if id(p) not in arch],
            "alphas": [p.grad for p in model.arch_parameters()],
            "stats": [b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))],
        })
    want, got = results
    figures = {"logits": _max_rel(got["logits"], want["logits"])}
    for key in ("weights", "alphas", "stats"):
        figures[key] = max(_max_rel(a, b) for a, b in zip(got[key], want[key])) if want[key] else 0.0
    figures["grads_compared"] = len(want["weights"]) + len(want["alphas"])
    return figures


CHECKS = {
    "dropin (defaults)": {},
    "dropin, recompute=True": dict(recompute=True),
    "dropin, memory_format=channels_last": dict(memory_format=torch.channels_last),
    "dropin-issue12": dict(recompute=False, memory_format=None, share_inputs=False),
}


def check_table(space: str) -> List[Dict[str, object]]:
    rows = []
    for label, options in CHECKS.items():
        rows.append({"check": f"{label}, float64", **equivalence(space, options)})
    rows.append({"check": "dropin (defaults), float32 vs float64 original", **equivalence(space, {}, dtype=torch.float32)})
    return rows


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", choices=("darts", "nb201"), default="darts", help="the primitive set of the stand-in's cells")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--C", type=int, default=16, help="channels of the first cells (DARTS search: 16)")
    parser.add_argument("--layers", type=int, default=8, help="cells (DARTS search: 8)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps: per process and round on the CPU (default 2), interleaved rounds on CUDA (default 30)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 per CPU process, 5 CUDA rounds)")
    parser.add_argument("--rounds", type=int, default=3, help="CPU: fresh processes per variant, taken in turn (default 3)")
    parser.add_argument("--isolate", choices=("auto", "always", "never"), default="auto",
                        help="a fresh process per variant and round (auto: on the CPU)")
    parser.add_argument("--variants", nargs="+", metavar="NAME", default=None, help=f"default: all that apply ({', '.join(VARIANTS)})")
    parser.add_argument("--no-memory", action="store_true", help="CUDA: skip the peak-memory step")
    parser.add_argument("--check", action="store_true", help="add the float64 equivalence figures")
    parser.add_argument("--json", metavar="PATH", help="write every figure and the machine facts here")
    parser.add_argument("--variant-timeout", type=float, default=900.0, help="seconds allowed to one process")
    parser.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--count-saved", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("batch_size", "image_size", "C", "layers", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> Dict[str, object]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads)
    gpu = device.type == "cuda"
    isolated = args.isolate == "always" or (args.isolate == "auto" and not gpu)
    args.steps = args.steps or (2 if isolated else 30 if gpu else 5)
    args.warmup = (1 if isolated else 5 if gpu else 1) if args.warmup is None else args.warmup
    if gpu:
        torch.backends.cudnn.benchmark = True  # fixed shapes, as the DARTS code sets it
    if args.child:
        print(CHILD_MARK + json.dumps(run_child(args, args.child, device)), flush=True)
        return {}
    names = args.variants or DEFAULT_VARIANTS[device.type]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")
    args.child_argv = ["--space", args.space, "--device", device.type, "--batch-size", str(args.batch_size),
                       "--image-size", str(args.image_size), "--C", str(args.C), "--layers", str(args.layers),
                       "--steps", str(args.steps), "--warmup", str(args.warmup)]
    args.child_argv += ["--threads", str(args.threads)] if args.threads else []
    result: Dict[str, object] = {
        "command": " ".join([os.path.relpath(sys.executable)] + sys.argv) if argv is None else f"main({argv!r})",
        "machine": machine_info(device),
        "load_average_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "child", "child_argv", "count_saved")},
        "isolated": isolated,
        "rows": [],
    }
    log(f"{device_name(device)}: stand-in DARTS network ({args.space} primitives), batch {args.batch_size}, "
        f"{args.layers} cells, C={args.C}, fwd+bwd; load {result['load_average_before']}")
    if args.check:
        result["equivalence"] = check_table(args.space)
        write_json(args.json, result)
    rows = measure_isolated(args, names) if isolated else measure_in_process(args, names, device, not args.no_memory)
    result["rows"] = [dict(variant=n, options=VARIANTS[n].describe(), **rows[n]) for n in names]
    result["failed"] = [r["variant"] for r in result["rows"] if "failed" in r]
    result["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    _add_ratios(result["rows"])
    write_json(args.json, result)
    print_tables(result, args, device)
    return result


def _add_ratios(rows: List[Dict[str, object]]) -> None:
    base = next((r for r in rows if r["variant"] == "original"), None)
    if base is None:
        return
    for r in rows:
        for key in ("ms", "ms_min", "peak_mb", "step_mb", "saved_mb"):
            if r.get(key) is not None and base.get(key):
                r[f"{key.replace('_mb', '')}_vs_original"] = r[key] / base[key]


def print_tables(result: Dict[str, object], args, device: torch.device) -> None:
    mem = "peak GPU MB" if device.type == "cuda" else "peak RSS MB"
    print(f"\n## stand-in DARTS network ({args.space} primitives) on {device_name(device)}: batch {args.batch_size}, "
          f"{args.image_size}x{args.image_size}, {args.layers} cells, C={args.C}, fwd+bwd, {how(result, args)}; "
          f"load average {fmt_load(result['load_average_before'])} before, {fmt_load(result.get('load_average_after'))} after\n")
    columns = [("variant", "variant"), ("options", "MixedOp options"), ("ms", "ms/step", 0), ("ms_vs_original", "time / original"),
               ("ms_min", "fastest step ms", 0), ("ms_min_vs_original", "fastest / original"),
               ("step_mb", "step MB", 0), ("step_vs_original", "step MB / original"), ("peak_mb", mem, 0),
               ("peak_vs_original", "peak / original"), ("saved_mb", "saved MB", 0), ("saved_vs_original", "saved / original")]
    print(markdown_table(result["rows"], columns))
    if result.get("equivalence"):
        print("\n### float64 equivalence (max relative error against the original, same weights, 2 steps)\n")
        keys = ("logits", "weights", "alphas", "stats")
        rows = [{k: f"{v:.1e}" if k in keys else v for k, v in r.items()} for r in result["equivalence"]]
        print(markdown_table(rows, [("check", "check"), ("logits", "logits"), ("weights", "weight grads"),
                                    ("alphas", "alpha grads"), ("stats", "running stats"), ("grads_compared", "grads compared")]))
    sys.stdout.flush()


def how(result, args) -> str:
    if result["isolated"]:
        return (f"{args.rounds} rounds of one fresh process per variant in turn, each {args.warmup} warm-up + {args.steps} timed "
                f"steps; median of the {args.rounds * args.steps} timed steps, memory the median over the rounds")
    return f"median of {args.steps} interleaved rounds after {args.warmup} in one process"


def fmt_load(load) -> str:
    return "-" if not load else "/".join(f"{v:.2f}" for v in load)


if __name__ == "__main__":
    sys.exit(1 if main().get("failed") else 0)
