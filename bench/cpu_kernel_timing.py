"""Time the C++ CPU mixed-sum kernel (sdarts._C) against the PyTorch reference.

Forward + backward of one mixed edge, 64x16x32x32, B=2 branches + skip + pool,
scale/shift on, float32; median of 20 runs after warm-up.  Usage:
    python bench/cpu_kernel_timing.py [--layout nchw|cl|both] [--dtype float32|bfloat16|float16] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sdarts.ops import reference as R


def _time_ms(fn, reps: int = 20, warmup: int = 3) -> tuple[float, float]:
    """(median, min) wall time in ms; the min shows what a busy machine hides."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layout", choices=["nchw", "cl", "both"], default="both")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--shape", default="64,16,32,32")
    ap.add_argument("--branches", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from sdarts import _C
    except ImportError as e:  # noqa: F841
        raise SystemExit(f"sdarts._C is not built: {e}")

    dtype = getattr(torch, args.dtype)
    n, c, h, w = (int(v) for v in args.shape.split(","))
    nb = args.branches
    layouts = ["nchw", "cl"] if args.layout == "both" else [args.layout]
    print(f"shape {n}x{c}x{h}x{w}, B={nb} + skip + pool, scale/shift, {args.dtype}, "
          f"{torch.get_num_threads()} threads, median of 20 (ms)")
    for layout in layouts:
        fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
        g = torch.Generator().manual_seed(0)
        mk = lambda: torch.randn(n, c, h, w, generator=g).to(dtype).contiguous(memory_format=fmt)  # noqa: E731
        branches = [mk() for _ in range(nb)]
        x, grad = mk(), mk()
        coef = torch.randn(nb + 2, generator=g)
        scale, shift = torch.randn(nb, c, generator=g), torch.randn(nb, c, generator=g)

        def ref_step():
            R.mixed_forward(branches, coef, scale, shift, x, True, True)
            R.mixed_backward(grad, branches, coef, scale, x, True, True, True, True)

        def cpp_step():
            _C.mixed_forward_cpu(branches, coef, scale, shift, x, True, True)
            _C.mixed_backward_cpu(grad, branches, coef, scale, x, True, True, True, True)

        rows = {
            "reference fwd": _time_ms(lambda: R.mixed_forward(branches, coef, scale, shift, x, True, True)),
            "reference bwd": _time_ms(lambda: R.mixed_backward(grad, branches, coef, scale, x, True, True, True, True)),
            "reference f+b": _time_ms(ref_step),
            "sdarts._C fwd": _time_ms(lambda: _C.mixed_forward_cpu(branches, coef, scale, shift, x, True, True)),
            "sdarts._C bwd": _time_ms(lambda: _C.mixed_backward_cpu(grad, branches, coef, scale, x, True, True, True, True)),
            "sdarts._C f+b": _time_ms(cpp_step),
        }
        for name, (med, best) in rows.items():
            print(f"  {layout:4s} {name}: {med:8.3f}   (min {best:.3f})")
        print(f"  {layout:4s} speed-up f+b: {rows['reference f+b'][0] / rows['sdarts._C f+b'][0]:.2f}x median, "
              f"{rows['reference f+b'][1] / rows['sdarts._C f+b'][1]:.2f}x min")


if __name__ == "__main__":
    main()
