"""The device a run computes on, from its ``--device`` setting (one rule for searches and retraining)."""

from __future__ import annotations

import os
import platform
from typing import Optional

import torch


class DeviceError(ValueError):
    """``--device`` names no device, or one this machine lacks (one line, naming the flag)."""


def check_device(name: Optional[str]) -> None:
    """DeviceError unless ``name`` is None, ``"auto"``, ``cpu``, or a CUDA device present here."""
    if name is None or name == "auto":
        return
    try:
        chosen = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"--device {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if chosen.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {name!r}: sdarts runs on cpu, cuda or cuda:N, not {chosen.type}")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: no CUDA device here (torch {torch.__version__}); use --device cpu")
        count = torch.cuda.device_count()
        if chosen.index is not None and chosen.index >= count:
            raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")


def pick_device(name: Optional[str], local_rank: int = 0) -> torch.device:
    """``name`` if given (``"cuda"`` meaning this process's GPU, ``cuda:<local_rank>``); for None
    or ``"auto"`` this process's GPU when there is one, else the CPU.  DeviceError for a device
    that is not here."""
    check_device(name)
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(name)
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", local_rank)
        check_device(str(chosen))
    return chosen


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The card's name, or the CPU's model and core count, for records that say where a run ran."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores)"
