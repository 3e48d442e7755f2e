"""Time one full single-level search step of a whole supernet, for each speed option.

A step is what Single-DARTS does per mini-batch: forward, cross-entropy, backward, grad-norm
clip 5 on the weights, SGD (lr 0.025, momentum 0.9, weight decay 3e-4) on the weights and
Adam (lr 3e-4, betas (0.5, 0.999)) on alpha, both from the same batch.  Inputs are one fixed
random batch already on the device, so data loading is not timed (see search_e2e.py).

Variants (``--variants``; each row says which backend ``auto`` picked), in the default order:
the four that decide the design first, the Triton first-compile ones later:
  plain           the original-code supernet: ``fused=False``, eager, float32, NCHW
  engine          the fused engine, backend ``auto`` (what ``sdarts-search`` runs)
  cuda-graph      engine with the whole step (optimizers included, Adam ``capturable=True``)
                  captured once as a CUDA graph and replayed (GPU only)
  plain-cuda-graph  plain, the whole step captured as a CUDA graph (GPU only): what graphs alone give
  plain-compile   plain + ``torch.compile`` of the model
  engine-<b>      the fused engine with backend b (every available one; reference too)
  channels-last   engine (auto backend) on channels_last tensors
  amp             engine + bfloat16 autocast
  fused-opt       engine + fused SGD/Adam kernels (``fused=True``)
  compile         engine + ``torch.compile`` of the model
  all-fast        channels-last + amp + fused-opt + cuda-graph (GPU only)
  triton-edge     engine with the folded edges' backward tail as two Triton kernels
                  (``MixedOp(edge_kernels="triton")``; off by default until measured)
  cuda-graph-edge cuda-graph + triton-edge (GPU only)
  recompute, recompute-cl, recompute-sep-cl, recompute-1x1, recompute-1x1-cl
                  engine with ``recompute=True`` (the whole edge; + channels-last), or
                  recomputing only the SepConvs (DARTS space, on channels_last) or NB201's 1x1
                  convolutions (their outputs are then redone in the edge's backward)

Reported: ms/step (median after warm-up; CUDA events on GPU), images/s, peak memory (device
memory on GPU; peak RSS of a fresh process per variant on CPU, and what the steps added to the
resident set: peak RSS minus the RSS right before the first step), and the projected wall time of
a 50-epoch search at that speed (``--epoch-images`` per epoch: 25,000 for the CIFAR half split;
for ``darts-imagenet`` 128,116 = 10% of ImageNet-1k train as in PC-DARTS), steps only.
Isolation (``--isolate auto``): on CPU (and for compile variants on GPU) each variant runs in
its own process, so that peaks do not mix and a stuck compile can be timed out; on GPU the
variants run one after another in one worker process (module load, CUDA context and cuDNN
autotuning paid once), which is replaced after any variant that fails, dies or times out, so
that a sticky CUDA error (an illegal address, say) cannot spoil the variants after it.

A row is ``skipped`` (with the reason) only when its variant cannot run here (``unavailable``:
a CUDA-only variant without a GPU, a backend this machine lacks).  A variant that raises (any
``Exception``: Triton's compile and out-of-resources errors derive from it), dies or times out
is ``failed`` with its error, is listed in the result's ``failed``, and makes the script exit
with status 1.  Each row is printed (a markdown table row, under the table's heading printed
first) and saved (the JSON rewritten) as soon as it is measured, so a run cut short by a
timeout keeps every row so far.

Testing the isolation: ``SDARTS_BENCH_FAIL=VARIANT:MODE[,...]`` makes the named variant fail
where it runs (MODE ``raise``: a plain ``Exception`` subclass; ``exit``: the process dies;
``hang``: it sleeps past any timeout).

    python bench/search_step.py --space nb201 --device cuda --json step_nb201.json
    python bench/search_step.py --space darts-imagenet --device cuda --variants plain engine-cuda all-fast
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import (
    MB,
    device_name,
    engine_backends,
    log,
    machine_info,
    markdown_table,
    peak_rss_bytes,
    resolve_device,
    rss_bytes,
    set_threads,
    summarize,
    synchronize,
    time_calls,
    write_json,
)

from sdarts.ops import backends
from sdarts.spaces import build_supernet

SPACES = ("nb201", "darts", "darts-imagenet")
CHILD_MARK = "SEARCH_STEP_RESULT "
SEP_CONVS = ("sep_conv_3x3", "sep_conv_5x5")  # the DARTS candidates that keep most internals


@dataclass(frozen=True)
class Variant:
    name: str
    fused: bool = True
    backend: str = "auto"
    channels_last: bool = False
    amp: bool = False
    fused_opt: bool = False
    compile: bool = False
    cuda_graph: bool = False
    recompute: Union[bool, Tuple[str, ...]] = False  # True, or the candidates to recompute
    triton_edge: bool = False

    def options(self) -> str:
        flags = [k.replace("_", "-") for k in ("channels_last", "amp", "fused_opt", "compile", "cuda_graph", "recompute", "triton_edge")
                 if getattr(self, k)]
        return ", ".join(flags) or "-"


def all_variants() -> Dict[str, Variant]:
    """Every variant by name, whether or not it can run here."""
    engine = Variant("engine")
    # The order is the default run order: what decides the design first (plain against the
    # engine, eager and replayed from a CUDA graph), the Triton first-compile variants later.
    table = {
        "plain": Variant("plain", fused=False, backend="reference"),
        "engine": engine,
        "cuda-graph": replace(engine, name="cuda-graph", cuda_graph=True),
        "plain-cuda-graph": Variant("plain-cuda-graph", fused=False, backend="reference", cuda_graph=True),
    }
    table["all-fast"] = replace(engine, name="all-fast", channels_last=True, amp=True, fused_opt=True, cuda_graph=True)
    table["channels-last"] = replace(engine, name="channels-last", channels_last=True)
    table["amp"] = replace(engine, name="amp", amp=True)
    table["fused-opt"] = replace(engine, name="fused-opt", fused_opt=True)
    table["recompute"] = replace(engine, name="recompute", recompute=True)
    table["recompute-cl"] = replace(engine, name="recompute-cl", recompute=True, channels_last=True)
    table["recompute-sep-cl"] = replace(engine, name="recompute-sep-cl", recompute=SEP_CONVS, channels_last=True)
    table["recompute-1x1"] = replace(engine, name="recompute-1x1", recompute=("nor_conv_1x1",))
    table["recompute-1x1-cl"] = replace(engine, name="recompute-1x1-cl", recompute=("nor_conv_1x1",), channels_last=True)
    for b in ("cuda", "cpu", "reference", "triton"):
        table[f"engine-{b}"] = Variant(f"engine-{b}", backend=b)
    # Triton JIT-compiles on first use (seconds per kernel configuration): late in the order.
    table["cuda-graph-edge"] = replace(engine, name="cuda-graph-edge", cuda_graph=True, triton_edge=True)
    table["triton-edge"] = replace(engine, name="triton-edge", triton_edge=True)
    table["plain-compile"] = Variant("plain-compile", fused=False, backend="reference", compile=True)
    table["compile"] = replace(engine, name="compile", compile=True)
    return table


def default_variants(device: torch.device) -> List[str]:
    """Every variant that runs on ``device``, in table order, without the ``engine-<b>`` that
    duplicates ``engine`` (the backend ``auto`` picks here)."""
    auto = f"engine-{backends.resolve('auto', device, torch.float32)}"
    return [n for n, v in all_variants().items() if runs_on(v, device) and n != auto]


def unavailable(variant: Variant, device: torch.device) -> Optional[str]:
    """Why ``variant`` cannot run on ``device`` here (the only reason a row may be skipped), or None."""
    if variant.cuda_graph and device.type != "cuda":
        return f"needs a CUDA device (CUDA graph capture); not available on {device.type} here"
    if variant.triton_edge and not (device.type == "cuda" and backends.triton_edge_module() is not None):
        # On the CPU it runs only interpreted: far too slow to time.
        return f"needs compiled Triton on a CUDA device; not available on {device.type} here"
    if variant.fused and variant.backend != "auto" and variant.backend not in engine_backends(device):
        return f"backend {variant.backend!r} not available on {device.type} here"
    return None


def runs_on(variant: Variant, device: torch.device) -> bool:
    return unavailable(variant, device) is None


def failure(err: BaseException) -> str:
    """A failed row's error: type and first line of the message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


# ----------------------------------------------------------------------------- one variant


def build(args, variant: Variant, device: torch.device):
    """The supernet, its two optimizers and one fixed batch, laid out as the variant asks."""
    torch.manual_seed(0)
    imagenet = args.space == "darts-imagenet"
    kwargs = dict(activation=args.activation, backend=variant.backend, fused=variant.fused, recompute=variant.recompute,
                  edge_kernels="triton" if variant.triton_edge else "torch")
    if args.space == "nb201":
        if args.layers is not None:
            kwargs["N"] = args.layers
        model = build_supernet("nb201", 10, **kwargs)
    else:
        if args.layers is not None:
            kwargs["layers"] = args.layers
        model = build_supernet("darts", 1000 if imagenet else 10, imagenet_stem=imagenet, **kwargs)
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    weights = list(model.weight_parameters())
    fused = True if variant.fused_opt else None
    w_opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4, fused=fused)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), fused=fused,
                             capturable=variant.cuda_graph)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, 1000 if imagenet else 10, (args.batch_size,), device=device)
    return model, weights, w_opt, a_opt, x, y


def make_step(model: nn.Module, weights, w_opt, a_opt, variant: Variant, device: torch.device, zero_grad: bool):
    forward = torch.compile(model) if variant.compile else model

    def step(x, y):
        if zero_grad:
            w_opt.zero_grad(set_to_none=True)
            a_opt.zero_grad(set_to_none=True)
        # A captured graph must not reuse autocast's cast-weight cache across replays.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.amp, cache_enabled=not variant.cuda_graph):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()
        a_opt.step()
        return loss.detach()

    return step


def captured_step(step, x, y, w_opt, a_opt, warmup: int):
    """Capture ``step`` (forward, backward, both optimizer steps) as one CUDA graph.

    Warm-up runs on a side stream first (as torch.cuda.graphs asks); gradients are set to
    None once before capture, so that the graph's backward writes them afresh each replay.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 3)):
            w_opt.zero_grad(set_to_none=True)
            a_opt.zero_grad(set_to_none=True)
            step(x, y)
    torch.cuda.current_stream().wait_stream(side)
    w_opt.zero_grad(set_to_none=True)
    a_opt.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    static_x, static_y = x.clone(), y.clone()
    with torch.cuda.graph(graph):
        static_loss = step(static_x, static_y)

    def replay(batch_x, batch_y):
        static_x.copy_(batch_x)
        static_y.copy_(batch_y)
        graph.replay()
        return static_loss

    return replay


class InjectedFailure(Exception):
    """What ``SDARTS_BENCH_FAIL=VARIANT:raise`` raises: a plain ``Exception`` subclass, as
    Triton's compile and out-of-resources errors are."""


def injected_failure(name: str) -> None:
    """Fail as ``SDARTS_BENCH_FAIL`` asks for this variant (see the module docstring)."""
    for item in filter(None, os.environ.get("SDARTS_BENCH_FAIL", "").split(",")):
        variant, _, mode = item.partition(":")
        if variant != name:
            continue
        if mode == "exit":
            print(f"injected failure (SDARTS_BENCH_FAIL={item}): process exits", file=sys.stderr, flush=True)
            os._exit(3)
        if mode == "hang":
            time.sleep(3600)
        raise InjectedFailure(f"injected failure (SDARTS_BENCH_FAIL={item})")


def run_variant(args, variant: Variant, device: torch.device) -> Dict[str, object]:
    """Build, warm up and time one variant in this process."""
    injected_failure(variant.name)
    if device.type == "cuda":
        gc.collect()  # the previous in-process variant's model and graph pool go first
        torch.cuda.empty_cache()
        torch.backends.cudnn.benchmark = True  # fixed shapes, as the DARTS code sets it
        torch.cuda.reset_peak_memory_stats(device)
    model, weights, w_opt, a_opt, x, y = build(args, variant, device)
    step = make_step(model, weights, w_opt, a_opt, variant, device, zero_grad=not variant.cuda_graph)
    if variant.cuda_graph:
        step = captured_step(step, x, y, w_opt, a_opt, args.warmup)
    resident_before = rss_bytes() if device.type == "cpu" else None
    losses = []
    times = time_calls(lambda _: losses.append(step(x, y)), device, warmup=args.warmup, repeat=args.steps)
    synchronize(device)
    row: Dict[str, object] = {"variant": variant.name, "options": variant.options(), **summarize(times)}
    row["backend"] = backends.resolve(variant.backend, device, torch.float32) if variant.fused else "-"
    row["loss"] = losses[-1].item()
    if not math.isfinite(row["loss"]):
        log(f"  WARNING {variant.name}: loss is {row['loss']}")
    row["images_per_s"] = args.batch_size / (row["ms"] / 1e3)
    steps_per_epoch = math.ceil(args.epoch_images / args.batch_size)
    row["projected_min"] = args.epochs * steps_per_epoch * row["ms"] / 1e3 / 60
    if device.type == "cuda":
        row["peak_mb"] = torch.cuda.max_memory_allocated(device) / MB
    else:
        rss = peak_rss_bytes()
        row["peak_mb"] = None if rss is None else rss / MB
        # What the steps added to the process (torch's import alone peaks at ~0.8 GB with a
        # CUDA build, the same constant in every variant's peak).
        row["step_mb"] = None if rss is None or resident_before is None else (rss - resident_before) / MB
    row["peak_kind"] = "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS (VmHWM)"
    return row


# ----------------------------------------------------------------------------- isolation


def child_argv(args, name: str) -> List[str]:
    argv = [sys.executable, __file__, "--child", name, "--space", args.space, "--device", args.device_resolved,
            "--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--activation", args.activation, "--epochs", str(args.epochs),
            "--epoch-images", str(args.epoch_images)]
    for flag, value in (("--layers", args.layers), ("--threads", args.threads)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_isolated(args, name: str) -> Dict[str, object]:
    """Run one variant in a fresh process (own peak memory, own timeout).  A child that times
    out or dies without printing its row is a failed row, with the reason."""
    try:
        proc = subprocess.run(child_argv(args, name), capture_output=True, text=True, timeout=args.variant_timeout)
    except subprocess.TimeoutExpired:
        return {"variant": name, "failed": f"timed out after {args.variant_timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"variant": name, "failed": f"exit {proc.returncode}: {tail[:300]}"}


def worker_argv(args) -> List[str]:
    return child_argv(args, "-")[:2] + ["--worker"] + child_argv(args, "-")[4:]


class Worker:
    """A child process that runs the variants named on its stdin one after another and prints
    each row (``CHILD_MARK`` + JSON); it exits after a failed variant.  Its stderr passes
    through to ours (the last lines are kept for the row of a child that dies)."""

    def __init__(self, args):
        self.proc = subprocess.Popen(worker_argv(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.err_tail: "collections.deque[str]" = collections.deque(maxlen=20)
        self._readers = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._readers:
            t.start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            sys.stderr.write(line)
            if line.strip():
                self.err_tail.append(line.rstrip())

    def run(self, name: str, timeout: float) -> Dict[str, object]:
        try:
            self.proc.stdin.write(name + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died before: its end of the pipe is closed; the EOF below says how
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close(kill=True)
                return {"variant": name, "failed": f"timed out after {timeout:.0f} s"}
            if line is None:  # the worker died without a row
                rc = self.proc.wait()
                self._readers[1].join(timeout=5)
                tail = self.err_tail[-1] if self.err_tail else "no output"
                return {"variant": name, "failed": f"exit {rc}: {tail[:300]}"}
            if line.startswith(CHILD_MARK):
                return json.loads(line[len(CHILD_MARK):])
            sys.stderr.write(line)  # anything else the child printed

    def close(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                try:
                    self.proc.stdin.close()
                    self.proc.wait(timeout=30)
                except (OSError, subprocess.TimeoutExpired):
                    self.proc.kill()
        self.proc.wait()


def worker_main(args, device: torch.device) -> None:
    """``--worker``: run the variants named on stdin, one row each; stop after a failure."""
    table = all_variants()
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        try:
            row = run_variant(args, table[name], device)
        except Exception as err:  # noqa: BLE001 - every error becomes the row's verdict
            print(CHILD_MARK + json.dumps({"variant": name, "failed": failure(err)}), flush=True)
            return  # a sticky CUDA error would spoil the next variant: the parent starts a fresh worker
        print(CHILD_MARK + json.dumps(row), flush=True)


def isolation(args, variant: Variant, device: torch.device) -> str:
    """How this variant runs: "process" (a fresh one), "worker" (the shared child) or "inline"."""
    if args.isolate == "auto":
        return "process" if device.type == "cpu" or variant.compile else "worker"
    return {"always": "process", "never": "inline", "worker": "worker"}[args.isolate]


def measure(args, name: str, variant: Variant, device: torch.device, pool: Dict[str, Worker]) -> Dict[str, object]:
    """One row: timed, or failed with its error.  A variant that raises (out of memory and
    Triton's compile errors included) is a failure to report, never a skip: skips are decided
    by `unavailable` alone.  ``pool`` holds the worker process, if one is running."""
    how = isolation(args, variant, device)
    if how == "process":
        return run_isolated(args, name)
    if how == "worker":
        worker = pool.get("worker") or pool.setdefault("worker", Worker(args))
        row = worker.run(name, args.variant_timeout)
        if "failed" in row:
            pool.pop("worker").close(kill=True)  # never reused after a failure
        return row
    try:
        return run_variant(args, variant, device)
    except Exception as err:  # noqa: BLE001 - every error becomes the row's verdict
        log(f"  {name}: FAILED {failure(err)}")
        return {"variant": name, "failed": failure(err)}


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", choices=SPACES, default="nb201",
                        help="darts-imagenet: the DARTS supernet with the ImageNet stem at 224x224, 1000 classes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="write every figure and the machine facts here")
    parser.add_argument("--variants", nargs="+", metavar="NAME", default=None,
                        help="which variants to time (default: all that apply on the device; see above)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 (96 per GPU for darts-imagenet)")
    parser.add_argument("--image-size", type=int, default=None, help="default 32 (224 for darts-imagenet)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 30 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 GPU, 2 CPU)")
    parser.add_argument("--activation", choices=("sigmoid", "softmax"), default="sigmoid")
    parser.add_argument("--layers", type=int, default=None,
                        help="override the supernet depth (NB201 cells per stage, DARTS cells); for quick checks")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of the projected search time")
    parser.add_argument("--epoch-images", type=int, default=None,
                        help="images per epoch for the projection (default 25000; 128116 for darts-imagenet)")
    parser.add_argument("--isolate", choices=("auto", "always", "worker", "never"), default="auto",
                        help="always: each variant in a fresh process; worker: one child process for the variants, "
                        "replaced after a failure; never: in this process; auto (default): always on CPU and for "
                        "compile variants, worker for the rest on GPU")
    parser.add_argument("--variant-timeout", type=float, default=600.0,
                        help="seconds allowed to a variant run in a child process")
    parser.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: variants from stdin
    args = parser.parse_args(argv)
    imagenet = args.space == "darts-imagenet"
    args.batch_size = args.batch_size or (96 if imagenet else 64)
    args.image_size = args.image_size or (224 if imagenet else 32)
    args.epoch_images = args.epoch_images or (128116 if imagenet else 25000)
    for name in ("batch_size", "image_size", "epochs", "epoch_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> Dict[str, object]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads)
    args.device_resolved = device.type
    gpu = device.type == "cuda"
    args.steps = args.steps or (30 if gpu else 5)
    args.warmup = (10 if gpu else 2) if args.warmup is None else args.warmup
    table = all_variants()
    if args.child:
        print(CHILD_MARK + json.dumps(run_variant(args, table[args.child], device)), flush=True)
        return {}
    if args.worker:
        worker_main(args, device)
        return {}
    names = args.variants or default_variants(device)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; known: {list(table)}")
    result: Dict[str, object] = {
        "machine": machine_info(device),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "child", "worker")},
        "rows": [],
        "failed": [],
    }
    log(f"{device_name(device)}: {args.space} search step, batch {args.batch_size}, {args.image_size}x{args.image_size}")
    columns = table_columns(args, device)
    print(table_heading(args, device))
    print(markdown_table([], columns))  # header and rule now, each row as it is measured
    sys.stdout.flush()
    pool: Dict[str, Worker] = {}
    try:
        for name in names:
            reason = unavailable(table[name], device)
            row = measure(args, name, table[name], device, pool) if reason is None else {"variant": name, "skipped": reason}
            row.setdefault("options", table[name].options())
            result["rows"].append(row)
            _add_speedups(result["rows"])
            result["failed"] = [r["variant"] for r in result["rows"] if "failed" in r]
            write_json(args.json, result)
            print(markdown_table([table_row(row)], columns).splitlines()[-1], flush=True)
    finally:
        for worker in pool.values():
            worker.close()
    write_json(args.json, result)
    if result["failed"]:
        print(f"\nFAILED variants: {', '.join(result['failed'])}")
    sys.stdout.flush()
    return result


def _add_speedups(rows: List[Dict[str, object]]) -> None:
    plain = next((r for r in rows if r["variant"] == "plain" and "ms" in r), None)
    for r in rows:
        if plain and "ms" in r:
            r["speedup"] = plain["ms"] / r["ms"]
            for key in ("peak_mb", "step_mb"):
                if r.get(key) is not None and plain.get(key):
                    r[key.replace("_mb", "_vs_plain")] = r[key] / plain[key]


def table_columns(args, device: torch.device) -> List[tuple]:
    peak = "peak GPU MB" if device.type == "cuda" else "peak RSS MB"
    columns = [("variant", "variant"), ("backend", "backend"), ("options", "options"), ("ms", "ms/step", 1),
               ("speedup", "x plain"), ("images_per_s", "img/s", 0), ("peak_mb", peak, 0), ("peak_vs_plain", "peak / plain")]
    if device.type == "cpu":
        columns += [("step_mb", "step MB (peak - RSS before)", 0), ("step_vs_plain", "step MB / plain")]
    return columns + [("projected_min", f"{args.epochs} ep (min)", 1), ("note", "note")]


def table_heading(args, device: torch.device) -> str:
    return (f"\n## {args.space} search step on {device_name(device)}: batch {args.batch_size}, "
            f"{args.image_size}x{args.image_size}, median of {args.steps} after {args.warmup} warm-up "
            f"(projection: {args.epoch_images} images/epoch, steps only)\n")


def table_row(row: Dict[str, object]) -> Dict[str, object]:
    note = f"FAILED: {row['failed']}" if "failed" in row else f"skipped: {row['skipped']}" if "skipped" in row else None
    return dict(row, note=note)


if __name__ == "__main__":
    sys.exit(1 if main().get("failed") else 0)
