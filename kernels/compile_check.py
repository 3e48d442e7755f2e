"""Compile every Triton kernel of sdarts for a GPU architecture, without a GPU.

The tests run the kernels on the CPU under ``TRITON_INTERPRET=1``, which checks what they
compute but not that they compile: the interpreter accepts code the compiler rejects.  This
lowers each kernel, for the constexpr combinations the host code launches, through Triton's
whole pipeline to a cubin for ``--arch`` (ptxas ships with Triton), so a kernel that would
fail to compile on the GPU fails here.

    python -m sdarts.kernels.compile_check                 # sm_90 (H100/H200), every variant
    python -m sdarts.kernels.compile_check --quick         # one variant per kernel and layout

Run it with TRITON_INTERPRET unset (or 0): under the interpreter kernels are not compiled.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import Dict, Iterator, List, Tuple

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import mixed_sum, normalized_edge

# Pointer arguments that are float32 scratch/statistics whatever the data dtype.
_FP32_POINTERS = {
    "coef_ptr", "scale_ptr", "shift_ptr", "part_ptr", "cd_ptr", "gs_ptr", "mean_ptr", "invstd_ptr",
    "dskip_ptr", "dpool_ptr", "a_ptr", "s_ptr", "o_ptr", "gcoef_ptr", "var_ptr",
}
_FLOATS = {"eps", "inv_count"}
_TRITON_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _is_data_pointer(name: str) -> bool:
    return name in ("out_ptr", "x_ptr", "g_ptr", "gx_ptr") or (name[:-1] in ("b", "gb") and name[-1].isdigit())


def signature(fn, dtype: str, constexprs: Dict[str, object]) -> Dict[str, str]:
    """Triton's type string for each argument of ``fn`` (data pointers of ``dtype``)."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif _is_data_pointer(name):
            sig[name] = "*" + _TRITON_DTYPE[dtype]
        elif name in _FP32_POINTERS:
            sig[name] = "*fp32"
        elif name in _FLOATS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def variants(quick: bool) -> Iterator[Tuple[str, object, str, Dict[str, object]]]:
    """(label, kernel, dtype, constexprs) for the combinations the host code launches."""
    dtypes = ["float32"] if quick else ["float32", "bfloat16", "float16"]
    branch_counts = [2] if quick else [1, 2, 6, 8]
    for dtype, cl, nb in itertools.product(dtypes, (False, True), branch_counts):
        tile = dict(CL=cl, BLOCK_C=64 if cl else 16, BLOCK_HW=64 if cl else 256)
        flags = [(True, True, True)] if quick else [(True, True, True), (False, False, False), (True, False, True)]
        for affine, skip, pool in flags:
            yield ("mixed_fwd", mixed_sum._mixed_fwd_kernel, dtype,
                   dict(NUM_BRANCHES=nb, HAS_AFFINE=affine, HAS_SKIP=skip, HAS_POOL=pool, **tile))
            for need_bg in ([True] if quick else [True, False]):
                yield ("mixed_bwd", mixed_sum._mixed_bwd_kernel, dtype,
                       dict(NUM_BRANCHES=nb, HAS_AFFINE=affine, HAS_SKIP=skip, HAS_POOL=pool, NEED_BG=need_bg,
                            NEED_GX=skip or pool, **tile))
        yield ("stats_partial", normalized_edge._stats_partial_kernel, dtype, dict(NUM_BRANCHES=nb, **tile))
        yield ("apply", normalized_edge._apply_kernel, dtype, dict(NUM_BRANCHES=nb, **tile))
    yield ("stats_final", normalized_edge._stats_final_kernel, "float32", dict(BLOCK_C=64))
    yield ("epilogue", normalized_edge._epilogue_kernel, "float32", dict(BLOCK_C=64))


def compile_all(arch: int, quick: bool, num_warps: int = 4) -> List[Tuple[str, str, float, str]]:
    """Compile every variant; returns (label, constexprs, seconds, error or '')."""
    target = GPUTarget("cuda", arch, 32)
    results = []
    for label, fn, dtype, constexprs in variants(quick):
        start = time.perf_counter()
        error = ""
        try:
            src = ASTSource(fn, signature(fn, dtype, constexprs), constexprs=constexprs)
            compiled = triton.compile(src, target=target, options={"num_warps": num_warps})
            if "cubin" not in compiled.asm:
                error = "no cubin produced"
        except Exception as err:  # report every failing variant, not just the first
            error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        config = ", ".join(f"{k}={v}" for k, v in constexprs.items())
        results.append((label, f"{dtype}: {config}", time.perf_counter() - start, error))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (default 90: H100/H200)")
    parser.add_argument("--quick", action="store_true", help="one variant per kernel and layout")
    args = parser.parse_args(argv)
    if getattr(mixed_sum._mixed_fwd_kernel, "arg_names", None) is None or type(mixed_sum._mixed_fwd_kernel).__name__ == "InterpretedFunction":
        parser.error("the kernels were loaded for the interpreter: run with TRITON_INTERPRET unset or 0")
    results = compile_all(args.arch, args.quick)
    failed = [r for r in results if r[3]]
    for label, config, seconds, error in results:
        print(f"{'FAIL' if error else 'ok  '} {label:14s} {seconds:5.1f}s  {config}" + (f"\n     {error}" if error else ""))
    print(f"{len(results) - len(failed)}/{len(results)} kernel variants compiled for sm_{args.arch} (triton {triton.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
