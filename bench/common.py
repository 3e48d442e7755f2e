"""Shared helpers of the benchmark scripts: timing, memory, machine facts, tables, JSON.

Timing follows one rule on every device: warm up, then time each call on its own and report
the median.  On CUDA each call sits between two CUDA events (device time, no host clock);
on CPU ``time.perf_counter`` brackets it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from sdarts.diagnostics import saved_bytes  # noqa: F401  (re-exported for the bench scripts)
from sdarts.run.device import cpu_model, device_name  # noqa: F401  (device_name re-exported)

REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1e6
GB = 1e9


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[int], object], device: torch.device, *, warmup: int, repeat: int) -> List[float]:
    """Seconds taken by each of ``repeat`` calls ``fn(i)`` after ``warmup`` untimed ones.

    ``fn`` gets the call number, so that callers can rotate among input sets (timing the
    same small buffers again and again would measure the cache, not memory).
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for i in range(warmup):
        fn(i)
    synchronize(device)
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeat)]
        for i, (start, end) in enumerate(events):
            start.record()
            fn(warmup + i)
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in events]
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(warmup + i)
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: Sequence[float]) -> Dict[str, float]:
    """Median and spread (10th/90th percentile) in milliseconds."""
    ordered = sorted(times)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    return {"ms": statistics.median(ordered) * 1e3, "ms_p10": pct(0.1), "ms_p90": pct(0.9), "n": len(ordered)}


def copy_bandwidth(device: torch.device, nbytes: int, *, warmup: int = 3, repeat: int = 20) -> float:
    """Measured device copy bandwidth in GB/s: a large ``dst.copy_(src)``, bytes read + written."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    times = time_calls(lambda _: dst.copy_(src), device, warmup=warmup, repeat=repeat)
    return 2 * src.numel() * src.element_size() / statistics.median(times) / GB


def last_level_cache_bytes(device: torch.device) -> Optional[int]:
    """The GPU's L2, or the CPU's largest cache (from sysfs); None where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).L2_cache_size
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip()
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes) if sizes else None


# ----------------------------------------------------------------------------- memory


def peak_memory(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Peak device memory allocated by ``fn()`` above what was allocated before (CUDA only)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def _proc_status_bytes(field: str) -> Optional[int]:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes() -> Optional[int]:
    """This process's peak resident set size (VmHWM), or None where /proc is absent."""
    return _proc_status_bytes("VmHWM")


def rss_bytes() -> Optional[int]:
    """This process's resident set size now (VmRSS), or None where /proc is absent."""
    return _proc_status_bytes("VmRSS")


# ----------------------------------------------------------------------------- machine


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_info(device: torch.device) -> Dict[str, object]:
    """What the figures were measured on: hardware, software versions, date."""
    from sdarts.ops import backends

    info: Dict[str, object] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _triton_version(),
        "git_commit": _git_commit(),
        "backends": backends.describe(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / GB, 1)
        info["gpu_sms"] = props.multi_processor_count
        info["gpu_capability"] = f"{props.major}.{props.minor}"
    return info


def _triton_version() -> Optional[str]:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def set_threads(threads: Optional[int]) -> None:
    """``--threads``: CPU threads for torch (on a shared, busy machine 1 thread times more steadily)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def resolve_device(name: Optional[str]) -> torch.device:
    """``--device``: default cuda when present; asking for cuda without one is an error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return device


def engine_backends(device: torch.device) -> List[str]:
    """Backends worth timing on ``device``: the fused ones (not interpreted Triton on CPU), then reference."""
    from sdarts.ops import backends

    return [b for b in backends.available(device) if b != "reference" and not (b == "triton" and device.type == "cpu")] + ["reference"]


# ----------------------------------------------------------------------------- output


def fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")  # a '|' (NB201 cells have many) would split the cell


def markdown_table(rows: Sequence[Dict[str, object]], columns: Sequence[tuple]) -> str:
    """``columns``: (key, header[, digits]) triples; missing values print as '-'."""
    header = "| " + " | ".join(c[1] for c in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    lines = [header, rule]
    for row in rows:
        cells = [fmt(row.get(c[0]), c[2] if len(c) > 2 else 2) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def uncommitted_changes():
    """Tracked files that differ from the commit machine_info names (git status --porcelain)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                             timeout=10, cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [line[3:] for line in out.stdout.splitlines()] if out.returncode == 0 else None


def write_json(path: Optional[str], payload: Dict[str, object]) -> None:
    """Write ``payload`` atomically (scripts call this after every row, so a run cut short keeps its rows)."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(target)


def log(message: str) -> None:
    """Progress lines go to stderr, the tables to stdout."""
    print(message, file=sys.stderr, flush=True)
