"""What a run needs whatever it runs (a search or a retraining): its directory with one
writer, atomic checkpoints that must be finite, the device it computes on, and the
multi-process set-up.  ``search/`` and ``train/`` both build on it; it imports neither."""

from .checkpoint import CheckpointError, first_nonfinite, load_checkpoint, save_checkpoint
from .device import DeviceError, check_device, pick_device
from .distributed import DistContext
from .run_dir import RunDir, RunDirBusy, RunDirError, read_metrics

__all__ = ["CheckpointError", "DeviceError", "DistContext", "RunDir", "RunDirBusy", "RunDirError", "check_device",
           "first_nonfinite", "load_checkpoint", "pick_device", "read_metrics", "save_checkpoint"]
