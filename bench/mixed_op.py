"""Microbenchmark of the mixed-op engine: forward + backward, speed, bandwidth and memory.

Three cases, each at the real search shapes, for eager PyTorch, ``torch.compile`` of that
eager code, and every available engine backend:

  sum   one mixed edge sum: ``mixed_sum`` over K given branch tensors (the weights, and the
        branches, need gradients) against ``sum(w[k] * b[k])``.
  node  NAS-Bench-201 node 3, the sum of 3 edges: per edge the two conv outputs are given,
        ``skip_connect`` and ``avg_pool_3x3`` come from the edge input and ``none`` is
        ``0 * x`` (as the original code writes it).  Engine: one ``mixed_edge`` call per edge.
  edge  a whole ``MixedOp`` (candidates' convolutions and BatchNorms included):
        ``fused=False`` (the plain ``sum(w * op(x))``) against ``fused=True`` per backend.

Shapes (N, C, H, W) and K: NB201's three stages 64x16x32x32, 64x32x16x16, 64x64x8x8 with
K=5; DARTS' first cells 64x16x32x32 with K=8; and an ImageNet-scale DARTS edge,
96x64x28x28 with K=8: a per-GPU batch of 96 at the 28x28 resolution the ImageNet stem leaves,
with 64 channels (4x the C=16 cells of PC-DARTS' ImageNet search, so that each tensor, 19 MB,
is far beyond any cache and the sum is bound by memory bandwidth).

Minimal bytes (the GB/s column; E = elements of one (N, C, H, W) tensor x element size):
  sum   forward reads K branches, writes 1 output; backward reads g and the K branches,
        writes K branch grads:  (K + 1) + (2K + 1) = (3K + 2) E.
  node  per edge forward reads 2 conv outputs and x, the node writes 1 output; backward
        reads g once and per edge 2 branches and x, writes 2 branch grads and grad x:
        (3*3 + 1) + (1 + 3*3 + 3*3) = 29 E.
The achieved GB/s is set against a measured device copy bandwidth (a large ``dst.copy_(src)``,
bytes read + written, timed the same way).  ``saved MB``: bytes autograd keeps for backward
(unique storages, module parameters excluded); ``peak MB``: peak CUDA memory of one
forward + backward above what was allocated before (GPU only).

    python bench/mixed_op.py --device cuda --json mixed_op.json
    python bench/mixed_op.py --quick            # CPU sanity run, under a minute
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from common import (
    GB,
    MB,
    copy_bandwidth,
    device_name,
    engine_backends,
    last_level_cache_bytes,
    log,
    machine_info,
    markdown_table,
    peak_memory,
    resolve_device,
    set_threads,
    saved_bytes,
    summarize,
    time_calls,
    write_json,
)

import sdarts
from sdarts.primitives import DARTS, NB201

CASES = ("sum", "node", "edge")


@dataclass(frozen=True)
class Shape:
    name: str
    size: Tuple[int, int, int, int]
    space: str  # "nb201" (K=5) or "darts" (K=8)

    @property
    def primitives(self):
        return NB201 if self.space == "nb201" else DARTS

    @property
    def K(self) -> int:
        return len(self.primitives)

    def with_batch(self, batch: Optional[int]) -> "Shape":
        return self if batch is None else Shape(self.name, (batch,) + self.size[1:], self.space)


SHAPES = (
    Shape("nb201-s1", (64, 16, 32, 32), "nb201"),
    Shape("nb201-s2", (64, 32, 16, 16), "nb201"),
    Shape("nb201-s3", (64, 64, 8, 8), "nb201"),
    Shape("darts", (64, 16, 32, 32), "darts"),
    Shape("imagenet", (96, 64, 28, 28), "darts"),
)


# ----------------------------------------------------------------------------- the three cases
# Each case builds one input set per rotation slot and, per implementation, a function
# run(set) doing forward + backward and returning the forward output.


def _rand(shape, device, requires_grad=True):
    return torch.randn(shape, device=device).requires_grad_(requires_grad)


def _eager_sum(branches: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    return sum(w * b for w, b in zip(weights, branches))


def sum_inputs(shape: Shape, device) -> Dict[str, object]:
    return {
        "branches": [_rand(shape.size, device) for _ in range(shape.K)],
        "weights": torch.rand(shape.K, device=device).requires_grad_(),
        "grad": torch.randn(shape.size, device=device),
    }


def sum_runner(impl: str, shape: Shape) -> Callable[[Dict], torch.Tensor]:
    if impl == "eager":
        forward = _eager_sum
    elif impl == "compile":
        forward = torch.compile(_eager_sum, dynamic=False)
    else:
        def forward(branches, weights):
            return sdarts.mixed_sum(branches, weights, backend=impl)

    def run(s):
        out = forward(s["branches"], s["weights"])
        torch.autograd.grad(out, [s["weights"], *s["branches"]], s["grad"])
        return out

    return run


NODE_EDGES = 3  # node 3 of an NB201 cell takes edges from nodes 0, 1 and 2


def node_inputs(shape: Shape, device) -> Dict[str, object]:
    return {
        "xs": [_rand(shape.size, device) for _ in range(NODE_EDGES)],
        "convs": [[_rand(shape.size, device) for _ in range(2)] for _ in range(NODE_EDGES)],
        "weights": torch.rand(NODE_EDGES, len(NB201), device=device).requires_grad_(),
        "grad": torch.randn(shape.size, device=device),
    }


def _eager_node(xs, convs, weights):
    # NB201 order: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3.
    out = 0
    for x, (c1, c3), w in zip(xs, convs, weights):
        pool = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        out = out + (w[0] * x.mul(0.0) + w[1] * x + w[2] * c1 + w[3] * c3 + w[4] * pool)
    return out


def node_runner(impl: str, shape: Shape) -> Callable[[Dict], torch.Tensor]:
    if impl == "eager":
        forward = _eager_node
    elif impl == "compile":
        forward = torch.compile(_eager_node, dynamic=False)
    else:
        def forward(xs, convs, weights):
            out = None
            for x, branches, w in zip(xs, convs, weights):
                # coef = conv weights, then skip, then pool; `none` adds nothing.
                coef = torch.stack([w[2], w[3], w[1], w[4]])
                edge = sdarts.mixed_edge(branches, coef, x=x, has_skip=True, has_pool=True, backend=impl)
                out = edge if out is None else out + edge
            return out

    def run(s):
        out = forward(s["xs"], s["convs"], s["weights"])
        leaves = [s["weights"], *s["xs"], *(c for pair in s["convs"] for c in pair)]
        torch.autograd.grad(out, leaves, s["grad"])
        return out

    return run


def edge_inputs(shape: Shape, device) -> Dict[str, object]:
    return {
        "x": _rand(shape.size, device),
        "weights": torch.rand(shape.K, device=device).requires_grad_(),
        "grad": torch.randn(shape.size, device=device),
    }


def build_edge(impl: str, shape: Shape, device) -> sdarts.MixedOp:
    torch.manual_seed(0)  # same initial convolution weights for every implementation
    fused = impl not in ("eager", "compile")
    backend = impl if fused else "reference"
    return sdarts.MixedOp(shape.size[1], 1, shape.primitives, backend=backend, fused=fused).to(device)


def edge_runner(impl: str, shape: Shape, module: torch.nn.Module) -> Callable[[Dict], torch.Tensor]:
    forward = torch.compile(module, dynamic=False) if impl == "compile" else module
    params = [p for p in module.parameters() if p.requires_grad]

    def run(s):
        out = forward(s["x"], s["weights"])
        torch.autograd.grad(out, [s["x"], s["weights"], *params], s["grad"])
        return out

    return run


def minimal_bytes(case: str, shape: Shape) -> Optional[int]:
    elem = math.prod(shape.size) * 4  # float32
    if case == "sum":
        return (3 * shape.K + 2) * elem
    if case == "node":
        return 29 * elem
    return None  # a MixedOp's convolutions make a byte floor meaningless


def set_bytes(case: str, shape: Shape) -> int:
    elem = math.prod(shape.size) * 4
    return {"sum": shape.K + 1, "node": 3 * NODE_EDGES + 1, "edge": 2}[case] * elem


# ----------------------------------------------------------------------------- measurement


def implementations(case: str, device: torch.device, compile_cases: Sequence[str]) -> List[str]:
    return ["eager"] + (["compile"] if case in compile_cases else []) + engine_backends(device)


def measure_case(case: str, shape: Shape, device: torch.device, args, copy_gbps: float) -> List[Dict[str, object]]:
    make_inputs = {"sum": sum_inputs, "node": node_inputs, "edge": edge_inputs}[case]
    n_sets = max(1, min(args.max_sets, math.ceil(args.rotate_mb * MB / set_bytes(case, shape))))
    sets = [make_inputs(shape, device) for _ in range(n_sets)]
    rows = []
    eager_ms = eager_out = None
    for impl in implementations(case, device, args.compile_cases):
        row: Dict[str, object] = {"case": case, "shape": shape.name, "size": "x".join(map(str, shape.size)), "K": shape.K, "impl": impl}
        ignore: Sequence[torch.Tensor] = ()
        if impl == "compile":
            torch.compiler.reset()  # a fresh cache per shape: no recompile limits, no stale guards
        if case == "edge":
            module = build_edge(impl, shape, device)
            ignore = list(module.parameters())
            run = edge_runner(impl, shape, module)
        else:
            run = {"sum": sum_runner, "node": node_runner}[case](impl, shape)
        try:
            out = run(sets[0])  # also compiles, for `compile`
        except Exception as err:  # torch.compile can fail in many ways; the row says why
            if impl != "compile":
                raise
            row["skipped"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
            log(f"  {case} {shape.name} compile skipped: {row['skipped']}")
            rows.append(row)
            continue
        out = out.detach()
        if eager_out is None:
            eager_out = out
        else:
            row["max_rel_err"] = ((out.float() - eager_out.float()).abs().max() / eager_out.float().abs().max().clamp_min(1e-12)).item()
            if row["max_rel_err"] > 1e-3:
                log(f"  WARNING {case} {shape.name} {impl}: output differs from eager by {row['max_rel_err']:.2e} (relative)")
        del out
        stats = summarize(time_calls(lambda i: run(sets[i % n_sets]), device, warmup=args.warmup, repeat=args.repeat))
        row.update(stats)
        row["sets"] = n_sets
        nbytes = minimal_bytes(case, shape)
        if nbytes is not None:
            row["gbps"] = nbytes / (stats["ms"] / 1e3) / GB
            row["pct_copy"] = 100.0 * row["gbps"] / copy_gbps
        saved = _guarded(lambda: saved_bytes(lambda: run(sets[0]), ignore=ignore), f"{case} {shape.name} {impl} saved bytes")
        if saved is not None:
            row["saved_mb"] = saved["bytes"] / MB
            row["saved_tensors"] = saved["tensors"]
        peak = peak_memory(lambda: run(sets[0]), device)
        row["peak_mb"] = None if peak is None else peak / MB
        if impl == "eager":
            eager_ms = stats["ms"]
        row["speedup"] = eager_ms / stats["ms"] if eager_ms else None
        rows.append(row)
        log(f"  {case:4s} {shape.name:9s} {impl:9s} {stats['ms']:8.3f} ms")
    return rows


def _guarded(fn, what: str):
    """Saved-bytes hooks can be refused by torch.compile's tracing; report '-' then, not a crash."""
    try:
        return fn()
    except RuntimeError as err:
        log(f"  {what} not measured: {str(err).splitlines()[0][:120]}")
        return None


def saved_ratios(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """Per MixedOp shape and backend: saved bytes of fused=True over fused=False (target <= 0.5)."""
    out = []
    for row in rows:
        if row["case"] != "edge" or row["impl"] in ("eager", "compile") or row.get("saved_mb") is None:
            continue
        eager = next((r for r in rows if r["case"] == "edge" and r["shape"] == row["shape"] and r["impl"] == "eager"), None)
        if eager is None or not eager.get("saved_mb"):
            continue
        out.append({
            "shape": row["shape"], "size": row["size"], "K": row["K"], "impl": row["impl"],
            "unfused_mb": eager["saved_mb"], "fused_mb": row["saved_mb"], "ratio": row["saved_mb"] / eager["saved_mb"],
        })
    return out


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="write every figure and the machine facts here")
    parser.add_argument("--quick", action="store_true",
                        help="sanity run: batch 8, few repeats, no torch.compile, 1 CPU thread (under a minute on 2 CPU cores)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--shapes", nargs="+", choices=[s.name for s in SHAPES], default=[s.name for s in SHAPES])
    parser.add_argument("--batch-size", type=int, default=None, help="override every shape's batch (default: the real ones)")
    parser.add_argument("--compile-cases", nargs="*", choices=CASES, default=None,
                        help="cases that also time torch.compile of the eager code (default: all; none with --quick; "
                             "give the flag alone for none)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 10 GPU, 3 CPU, 1 quick)")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls, median reported (default 50 GPU, 10 CPU, 3 quick)")
    parser.add_argument("--rotate-mb", type=float, default=None,
                        help="rotate among input sets of at least this many MB so caches do not flatter the "
                             "figures (default: 3x the last-level cache, GPU L2 or CPU L3; 0 with --quick)")
    parser.add_argument("--max-sets", type=int, default=32, help="cap on rotated input sets")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def _defaults(args, device: torch.device) -> None:
    gpu = device.type == "cuda"
    if args.quick:
        args.batch_size = args.batch_size or 8
        if args.threads is None and not gpu:
            args.threads = 1  # steady on a busy machine; quick figures are a sanity check only
    if args.compile_cases is None:
        args.compile_cases = [] if args.quick else list(CASES)
    if args.warmup is None:
        args.warmup = 1 if args.quick else (10 if gpu else 3)
    if args.repeat is None:
        args.repeat = 3 if args.quick else (50 if gpu else 10)
    if args.rotate_mb is None:
        cache = last_level_cache_bytes(device)
        args.rotate_mb = 0.0 if args.quick else 3 * (cache if cache else 64 * 2**20) / MB


def main(argv=None) -> Dict[str, object]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    _defaults(args, device)
    set_threads(args.threads)
    torch.manual_seed(0)
    copy_gbps = copy_bandwidth(device, (64 if args.quick else (1024 if device.type == "cuda" else 256)) * 2**20)
    log(f"{device_name(device)}: measured copy bandwidth {copy_gbps:.1f} GB/s")
    result: Dict[str, object] = {
        "machine": machine_info(device),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "copy_gbps": copy_gbps,
        "rows": [],
    }
    shapes = [s.with_batch(args.batch_size) for s in SHAPES if s.name in args.shapes]
    for shape in shapes:
        for case in args.cases:
            result["rows"].extend(measure_case(case, shape, device, args, copy_gbps))
            result["saved_ratios"] = saved_ratios(result["rows"])
            write_json(args.json, result)
    print_tables(result, device)
    return result


def print_tables(result: Dict[str, object], device: torch.device) -> None:
    columns = [("case", "case"), ("shape", "shape"), ("K", "K"), ("impl", "impl"), ("ms", "ms", 3),
               ("speedup", "x eager"), ("gbps", "GB/s", 1), ("pct_copy", "% copy", 0), ("saved_mb", "saved MB", 1)]
    if device.type == "cuda":
        columns.append(("peak_mb", "peak MB", 1))
    rows = [dict(r, impl=r["impl"] + (" (skipped)" if "skipped" in r else "")) for r in result["rows"]]
    sizes = ", ".join(dict.fromkeys(f"{r['shape']} {r['size']}" for r in rows))
    print(f"\n## Mixed-op forward+backward on {device_name(device)}: float32, median of {result['settings']['repeat']}, "
          f"copy bandwidth {result['copy_gbps']:.1f} GB/s (shapes: {sizes})\n")
    print(markdown_table(rows, columns))
    if result.get("saved_ratios"):
        print("\n## Saved for backward by one MixedOp edge: fused / plain sum(w*op(x)) (target <= 0.5)\n")
        print(markdown_table(result["saved_ratios"], [("shape", "shape"), ("size", "N x C x H x W"), ("K", "K"),
                                                       ("impl", "backend"), ("unfused_mb", "plain MB", 1),
                                                       ("fused_mb", "fused MB", 1), ("ratio", "ratio", 3)]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
