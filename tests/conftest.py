"""Test-session setup.

Triton kernels run on the CPU only under its interpreter, which must be switched on before
anything imports triton (torchvision does).  On a machine with an NVIDIA driver we leave it
off, so the GPU check exercises the compiled kernels.
"""

import os
import shutil

if "TRITON_INTERPRET" not in os.environ and shutil.which("nvidia-smi") is None:
    os.environ["TRITON_INTERPRET"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


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
import torch  # noqa: E402

torch.set_num_threads(1)
