"""Kernel ops per search step, plain supernet against the engine: a launch count measured on the CPU.

At search shapes (batch 64, 16-64 channels) a GPU step is bound by kernel launches, not by
bytes, so the number of aten ops that do work (``sdarts.diagnostics.kernel_ops``: views and bare
allocations left out) predicts which version is faster on a GPU without one.  The engine's own
kernels are calls into ``sdarts._C`` or Triton and are not aten ops: each edge adds one launch
forward and one to three backward (kernel, then deterministic partial-sum reductions).

``--stats cuda`` (default) counts the BatchNorm statistics as they run on CUDA (one
``batch_norm_stats`` per candidate; emulated here by one ``var_mean``); ``--stats cpu`` counts
the CPU path as it is (~13 ops per candidate, cheap on a CPU).

    python bench/op_count.py --space nb201
    python bench/op_count.py --space darts --layers 2 --top 15
    TRITON_INTERPRET=1 python bench/op_count.py --space nb201 --triton-edge
    python bench/op_count.py --space nb201 --json counts.json   # also the command, date, machine
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections import Counter

import torch
import torch.nn.functional as F

import sdarts.ops.normalized_edge as normalized_edge
from sdarts.diagnostics import kernel_ops
from sdarts.mixed_op import MixedOp
from sdarts.spaces import build_supernet


def cuda_like_batch_stats(branches, eps, need_var=True):
    """One reduction op per candidate, as torch.batch_norm_stats on CUDA, then the stacks (and
    two small ops for 1/sqrt(var + eps), where CUDA spends two to get var back when needed)."""
    moments = [torch.var_mean(b, dim=(0, 2, 3), correction=0) for b in branches]
    var = torch.stack([v for v, _ in moments])
    return torch.stack([m for _, m in moments]), (var + eps).rsqrt_(), var if need_var else var.new_empty(0)


@contextlib.contextmanager
def statistics_counted_as(device: str):
    saved = normalized_edge.batch_stats
    if device == "cuda":
        normalized_edge.batch_stats = cuda_like_batch_stats
    try:
        yield
    finally:
        normalized_edge.batch_stats = saved


def uncounted(module, name: str) -> None:
    """Run ``module.name`` outside the op counter: under TRITON_INTERPRET the interpreter moves
    tensors with aten ops of its own, which a GPU does not launch (the kernels' own launches
    are not aten ops either way)."""
    from torch.utils._python_dispatch import _disable_current_modes

    original = getattr(module, name)

    def call(*args):
        with _disable_current_modes():
            return original(*args)

    setattr(module, name, call)


def build(space: str, fused: bool, layers: int, edge_kernels: str = "torch"):
    torch.manual_seed(0)
    depth = dict(N=layers) if space == "nb201" else dict(layers=layers)
    return build_supernet(space, 10, fused=fused, backend="reference" if not fused else "auto", edge_kernels=edge_kernels,
                          **depth).train()


def count_edges(space: str, layers: int) -> int:
    return sum(isinstance(m, MixedOp) for m in build(space, True, layers).modules())


def count_step(space: str, fused: bool, layers: int, batch: int, edge_kernels: str = "torch") -> Counter:
    model = build(space, fused, layers, edge_kernels)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def step():
        F.cross_entropy(model(x), y).backward()

    step()  # first call builds lazy state (hooks, caches)
    return kernel_ops(step)



def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", choices=("nb201", "darts"), default="nb201")
    parser.add_argument("--layers", type=int, default=None, help="NB201 cells per stage (default 1) / DARTS cells (default 2)")
    parser.add_argument("--batch-size", type=int, default=2, help="the count does not depend on it")
    parser.add_argument("--stats", choices=("cuda", "cpu"), default="cuda", help="count the BatchNorm statistics as on CUDA or as on the CPU")
    parser.add_argument("--triton-edge", action="store_true",
                        help="the edges' statistics and backward tail as Triton kernels (on the CPU: run with "
                        "TRITON_INTERPRET=1)")
    parser.add_argument("--top", type=int, default=0, help="also list the most frequent ops")
    parser.add_argument("--json", metavar="PATH", help="also write the counts, the command, date and machine here")
    args = parser.parse_args(argv)
    layers = args.layers if args.layers is not None else (1 if args.space == "nb201" else 2)
    if args.triton_edge:
        from sdarts.ops import backends

        if backends.triton_edge_module() is None or not backends.is_available("triton", torch.device("cpu")):
            parser.error("--triton-edge needs Triton on this machine (on the CPU: TRITON_INTERPRET=1 in the environment)")
        for name in ("batch_stats", "edge_backward_tail"):
            uncounted(backends.triton_edge_module(), name)
    with statistics_counted_as(args.stats):
        edge_kernels = "triton" if args.triton_edge else "torch"
        counts = {name: count_step(args.space, name == "engine", layers, args.batch_size, edge_kernels) for name in ("plain", "engine")}
    plain, engine = (sum(c.values()) for c in counts.values())
    tail = ", edge statistics and backward tail in Triton (4 launches per edge, not counted)" if args.triton_edge else ""
    print(f"## kernel ops per search step, {args.space} ({layers} {'cells per stage' if args.space == 'nb201' else 'cells'}), "
          f"statistics counted as on {args.stats.upper()}{tail}\n")
    print("| version | aten ops | x plain |\n| --- | --- | --- |")
    print(f"| plain | {plain} | 1.00 |\n| engine | {engine} | {engine / plain:.2f} |")
    if args.top:
        for name, c in counts.items():
            print(f"\n{name}: " + ", ".join(f"{op} {n}" for op, n in c.most_common(args.top)))
    result = {"plain": plain, "engine": engine}
    if args.json:
        from common import machine_info, uncommitted_changes, write_json  # bench/common.py (bench/ is on sys.path when run as a script)

        edges = count_edges(args.space, layers)
        payload = {
            "command": "python " + " ".join(shlex.quote(a) for a in ([*sys.argv] if argv is None else ["bench/op_count.py", *argv])),
            "env": {k: os.environ[k] for k in ("TRITON_INTERPRET", "SDARTS_TRITON_EDGE") if k in os.environ},
            "machine": machine_info(torch.device("cpu")),
            "uncommitted_changes": uncommitted_changes(),
            "settings": {k: v for k, v in vars(args).items() if k != "json"} | {"layers": layers},
            "edges": edges,
            "plain_aten_ops": plain,
            "engine_aten_ops": engine,
            "engine_over_plain": engine / plain,
            "ops_by_name": {name: dict(c.most_common()) for name, c in counts.items()},
        }
        if args.triton_edge:
            launches = 4 * edges  # the edge's statistics and backward tail: 4 Triton kernels per edge
            payload.update(triton_edge_launches_added=launches, engine_total=engine + launches,
                           engine_total_over_plain=(engine + launches) / plain)
        write_json(args.json, payload)
    return result


if __name__ == "__main__":
    main()
