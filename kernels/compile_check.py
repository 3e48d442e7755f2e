"""Compile, for a GPU architecture and without a GPU, exactly the Triton kernel configurations
that the search launches.

The tests run the kernels on the CPU under ``TRITON_INTERPRET=1``, which checks what they
compute but not that they compile (the interpreter accepts code the compiler rejects, and
knows nothing of registers or shared memory).  This lowers each launched configuration
through Triton's whole pipeline to a cubin for ``--arch`` (ptxas ships with Triton), so a
kernel that would fail to compile, or to fit, on the GPU fails here.

Which configurations: they are not listed here but recorded from the real host code.  The
search supernets run one training step (forward, cross-entropy, backward) and one
evaluation forward with ``backend="triton"``, with and without the Triton edge kernels
(``SDARTS_TRITON_EDGE``), on fake CUDA tensors (``torch._subclasses.FakeTensorMode``: shapes,
dtypes and strides, no memory, no GPU), with each kernel's launch object replaced by a
recorder and the multiprocessor count set to ``--sms`` (132: H100/H200 SXM).  The launchers'
own choices (``_choose_blocks``, ``batch_stats``' tiles, the constexpr flags, ``num_warps``)
are therefore what is compiled, at the search shapes:

  nb201           NB201 supernet, batch 64, 32x32 (edges 64x16x32x32, 64x32x16x16, 64x64x8x8)
  darts           DARTS supernet (8 cells, C=16), batch 64, 32x32, with its reduction cells
  darts-imagenet  DARTS supernet with the ImageNet stem, batch 96, 224x224
  api             the public ``mixed_sum`` / ``mixed_edge`` at bench/mixed_op.py's shapes
                  (K=5 and K=8 at 64x16x32x32, K=8 at 96x64x28x28)

each in float32 and bfloat16 (the whole model in bf16: the kernels see bf16 operands, as
under autocast), NCHW and channels_last.  Data pointer types come from the recorded tensors;
integer and float scalars compile generic (``i32``/``i64``, ``fp32``; Triton may specialize
an integer equal to 1 further at run time, which only adds a constant).

    python -m sdarts.kernels.compile_check                 # sm_90, every space, dtype and layout
    python -m sdarts.kernels.compile_check --quick         # nb201 + darts, float32, NCHW (gpu_check's Triton variants)
    python -m sdarts.kernels.compile_check --list          # the recorded configurations, no compiling

Run it with TRITON_INTERPRET unset (or 0): under the interpreter kernels are not compiled.
Works with the Triton of the GPU machine (3.6) and of the CPU machines (3.8).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import mixed_sum, normalized_edge

KERNEL_MODULES = (mixed_sum, normalized_edge)
SPACES = ("nb201", "darts", "darts-imagenet", "api")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LAYOUTS = ("nchw", "channels_last")
_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
                 torch.int64: "i64", torch.int32: "i32", torch.bool: "i1"}
LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas")
_SHAPED = ("out_ptr", "g_ptr", "b0")  # arguments that have the edge's (N, C, H, W)


@dataclass
class Config:
    """One compiled configuration: a kernel, its argument types, constexprs and launch options."""

    kernel: str
    fn: object  # the JITFunction
    signature: Tuple[Tuple[str, str], ...]
    constexprs: Tuple[Tuple[str, object], ...]
    options: Tuple[Tuple[str, int], ...]
    where: Counter = field(default_factory=Counter)  # "space dtype layout pass: shape" -> launches

    @property
    def key(self):
        return (self.kernel, self.signature, self.constexprs, self.options)

    def describe(self) -> str:
        pointers = sorted({t for _, t in self.signature if t.startswith("*") and t != "*fp32"}) or ["*fp32"]
        flags = ", ".join(f"{k}={v}" for k, v in self.constexprs)
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        return f"{'/'.join(pointers)}: {flags}; {opts}"


def _arg_type(value) -> str:
    if torch.is_tensor(value):
        return "*" + _TRITON_DTYPE[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"cannot type a kernel argument of type {type(value).__name__}")


class Recorder:
    """Stands in for a kernel's JITFunction: ``kernel[grid](*args, **kwargs)`` records the call."""

    def __init__(self, name: str, fn, sink: Dict[tuple, Config], context: List[str]):
        self.name, self.fn, self.sink, self.context = name, fn, sink, context

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.record(args, kwargs)

    def record(self, args, kwargs) -> None:
        constexprs = {k: v for k, v in kwargs.items() if k not in LAUNCH_OPTIONS}
        options = {"num_warps": kwargs.get("num_warps", 4), **{k: kwargs[k] for k in ("num_stages", "num_ctas") if k in kwargs}}
        runtime = [n for n in self.fn.arg_names if n not in constexprs]
        if len(args) != len(runtime):
            raise TypeError(f"{self.name}: {len(args)} positional arguments for {len(runtime)} runtime parameters")
        values = dict(zip(runtime, args))
        signature = tuple((n, "constexpr" if n in constexprs else _arg_type(values[n])) for n in self.fn.arg_names)
        config = Config(self.name, self.fn, signature, tuple(sorted(constexprs.items())), tuple(sorted(options.items())))
        config = self.sink.setdefault(config.key, config)
        # The edge's shape, from the operand that has it (the partials/statistics kernels have none).
        shape = next((tuple(values[n].shape) for n in _SHAPED if torch.is_tensor(values.get(n))), None)
        config.where[f"{self.context[0]}" + (f": {'x'.join(map(str, shape))}" if shape else "")] += 1


@contextlib.contextmanager
def recording(sink: Dict[tuple, Config], context: List[str], sms: int) -> Iterator[None]:
    """Kernels replaced by recorders, the SM count set to ``sms``, batch_norm_stats given a
    meta kernel (FakeTensorMode has none), and the Triton backend usable on fake CUDA tensors."""
    saved = []
    for module in KERNEL_MODULES:
        for name in dir(module):
            obj = getattr(module, name)
            if name.endswith("_kernel") and hasattr(obj, "arg_names"):
                saved.append((module, name, obj))
                setattr(module, name, Recorder(name, obj, sink, context))
        if hasattr(module, "_sm_count"):
            saved.append((module, "_sm_count", module._sm_count))
            module._sm_count = lambda device, _n=sms: _n
    try:
        yield
    finally:
        for module, name, obj in saved:
            setattr(module, name, obj)


_LIBRARY = None


def _register_meta_batch_norm_stats() -> None:
    """aten::batch_norm_stats (the CUDA edge statistics without the Triton edge kernels) has no
    meta kernel: give it one, (mean, invstd) float32 of C channels."""
    global _LIBRARY
    if _LIBRARY is not None:
        return
    _LIBRARY = torch.library.Library("aten", "IMPL")

    def meta(x, eps):
        return x.new_empty(x.shape[1], dtype=torch.float32), x.new_empty(x.shape[1], dtype=torch.float32)

    try:
        _LIBRARY.impl("batch_norm_stats", meta, "Meta")
    except RuntimeError as err:  # a torch that has one already
        if "already" not in str(err):
            raise


def _backward(loss: torch.Tensor) -> int:
    """Run the autograd graph of ``loss`` node by node (torch's engine wants a real CUDA device
    for CUDA tensors, fake ones too); returns the nodes run."""
    deps, seen, stack = Counter(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is not None:
                deps[nxt] += 1
                stack.append(nxt)
    def arity(node) -> int:  # how many gradients the node takes (its forward's outputs)
        meta = getattr(node, "_input_metadata", None)
        return len(meta) if meta is not None else 0

    grads = {loss.grad_fn: {0: torch.ones_like(loss)}}
    ready, ran = [loss.grad_fn], 0
    while ready:
        node = ready.pop()
        given = grads.pop(node)
        if type(node).__name__ == "AccumulateGrad":
            continue
        inputs = [given.get(i) for i in range(max(arity(node), max(given) + 1))]
        outputs = node(*inputs) if callable(node) else node.apply(*inputs)  # custom Functions: .apply
        ran += 1
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        for (nxt, index), grad in zip(node.next_functions, outputs):
            if nxt is None:
                continue
            slot = grads.setdefault(nxt, {})
            if grad is not None:
                slot[index] = grad if slot.get(index) is None else slot[index] + grad
            else:
                slot.setdefault(index, None)
            deps[nxt] -= 1
            if deps[nxt] == 0:
                ready.append(nxt)
    return ran


def _supernet_step(space: str, memory_format, edge_kernels: str) -> None:
    """One training step (forward, loss, backward) and one evaluation forward of the space's
    supernet at its search batch and resolution, backend="triton" (edge_kernels: "torch"/"triton")."""
    from sdarts.spaces import build_supernet

    options = dict(backend="triton", edge_kernels=edge_kernels)
    if space == "nb201":
        model, batch, size, classes = build_supernet("nb201", 10, **options), 64, 32, 10
    elif space == "darts":
        model, batch, size, classes = build_supernet("darts", 10, **options), 64, 32, 10
    else:
        model, batch, size, classes = build_supernet("darts", 1000, imagenet_stem=True, **options), 96, 224, 1000
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=memory_format)
    y = torch.randint(0, classes, (batch,))
    model.train()
    _backward(F.cross_entropy(model(x).float(), y))
    model.eval()
    with torch.no_grad():
        model(x)


def _api_calls(memory_format) -> None:
    """bench/mixed_op.py's cases through the public API: mixed_sum (K=5, 8) and mixed_edge with
    skip, pool and per-branch scale/shift, forward and backward."""
    import sdarts

    dtype = torch.get_default_dtype()
    for shape, k in (((64, 16, 32, 32), 5), ((64, 16, 32, 32), 8), ((96, 64, 28, 28), 8)):
        def t():
            return torch.randn(shape).contiguous(memory_format=memory_format).requires_grad_()

        branches, weights = [t() for _ in range(k)], torch.rand(k, requires_grad=True)
        _backward(sdarts.mixed_sum(branches, weights, backend="triton").float().sum())
        x, coef = t(), torch.rand(k + 2, requires_grad=True)
        scale, shift = torch.rand(k, shape[1], dtype=dtype).requires_grad_(), torch.rand(k, shape[1], dtype=dtype).requires_grad_()
        _backward(sdarts.mixed_edge(branches, coef, scale=scale, shift=shift, x=x, has_skip=True, has_pool=True,
                                    backend="triton").float().sum())


def record(spaces: Sequence[str], dtypes: Sequence[str], layouts: Sequence[str], sms: int) -> List[Config]:
    """Every configuration launched by ``spaces`` x ``dtypes`` x ``layouts`` x (Triton edge
    kernels off, on), in first-launch order."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    _register_meta_batch_norm_stats()
    sink: Dict[tuple, Config] = {}
    context = [""]
    saved_default = torch.get_default_dtype()
    with recording(sink, context, sms):
        try:
            for space, dtype, layout, edge in itertools.product(spaces, dtypes, layouts, (False, True)):
                if space == "api" and edge:
                    continue  # the edge kernels are the one-node edge's, not the public API's
                context[0] = f"{space} {dtype} {layout}" + (" triton-edge" if edge else "")
                memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                torch.set_default_dtype(DTYPES[dtype])
                with FakeTensorMode(), torch.device("cuda"):
                    if space == "api":
                        _api_calls(memory_format)
                    else:
                        _supernet_step(space, memory_format, "triton" if edge else "torch")
        finally:
            torch.set_default_dtype(saved_default)
    return list(sink.values())


def compile_config(config: Config, target: GPUTarget) -> Tuple[float, str]:
    """(seconds, error or '') of compiling one configuration to a cubin."""
    start = time.perf_counter()
    try:
        src = ASTSource(config.fn, dict(config.signature), constexprs=dict(config.constexprs))
        compiled = triton.compile(src, target=target, options=dict(config.options))
        error = "" if "cubin" in compiled.asm else "no cubin produced"
    except Exception as err:  # report every failing configuration, not just the first
        text = str(err).strip()
        error = f"{type(err).__name__}: {text.splitlines()[-1] if text else ''}"
    return time.perf_counter() - start, error


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (default 90: H100/H200)")
    parser.add_argument("--sms", type=int, default=132, help="multiprocessors the launchers see (default 132: H100/H200 SXM)")
    parser.add_argument("--quick", action="store_true", help="nb201 and darts, float32, NCHW only")
    parser.add_argument("--spaces", nargs="+", choices=SPACES, default=None, help="default: all (quick: nb201 darts)")
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=None, help="default: both (quick: float32)")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=None, help="default: both (quick: nchw)")
    parser.add_argument("--list", action="store_true", help="print the recorded configurations; compile nothing")
    parser.add_argument("--json", metavar="PATH", help="also write the configurations (and compile results) here")
    args = parser.parse_args(argv)
    if type(mixed_sum._mixed_fwd_kernel).__name__ == "InterpretedFunction" or not hasattr(mixed_sum._mixed_fwd_kernel, "arg_names"):
        parser.error("the kernels were loaded for the interpreter: run with TRITON_INTERPRET unset or 0")
    spaces = args.spaces or (["nb201", "darts"] if args.quick else list(SPACES))
    dtypes = args.dtypes or (["float32"] if args.quick else list(DTYPES))
    layouts = args.layouts or (["nchw"] if args.quick else list(LAYOUTS))
    start = time.perf_counter()
    configs = record(spaces, dtypes, layouts, args.sms)
    launches = sum(sum(c.where.values()) for c in configs)
    print(f"recorded {len(configs)} kernel configurations ({launches} launches) from {', '.join(spaces)} x "
          f"{', '.join(dtypes)} x {', '.join(layouts)}, {args.sms} SMs, in {time.perf_counter() - start:.1f}s")
    target = GPUTarget("cuda", args.arch, 32)
    failed = 0
    rows = []
    for config in configs:
        rows.append({"kernel": config.kernel, "constexprs": dict(config.constexprs), "options": dict(config.options),
                     "signature": dict(config.signature), "launched_at": dict(config.where)})
        where = ", ".join(f"{w} ({n})" for w, n in sorted(config.where.items())[:3])
        more = f" and {len(config.where) - 3} more" if len(config.where) > 3 else ""
        if args.list:
            print(f"     {config.kernel:22s} {config.describe()}  [{where}{more}]")
            continue
        seconds, error = compile_config(config, target)
        failed += bool(error)
        rows[-1].update(seconds=round(seconds, 2), error=error or None)
        print(f"{'FAIL' if error else 'ok  '} {config.kernel:22s} {seconds:5.1f}s  {config.describe()}  [{where}{more}]"
              + (f"\n     {error}" if error else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "sms": args.sms, "spaces": spaces, "dtypes": dtypes, "layouts": layouts,
                       "triton": triton.__version__, "torch": torch.__version__, "compiled": not args.list,
                       "configs": rows}, f, indent=1)
    if not args.list:
        print(f"{len(configs) - failed}/{len(configs)} launched kernel configurations compiled for sm_{args.arch} "
              f"(triton {triton.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
