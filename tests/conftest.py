"""Test-session setup.

Triton: one decision for the whole session, made here before anything imports triton
(torchvision does, and sdarts.ops.backends loads the kernels at import).  Where torch sees a
CUDA device the kernels run compiled, on CUDA tensors, everywhere (TRITON_INTERPRET=0, even
if the environment said otherwise: interpreted Triton never meets CUDA tensors in this
suite).  Elsewhere they run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1).

CI strictness: with CI=true in the environment, tests/test_build_complete.py fails (instead
of skipping) when a backend that the build should have produced is missing.  The session
header names every backend and, for a missing one, the error its probe caught.

Hypothesis: the ``sdarts`` profile derandomizes every property test (the same examples on
every run and machine; no example database), so that CI cannot pass or fail by luck.
"""

import os
import sys

# torch itself does not import triton; checked below so a reordering cannot go unnoticed.
import torch  # noqa: E402

_TOO_LATE = [m for m in ("triton", "sdarts.ops.backends", "sdarts.kernels") if m in sys.modules]
if _TOO_LATE:
    raise RuntimeError(f"tests/conftest.py must choose TRITON_INTERPRET before {_TOO_LATE} are imported")

HAS_CUDA = torch.cuda.is_available()
_REQUESTED_INTERPRET = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "0" if HAS_CUDA else "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

try:
    from hypothesis import settings
except ImportError:  # pragma: no cover - hypothesis is in the [test] extra
    pass
else:
    settings.register_profile("sdarts", derandomize=True, database=None)
    settings.load_profile("sdarts")


def ci_strict() -> bool:
    """True under CI (CI=true/1/yes): missing backends fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_report_header(config):
    from sdarts.ops import backends

    lines = [f"sdarts: CI strict={ci_strict()}; cuda={HAS_CUDA}; TRITON_INTERPRET={os.environ['TRITON_INTERPRET']}"
             + (f" (asked {_REQUESTED_INTERPRET!r}, overridden: torch sees {'a' if HAS_CUDA else 'no'} GPU)"
                if _REQUESTED_INTERPRET not in (None, os.environ["TRITON_INTERPRET"]) else ""),
             f"sdarts: cpu backends {backends.available('cpu')}"
             + (f", cuda backends {backends.available('cuda')}" if HAS_CUDA else "")]
    lines += [f"sdarts: {probe} probe failed: {error}" for probe, error in backends.probe_errors().items()]
    return lines


def shared_data_dir() -> Path:
    """Where the real data lies: $SDARTS_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("SDARTS_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def data_dir() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"real data not found at {d} (set SDARTS_DATA)")
    return d


# The tests use small tensors: intra-op threads only add contention on a loaded 2-core box.
torch.set_num_threads(1)
