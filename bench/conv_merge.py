"""Is merging the candidate convolutions that share one ReLU input worth it?

One of issue 5's speed options.  Where it could apply in the search spaces:

* ``edges``: the same candidate on every edge leaving a node reads the same relu(x) (NB201
  node 0 feeds three edges, each with a 1x1 and a 3x3 ReLU-Conv-BN).  One convolution with the
  edges' weights concatenated (E*C output channels), then a split: no extra FLOPs, E times
  fewer convolution launches forward and backward.
* ``kernels``: NB201's 1x1 and 3x3 of one edge, the 1x1 zero-padded into the 3x3: one
  launch instead of two, at 9/5 of the FLOPs.

Each case is timed forward + backward (weights and input gradients, as in a search step)
against the separate convolutions, on contiguous and channels_last inputs; on a GPU also as
CUDA-graph replays (what ``--cuda-graph`` pays, launches nearly free).  Before anyone
changes the supernets for it: the merged convolution must win here, on the target device.

    python bench/conv_merge.py --device cpu --threads 2
    python bench/conv_merge.py --device cuda --json conv_merge.json
"""

from __future__ import annotations

import argparse
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F

from common import device_name, log, machine_info, markdown_table, resolve_device, set_threads, summarize, time_calls, write_json

# (name, batch, channels, size, edges sharing the input): NB201's three stages at batch 64.
SHAPES = {"nb201-s1": (64, 16, 32), "nb201-s2": (64, 32, 16), "nb201-s3": (64, 64, 8)}


def _fwd_bwd(outputs: Callable[[], Sequence[torch.Tensor]]) -> Callable[[], None]:
    """Forward ``outputs()`` and backward a gradient of ones through every output."""

    def step():
        outs = list(outputs())
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    return step


def separate_and_merged(case: str, x: torch.Tensor, edges: int) -> Dict[str, Callable[[], None]]:
    """fwd+bwd closures of the separate convolutions and of their merged form (same outputs)."""
    C = x.shape[1]
    dev, dtype = x.device, x.dtype
    if case == "edges":
        weights = [[torch.randn(C, C, k, k, device=dev, dtype=dtype, requires_grad=True) for _ in range(edges)] for k in (1, 3)]

        def separate():
            return [F.conv2d(x, w, padding=w.shape[-1] // 2) for ws in weights for w in ws]

        def merged():
            return [o for ws in weights for o in F.conv2d(x, torch.cat(ws), padding=ws[0].shape[-1] // 2).split(C, 1)]

        def check():
            with torch.no_grad():
                for ws in weights:
                    got = F.conv2d(x, torch.cat(ws), padding=ws[0].shape[-1] // 2).split(C, 1)
                    for w, g in zip(ws, got):
                        torch.testing.assert_close(g, F.conv2d(x, w, padding=w.shape[-1] // 2), rtol=1e-4, atol=1e-4)
    else:  # kernels: one edge's 1x1 zero-padded into its 3x3
        w1 = torch.randn(C, C, 1, 1, device=dev, dtype=dtype, requires_grad=True)
        w3 = torch.randn(C, C, 3, 3, device=dev, dtype=dtype, requires_grad=True)

        def separate():
            return [F.conv2d(x, w1), F.conv2d(x, w3, padding=1)]

        def merged():
            return F.conv2d(x, torch.cat([F.pad(w1, (1, 1, 1, 1)), w3]), padding=1).split(C, 1)

        def check():
            with torch.no_grad():
                a, b = merged()
                torch.testing.assert_close(a, F.conv2d(x, w1), rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(b, F.conv2d(x, w3, padding=1), rtol=1e-4, atol=1e-4)

    check()
    return {"separate": _fwd_bwd(separate), "merged": _fwd_bwd(merged)}


def cuda_graphed(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` captured once as a CUDA graph (warmed up on a side stream first, as torch asks):
    the replay is what a ``--cuda-graph`` search step pays for it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def main(argv=None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--batch-size", type=int, default=None, help="override the batch of every shape (quick checks)")
    parser.add_argument("--edges", type=int, default=3, help="edges leaving one node (NB201 node 0: 3)")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls (default 50 GPU, 10 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 10 GPU, 3 CPU)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads)
    gpu = device.type == "cuda"
    repeat = args.repeat or (50 if gpu else 10)
    warmup = (10 if gpu else 3) if args.warmup is None else args.warmup
    if gpu:
        torch.backends.cudnn.benchmark = True
    result: Dict[str, object] = {"machine": machine_info(device), "settings": vars(args), "rows": []}
    rows: List[Dict[str, object]] = result["rows"]
    for shape in args.shapes:
        N, C, H = SHAPES[shape]
        N = args.batch_size or N
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            torch.manual_seed(0)
            x = torch.randn(N, C, H, H, device=device).contiguous(memory_format=fmt).requires_grad_()
            for case in ("edges", "kernels"):
                fns = separate_and_merged(case, x, args.edges)
                row: Dict[str, object] = {"case": case, "shape": f"{shape} {N}x{C}x{H}x{H}", "layout": layout}
                for name, fn in fns.items():
                    row[f"{name}_ms"] = summarize(time_calls(lambda _: fn(), device, warmup=warmup, repeat=repeat))["ms"]
                row["merged_vs_separate"] = row["merged_ms"] / row["separate_ms"]
                if gpu:
                    try:
                        for name, fn in fns.items():
                            replay = cuda_graphed(fn)
                            row[f"{name}_graph_ms"] = summarize(time_calls(lambda _: replay(), device, warmup=warmup,
                                                                           repeat=repeat))["ms"]
                        row["graph_merged_vs_separate"] = row["merged_graph_ms"] / row["separate_graph_ms"]
                    except RuntimeError as err:  # the eager figures still count
                        row["note"] = f"CUDA graph: {str(err).splitlines()[0][:120]}"
                rows.append(row)
                write_json(args.json, result)
                log(f"  {case:8s} {row['shape']:22s} {layout:14s} separate {row['separate_ms']:8.3f} ms  merged {row['merged_ms']:8.3f} ms")
    what = f"{args.edges} edges' 1x1 and 3x3 as 2 convs instead of {2 * args.edges}"
    print(f"\n## Merged candidate convolutions on {device_name(device)}: fwd+bwd, median of {repeat} "
          f"(edges: {what}; kernels: one edge's 1x1 padded into its 3x3); merged/separate < 1 means merging wins\n")
    columns = [("case", "case"), ("shape", "shape"), ("layout", "layout"), ("separate_ms", "separate ms", 3),
               ("merged_ms", "merged ms", 3), ("merged_vs_separate", "merged / separate", 2)]
    if gpu:
        columns += [("separate_graph_ms", "separate, CUDA graph ms", 3), ("merged_graph_ms", "merged, CUDA graph ms", 3),
                    ("graph_merged_vs_separate", "merged / separate (graph)", 2), ("note", "note")]
    print(markdown_table(rows, columns))
    return result


if __name__ == "__main__":
    main()
