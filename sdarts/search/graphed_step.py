"""The whole search step replayed from a CUDA graph (``sdarts-search --cuda-graph``).

At batch 64 an NB201 step is hundreds of tiny kernels and the GPU mostly waits for the host
to launch them.  :class:`GraphedStep` records one call of ``strategy.step`` (forward,
backward, gradient clipping, both optimizer steps) as a CUDA graph and replays it for every
batch: one launch per step.  A graph replays fixed kernels on fixed memory, hence:

* each batch is copied into static input tensors, and the :class:`StepOutput` returned holds
  the graph's static outputs: the next call overwrites them (the loop's meter copies them);
* Python floats the step reads are baked in: the graph is captured again whenever a learning
  rate differs from the captured one (once per epoch under the cosine schedule);
* optimizer state must live on the device (Adam with ``capturable=True``) and exist before
  capture: the first ``warmup`` calls are ordinary eager steps on a side stream;
* a batch of another shape than the captured ones takes the eager step (training loaders drop
  the last partial batch, so this should not happen);
* if a capture fails (an op that cannot be captured), a warning says why and every later step
  runs eagerly: a capture runs no kernel, so nothing is lost (``failure`` holds the reason);
  with ``on_failure="raise"`` (``sdarts-search --cuda-graph-strict``) it raises
  :class:`CudaGraphCaptureError` with the reason instead, so that a run meant to be timed
  from graphs stops at once rather than going on eagerly at several times the step time;
* DDP's gradient all-reduce (``strategy.grad_sync``) is not captured, and second-order DARTS
  (finite differences through a virtual step) has not been checked under capture: both are
  rejected.

Capture happens in the first calls, so load a checkpoint before the first step.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator, Optional, Tuple

import torch

from ..spaces.base import Supernet
from .strategies import Batch, SearchStrategy, SecondOrderBilevel, StepOutput


class CudaGraphCaptureError(RuntimeError):
    """A capture failed under ``GraphedStep(on_failure="raise")``; the message says why."""


ON_FAILURE = ("warn", "raise")


class CudaGraphs:
    """How :class:`GraphedStep` captures and replays: real CUDA graphs on ``device``.

    Tests on machines without a GPU pass an emulation with the same methods and attributes.
    """

    device_type = "cuda"
    # Kernels are recorded, not run: an optimizer that counts its steps on the host (Adam
    # without capturable=True) cannot be captured.
    needs_capturable = True

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._side: Optional[torch.cuda.Stream] = None

    def new_graph(self) -> torch.cuda.CUDAGraph:
        return torch.cuda.CUDAGraph()

    def capture(self, graph: torch.cuda.CUDAGraph, fn: Callable[[], StepOutput]) -> StepOutput:
        # thread_local: a data loader's pin-memory thread may call CUDA meanwhile (not into the graph).
        with torch.cuda.device(self.device), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            return fn()

    def replay(self, graph: torch.cuda.CUDAGraph) -> None:
        graph.replay()

    def release(self, graph: torch.cuda.CUDAGraph) -> None:
        graph.reset()

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        """Run the block on a side stream, after the current stream's work and before its next
        (torch's recipe for the eager warm-up that precedes a capture)."""
        with torch.cuda.device(self.device):
            if self._side is None:
                self._side = torch.cuda.Stream()
            current = torch.cuda.current_stream()
            self._side.wait_stream(current)
            with torch.cuda.stream(self._side):
                yield
            current.wait_stream(self._side)


class GraphedStep:
    """``strategy.step(model, batch_w, batch_alpha)``, replayed from a captured graph.

    Args:
        model: the supernet, on a CUDA device.  strategy: its :class:`SearchStrategy`, in a
            single process, with Adam-like optimizers built with ``capturable=True``.
        warmup: eager steps before the first capture (they create the optimizer state).
        backend: capture machinery (default :class:`CudaGraphs` on the model's device).
        on_failure: ``"warn"`` (default): a failed capture warns and every later step runs
            eagerly; ``"raise"``: it raises :class:`CudaGraphCaptureError` (nothing was run:
            the weights and optimizer state are those before the failed capture).

    ``captures`` counts the graphs recorded so far.
    """

    def __init__(self, model: Supernet, strategy: SearchStrategy, *, warmup: int = 3, backend=None,
                 on_failure: str = "warn"):
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
        device = next(model.parameters()).device
        backend = backend if backend is not None else CudaGraphs(device)
        if isinstance(strategy, SecondOrderBilevel):
            raise ValueError(f"strategy {strategy.name!r} cannot run from a CUDA graph (not checked under capture); "
                             "use bilevel, or drop --cuda-graph")
        if strategy.grad_sync is not None:
            raise ValueError("strategy.grad_sync is set (DDP): the gradient all-reduce is not captured in the CUDA graph; "
                             "run a single process")
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 (the optimizer state must exist before capture), got {warmup}")
        if backend.needs_capturable:
            for name in ("w_optimizer", "alpha_optimizer"):
                optimizer = getattr(strategy, name)
                if any("capturable" in g and not g["capturable"] for g in optimizer.param_groups):
                    raise ValueError(f"strategy.{name} ({type(optimizer).__name__}) must be built with capturable=True "
                                     f"to run from a CUDA graph: torch.optim.{type(optimizer).__name__}(..., capturable=True)")
        if device.type != backend.device_type:
            raise ValueError(f"model is on {device}: a CUDA graph needs it on a {backend.device_type} device")
        self.model = model
        self.strategy = strategy
        self.backend = backend
        self.on_failure = on_failure
        self.captures = 0
        self.failure: Optional[str] = None  # why capturing failed, if it did (then every step is eager)
        self._warmups_left = warmup
        self._graph = None
        self._lrs: Tuple[float, ...] = ()
        self._static: Optional[Tuple[Batch, Batch]] = None
        self._out: Optional[StepOutput] = None

    @property
    def static_inputs(self) -> Optional[Tuple[Batch, Batch]]:
        """(batch_w, batch_alpha) tensors the graph reads (one pair when alpha reuses w's batch)."""
        return self._static

    def __call__(self, batch_w: Batch, batch_alpha: Batch) -> StepOutput:
        if self.failure is not None:
            return self.strategy.step(self.model, batch_w, batch_alpha)
        if self._warmups_left > 0:
            self._warmups_left -= 1
            with self.backend.side_stream():
                return self.strategy.step(self.model, batch_w, batch_alpha)
        if self._static is None:
            self._static = self._new_static(batch_w, batch_alpha)
        elif not self._fits(batch_w, batch_alpha):
            return self.strategy.step(self.model, batch_w, batch_alpha)
        self._load(batch_w, batch_alpha)
        if (self._graph is None or self._lrs != self._current_lrs()) and not self._capture():
            return self.strategy.step(self.model, batch_w, batch_alpha)
        # Capture ran no kernel: this replay is the step of the batch just loaded.
        self.backend.replay(self._graph)
        return self._out

    # -- static inputs -----------------------------------------------------------------

    def _same_batch(self) -> bool:
        return self.strategy.alpha_source == "same"

    def _new_static(self, batch_w: Batch, batch_alpha: Batch) -> Tuple[Batch, Batch]:
        w = tuple(torch.empty_like(t) for t in batch_w)
        # "same": the step reads alpha's batch from w's buffers, copied once per call.
        return (w, w) if self._same_batch() else (w, tuple(torch.empty_like(t) for t in batch_alpha))

    def _pairs(self, batch_w: Batch, batch_alpha: Batch):
        batches = (batch_w,) if self._same_batch() else (batch_w, batch_alpha)
        return [(s, t) for static, batch in zip(self._static, batches) for s, t in zip(static, batch)]

    def _fits(self, batch_w: Batch, batch_alpha: Batch) -> bool:
        return all(s.shape == t.shape and s.dtype == t.dtype for s, t in self._pairs(batch_w, batch_alpha))

    def _load(self, batch_w: Batch, batch_alpha: Batch) -> None:
        for s, t in self._pairs(batch_w, batch_alpha):
            s.copy_(t, non_blocking=True)

    # -- the graph ---------------------------------------------------------------------

    def _current_lrs(self) -> Tuple[float, ...]:
        return tuple(g["lr"] for opt in (self.strategy.w_optimizer, self.strategy.alpha_optimizer) for g in opt.param_groups)

    def _capture(self) -> bool:
        """Record the step; False (and eager steps from now on) if the capture fails, or
        :class:`CudaGraphCaptureError` with ``on_failure="raise"``."""
        # Let go of the previous graph and of what points into its memory before recording anew.
        if self._graph is not None:
            self.backend.release(self._graph)
        self._graph = self._out = None
        for p in self.strategy.w_params + self.strategy.alpha_params:
            p.grad = None  # the graph's backward allocates them in its own pool; replays rewrite them
        graph = self.backend.new_graph()
        self._lrs = self._current_lrs()
        try:
            self._out = self.backend.capture(graph, lambda: self.strategy.step(self.model, *self._static))
        except Exception as err:  # an op that cannot be captured: the search goes on eagerly (or stops)
            # A capture runs no kernel, so weights and optimizer state are as before it.
            self.failure = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            self._out = None
            if self.on_failure == "raise":
                raise CudaGraphCaptureError(f"CUDA graph capture failed at capture {self.captures + 1} "
                                            f"({self.failure})") from err
            warnings.warn(f"CUDA graph capture failed; continuing with eager steps ({self.failure})", RuntimeWarning)
            return False
        self._graph = graph
        self.captures += 1
        return True
