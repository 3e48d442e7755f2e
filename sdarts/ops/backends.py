"""Which mixed-sum backends exist on this machine, and which one `auto` picks.

Backends share one contract (see ``reference.py``):
  reference  pure PyTorch; every device, every float dtype (float64 too); the oracle
  cpu        the C++ kernel in ``sdarts._C`` (CPU tensors)
  cuda       the CUDA kernel in ``sdarts._C`` (CUDA tensors)
  triton     the Triton kernels (CUDA tensors; CPU tensors under TRITON_INTERPRET=1)
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Dict, List, Optional

import torch

from ..kernels import INTERPRETED  # the package's __init__ only: it imports no Triton
from . import reference

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# Why a probe found nothing ("extension", "triton", "triton_edge" -> "ExcType: message"),
# so that a missing backend can be explained (describe(), the build-completeness tests).
_PROBE_ERRORS: Dict[str, str] = {}


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _probe_extension() -> Optional[ModuleType]:
    try:
        return importlib.import_module("sdarts._C")
    except ImportError as exc:
        _PROBE_ERRORS["extension"] = _error_text(exc)
        return None


def _probe_triton(module: str, key: str = "triton") -> Optional[ModuleType]:
    try:
        import triton  # noqa: F401

        return importlib.import_module(f"sdarts.kernels.{module}")
    except Exception as exc:  # triton missing or unusable on this machine: the kernels are simply absent
        _PROBE_ERRORS[key] = f"sdarts.kernels.{module}: {_error_text(exc)}"
        return None


# Probed once at import, so that torch.compile traces backend choice as constants.
_EXTENSION = _probe_extension()
_TRITON = _probe_triton("mixed_sum")
_TRITON_EDGE = _probe_triton("normalized_edge", "triton_edge") if _TRITON is not None else None
_TRITON_INTERPRETED = INTERPRETED  # read once, by sdarts.kernels


# The one-node training edge's statistics and backward tail: PyTorch ops ("torch") or four
# Triton kernels ("triton").  "auto" means this default, read from the environment once.
EDGE_KERNELS = ("auto", "torch", "triton")
DEFAULT_EDGE_KERNELS = "triton" if os.environ.get("SDARTS_TRITON_EDGE", "0") == "1" else "torch"


def resolve_edge_kernels(edge_kernels: str) -> str:
    """``"torch"`` or ``"triton"`` for an ``edge_kernels`` option; ValueError naming it when it is
    not one of EDGE_KERNELS, or asks for Triton kernels this machine does not have."""
    if edge_kernels not in EDGE_KERNELS:
        raise ValueError(f"edge_kernels must be one of {EDGE_KERNELS}, got {edge_kernels!r}")
    if edge_kernels == "auto":
        return DEFAULT_EDGE_KERNELS if _TRITON_EDGE is not None else "torch"
    if edge_kernels == "triton" and _TRITON_EDGE is None:
        why = _PROBE_ERRORS.get("triton_edge") or _PROBE_ERRORS.get("triton") or "Triton is not installed"
        raise ValueError(f"edge_kernels='triton' needs the Triton edge kernels (sdarts.kernels.normalized_edge): {why}")
    return edge_kernels


def _extension() -> Optional[ModuleType]:
    return _EXTENSION


def _triton_module() -> Optional[ModuleType]:
    return _TRITON


def triton_edge_module() -> Optional[ModuleType]:
    """``sdarts.kernels.normalized_edge`` (the folded edge's statistics and backward tail), or None."""
    return _TRITON_EDGE


def probe_errors() -> Dict[str, str]:
    """Why each absent backend module failed to load, by probe ("extension", "triton",
    "triton_edge"): the exception's type and message.  Empty when everything loaded."""
    return dict(_PROBE_ERRORS)


def triton_interpreted() -> bool:
    return _TRITON_INTERPRETED


def is_available(backend: str, device: torch.device) -> bool:
    """Whether ``backend`` can run on tensors living on ``device``."""
    if backend == "reference":
        return True
    if backend == "cpu":
        return device.type == "cpu" and _extension() is not None
    if backend == "cuda":
        ext = _extension()
        return device.type == "cuda" and ext is not None and bool(ext.with_cuda())
    if backend == "triton":
        if _triton_module() is None:
            return False
        return device.type == "cuda" or (device.type == "cpu" and triton_interpreted())
    return False


def available(device: torch.device | str) -> List[str]:
    device = torch.device(device)
    return [b for b in BACKENDS[1:] if is_available(b, device)]


def resolve(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """Turn ``auto`` into a concrete backend and check that an explicit one can run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if dtype not in KERNEL_DTYPES:
            return "reference"
        # Order measured by bench/mixed_op.py (see bench/results): the fused kernels
        # beat the reference everywhere they run.
        order = ("cuda", "triton") if device.type == "cuda" else ("cpu",)
        for candidate in order:
            if is_available(candidate, device):
                return candidate
        return "reference"
    if not is_available(backend, device):
        raise ValueError(
            f"backend={backend!r} is not available for {device.type} tensors here "
            f"(available: {available(device)})"
        )
    if backend != "reference" and dtype not in KERNEL_DTYPES:
        raise TypeError(f"backend={backend!r} supports float32, float16 and bfloat16 tensors, got {dtype}")
    return backend


def implementation(backend: str):
    """The object with ``mixed_forward`` / ``mixed_backward`` for a concrete backend."""
    if backend == "reference":
        return reference
    if backend == "triton":
        return _triton_module()
    ext = _extension()
    return _ExtensionAdapter(ext, backend)


class _ExtensionAdapter:
    """Presents ``sdarts._C``'s ``*_cpu`` / ``*_cuda`` functions under the contract's names."""

    def __init__(self, ext: ModuleType, suffix: str):
        self._forward = getattr(ext, f"mixed_forward_{suffix}")
        self._backward = getattr(ext, f"mixed_backward_{suffix}")

    def mixed_forward(self, *args):
        return self._forward(*args)

    def mixed_backward(self, *args):
        gb, gx, chan_dot, chan_gsum, dot_skip, dot_pool = self._backward(*args)
        return list(gb), gx, chan_dot, chan_gsum, dot_skip, dot_pool


def describe() -> Dict[str, object]:
    """What was built and what can run, for ``python -m sdarts`` and bug reports."""
    ext = _extension()
    return {
        "torch": torch.__version__,
        "extension": ext is not None,
        "extension_cuda": bool(ext is not None and ext.with_cuda()),
        "triton": _triton_module() is not None,
        "triton_interpreted": triton_interpreted(),
        # What edge_kernels="auto" (every default) uses in this process.
        "edge_kernels_default": resolve_edge_kernels("auto") + ("" if _TRITON_EDGE is None else
                                                                 " (SDARTS_TRITON_EDGE=1 at start makes it triton)"
                                                                 if DEFAULT_EDGE_KERNELS == "torch" else " (SDARTS_TRITON_EDGE=1)"),
        "cpu_backends": available("cpu"),
        "cuda_backends": available("cuda") if torch.cuda.is_available() else [],
        "probe_errors": probe_errors(),
    }

